"""Training a KL autoencoder (SD's AutoencoderKL) with LDM's objective (paper eq. 4; the weights of eq. 9, §5.1): the
base of the image autoencoder (:mod:`vidrd_jax.tasks.autoencoder`) and the temporal decoder
(:mod:`vidrd_jax.tasks.vae_temporal`), which say which parameters train and how many frames the decoder sees at once.

Each clip is encoded frame by frame (a posterior sample, as LDM's autoencoder training), decoded
``decode_frames(video)`` frames at a time and scored with::

    L = α_rec·L_rec(x, D(E(x))) + α_reg·L_reg(x; E, D) + α_disc·λ·L_disc(D(E(x)))          (eq. 9)

* ``L_rec`` = mean |x − x̂| (``loss.pixel_loss = "l2"``: mean squared error) + ``perceptual_weight``·LPIPS(x, x̂)
  (per frame, when ``loss.lpips_dir`` is set). ``loss.saturation_weight`` = s > 0 weights each pixel's error by
  ``1 + s·sat(x)``, sat = (max − min over RGB) / 2 ∈ [0, 1] of the target: small coloured objects on gray
  backgrounds (the built-in clips) keep their hue, which the plain mean leaves to the last of a short budget.
  LDM sums the pixel term over pixels; the mean only rescales L_rec, which the adaptive weight λ compensates.
* ``L_reg`` = KL(q(z|x) ‖ N(0, I)), summed over latent elements and averaged over frames (LDM's convention). With
  the encoder frozen it is a constant: it is logged, it has no gradient.
* ``L_disc`` = −E[D(x̂)] (hinge generator term) with D the 3-D patch discriminator
  (:mod:`vidrd_jax.models.discriminator`), trained at the same step on
  ``½(E[relu(1 − D(x))] + E[relu(1 + D(x̂))])``.
* λ is LDM's adaptive weight ``‖∇_W L_nll‖ / (‖∇_W L_g‖ + 1e-4)`` clipped to [0, ``max_adaptive_weight``],
  where W is the decoder's last layer (``decoder/conv_out/kernel``); both gradients are measured
  (:mod:`vidrd_jax.tasks.autoencoder_losses`) exactly as LDM measures them. Both adversarial terms are switched on
  at ``loss.disc_start``.
* α_rec, α_reg, α_disc = ``loss.rec_weight`` (1), ``loss.reg_weight`` (1e-5), ``loss.disc_weight`` (0.5), §5.1.

One trainer step updates both players (labels ``generator`` and ``discriminator``, each with its own optimizer,
both optimizer states in the train state and its checkpoints): the generator terms see the discriminator through
``stop_gradient`` and the discriminator sees ``stop_gradient(x̂)``, so the summed loss gives each player its own
gradient. The gradients of L_rec and L_disc w.r.t. x̂ are computed once and reused both for λ and for the decoder
update (a first-order surrogate ``Σ g·(x̂ − sg(x̂))``, whose value is 0 and whose gradient is ``g``).

Evaluation (:meth:`KLAutoencoderTask.evaluate`, also run by the periodic sample hook): PSNR / SSIM per frame and
temporal flicker (:mod:`vidrd_jax.video_metrics`) of the image decoder (``num_frames=1``: the decoder *before*
temporal fine-tuning, since fresh Temp-Convs are the identity) and of the temporal decoder, on fixed clips of
``config.data`` (read through :mod:`vidrd_jax.data_interface`), decoding the posterior mean and a per-frame
posterior sample.
"""
from __future__ import annotations

import abc
import functools
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec

from vidrd_jax import checkpoints, data_interface, train_state, video_metrics
from vidrd_jax.models import factory
from vidrd_jax.models.discriminator import (DiscriminatorConfig, PatchDiscriminator3D, clip_accuracy,
                                            generator_loss, hinge_d_loss)
from vidrd_jax.models.lpips import LPIPS, abstract_lpips_params, load_lpips_params
from vidrd_jax.models.vae import VAEConfig
from vidrd_jax.pipeline import pixels_to_uint8
from vidrd_jax.tasks import Params, Task
from vidrd_jax.tasks.autoencoder_losses import adaptive_weight, conv_kernel_grads, kl_divergence

PRESETS = ("tiny", "sd21")
GENERATOR, DISCRIMINATOR = "generator", "discriminator"
LAST_LAYER = ("decoder", "conv_out")  # the decoder's last layer (module path inside AutoencoderKL)


def discriminator_optimizer_defaults() -> ml_collections.ConfigDict:
    """LDM's discriminator optimizer: Adam with betas (0.5, 0.9), constant rate, no decay."""
    return ml_collections.ConfigDict(dict(
        learning_rate=1e-4, schedule="constant", warmup_steps=0, end_lr_factor=1.0, b1=0.5, b2=0.9, eps=1e-8,
        weight_decay=0.0, max_grad_norm=0.0))


def _vae_config(base: Mapping[str, Any] | None, preset: str, overrides: ml_collections.ConfigDict) -> VAEConfig:
    fields = dict(base["vae"]) if base is not None else getattr(VAEConfig, preset)().to_dict()
    fields.update({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.to_dict().items()})
    try:
        return VAEConfig.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.model.vae: {e}") from e


def _disc_config(overrides: ml_collections.ConfigDict) -> DiscriminatorConfig:
    try:
        return DiscriminatorConfig.from_dict(overrides.to_dict())
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.model.discriminator: {e}") from e


class KLAutoencoderTask(Task):
    """Trains (parts of) the KL autoencoder with eq. 9 against a 3-D patch discriminator. A subclass sets what trains
    (``trainable_prefix``, the default ``trainable_regex``), the clip length it needs (``min_frames``), whether the
    VAE must have its temporal decoder, and :meth:`decode_frames`."""

    min_frames: int  # frames per training clip
    trainable_prefix: str  # config.trainable_regex may select parameters under this prefix only
    default_trainable_regex: str  # config.trainable_regex's default
    needs_temporal_decoder: bool  # the task trains the decoder's Temp-Convs

    @classmethod
    def config_defaults(cls) -> ml_collections.ConfigDict:
        """``model``, ``loss``, ``trainable_regex``, ``discriminator_optimizer``, ``sample`` (eval + previews).

        ``config.optimizer`` (the trainer's) is the generator's optimizer.
        """
        c = ml_collections.ConfigDict()
        c.model = ml_collections.ConfigDict(dict(
            init_from="",  # inference checkpoint dir whose "vae" part is fine-tuned; "" = fresh init of `preset`
            preset="tiny",  # tiny | sd21, used when init_from is ""
            # params absent from init_from that keep their fresh init: new Temp-Convs, the discriminator, LPIPS
            allow_missing=r"temp_convs_|^discriminator/|^lpips/",
            export_into="",  # inference checkpoint whose other models (unet, text encoder) export() keeps;
            # "" = init_from's
            vae=ml_collections.ConfigDict(dict(dtype="float32")),  # VAEConfig overrides
            discriminator=ml_collections.ConfigDict(DiscriminatorConfig().to_dict()),
        ))
        c.loss = ml_collections.ConfigDict(dict(
            rec_weight=1.0,  # α_rec (§5.1)
            reg_weight=1e-5,  # α_reg (§5.1)
            disc_weight=0.5,  # α_disc (§5.1); 0 = no discriminator (no parameters, no computation)
            pixel_loss="l1",  # "l1" (LDM) | "l2" (mean squared error: faster to learn for a small model from scratch)
            saturation_weight=0.0,  # s: pixel errors weighted by 1 + s·saturation of the target (0 = LDM's mean)
            perceptual_weight=1.0,  # LPIPS weight inside L_rec (LDM: 1.0); used when lpips_dir is set
            lpips_dir="",  # LPIPS weights folder (vidrd_jax.models.lpips); "" = L1 only
            disc_start=0,  # step from which L_disc and the discriminator loss count (LDM trains D late)
            adaptive_weight=True,  # LDM's λ; False: λ = 1
            max_adaptive_weight=1e4,
            sample_posterior=True,  # decode z ~ q(z|x) (LDM) instead of the posterior mean
        ))
        c.trainable_regex = cls.default_trainable_regex
        c.discriminator_optimizer = discriminator_optimizer_defaults()
        c.sample = ml_collections.ConfigDict(dict(
            every_steps=0,  # 0 = off; evaluation metrics are logged and previews written at these steps
            batch_size=8,  # clips per evaluation batch
            num_batches=1,  # evaluation batches (fixed clips of config.data, drawn with `seed`)
            seed=1234,
            split="",  # evaluation split of config.data (data_pipelines: built-in shapes' "heldout" = unseen combos)
            num_previews=4,  # clips written as [input | image decoder | temporal decoder] previews
            fps=8.0))
        return c

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        m, loss = config.model, config.loss
        if not m.init_from and m.preset not in PRESETS:
            raise ValueError(f"config.model.preset must be one of {PRESETS} when init_from is empty, got {m.preset!r}")
        for field in ("init_from", "export_into"):
            if m[field]:
                try:
                    base = checkpoints.load_model_config(m[field])
                except FileNotFoundError as e:
                    raise ValueError(f"config.model.{field}: {e}") from e
                if "vae" not in base:
                    raise ValueError(f"config.model.{field}={m[field]!r} has no 'vae' model config")
        for field, pattern in (("trainable_regex", config.trainable_regex), ("model.allow_missing", m.allow_missing)):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"config.{field}: invalid regex {pattern!r} ({e})") from e
        for name in ("rec_weight", "reg_weight", "disc_weight", "perceptual_weight", "saturation_weight"):
            if not loss[name] >= 0:
                raise ValueError(f"config.loss.{name} must be >= 0, got {loss[name]!r}")
        if loss.pixel_loss not in ("l1", "l2"):
            raise ValueError(f"config.loss.pixel_loss must be 'l1' or 'l2', got {loss.pixel_loss!r}")
        if not loss.max_adaptive_weight > 0:
            raise ValueError(f"config.loss.max_adaptive_weight must be > 0, got {loss.max_adaptive_weight!r}")
        if not isinstance(loss.disc_start, int) or loss.disc_start < 0:
            raise ValueError(f"config.loss.disc_start must be an int >= 0, got {loss.disc_start!r}")
        if loss.lpips_dir:
            from vidrd_jax.models.lpips import lpips_files

            try:
                lpips_files(loss.lpips_dir)
            except FileNotFoundError as e:
                raise ValueError(f"config.loss.lpips_dir: {e}") from e
        disc = _disc_config(m.discriminator)
        data = data_interface.pipeline()
        height, width = data.frame_size(config.data.resolution)
        try:
            if loss.disc_weight > 0:
                disc.check_input(height, width)
        except ValueError as e:
            raise ValueError(f"config.model.{e} (config.data.resolution={config.data.resolution})") from e
        if config.data.num_frames < cls.min_frames:
            raise ValueError(f"config.data.num_frames must be >= {cls.min_frames} for task {config.task!r}, "
                             f"got {config.data.num_frames}")
        s = config.sample
        for name in ("batch_size", "num_batches", "num_previews"):
            if not isinstance(s[name], int) or s[name] < 1:
                raise ValueError(f"config.sample.{name} must be a positive int, got {s[name]!r}")
        splits = ("", *data.splits)
        if s.split not in splits:
            raise ValueError(f"config.sample.split must be {', '.join(map(repr, splits[:-1]))} or {splits[-1]!r}, "
                             f"got {s.split!r}")
        if s.every_steps < 0 or s.fps <= 0:
            raise ValueError(f"config.sample.every_steps must be >= 0 and fps > 0, got {s.every_steps}, {s.fps}")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        self.export_base = m.export_into or m.init_from
        self.vae_config = _vae_config(checkpoints.load_model_config(m.init_from) if m.init_from else None, m.preset,
                                      m.vae)
        if self.needs_temporal_decoder and not self.vae_config.use_temporal_decoder:
            raise ValueError("config.model.vae.use_temporal_decoder must be True: the task trains the Temp-Convs")
        self.disc_config = _disc_config(m.discriminator)
        self.vae = factory.build("vae", self.vae_config)
        self.discriminator = PatchDiscriminator3D(self.disc_config)
        self.adversarial = config.loss.disc_weight > 0  # α_disc = 0: no discriminator parameters or computation
        self.lpips_params = load_lpips_params(config.loss.lpips_dir) if config.loss.lpips_dir else None
        self.vae_factor = factory.downsampling_factor(self.vae_config)

    # --- parameters -------------------------------------------------------------------------------------------
    def _disc_init(self, rng: jax.Array) -> Params:
        size = 3 * 2 ** self.disc_config.num_layers  # the smallest input leaving one logit (shapes do not depend on it)
        return self.discriminator.init(rng, jnp.zeros((1, 2, size, size, self.disc_config.in_channels)))["params"]

    def abstract_params(self) -> tuple[Params, Params]:
        shapes = {"vae": factory.abstract_params("vae", self.vae_config)}
        specs = {"vae": factory.logical_specs("vae", self.vae_config)}
        if self.adversarial:
            boxed_disc = jax.eval_shape(self._disc_init, jax.random.key(0))
            shapes["discriminator"] = nn.meta.unbox(boxed_disc)
            specs["discriminator"] = nn.get_partition_spec(boxed_disc)
        if self.lpips_params is not None:
            shapes["lpips"] = abstract_lpips_params()
            specs["lpips"] = jax.tree.map(lambda _: PartitionSpec(), shapes["lpips"])
        return shapes, specs

    def init_params(self, rng: jax.Array) -> Params:
        vae_rng, disc_rng = jax.random.split(rng)
        cfg = self.vae_config
        pixels = jnp.zeros((2, self.vae_factor, self.vae_factor, cfg.in_channels), jnp.float32)
        params = {"vae": nn.meta.unbox(self.vae.init(vae_rng, pixels, num_frames=2)["params"])}
        if self.adversarial:
            params["discriminator"] = nn.meta.unbox(self._disc_init(disc_rng))
        if self.lpips_params is not None:
            params["lpips"] = jax.tree.map(jnp.asarray, self.lpips_params)
        return params

    def pretrained(self) -> tuple[str, str] | None:
        m = self.config.model
        return (m.init_from, m.allow_missing) if m.init_from else None

    def param_labels(self, shapes: Params) -> dict[str, str]:
        labels = train_state.regex_labels(shapes, {GENERATOR: self.config.trainable_regex,
                                                   DISCRIMINATOR: r"^discriminator/"})
        generator = [p for p, label in labels.items() if label == GENERATOR]
        if not generator:
            raise ValueError(f"config.trainable_regex={self.config.trainable_regex!r} matches no parameter path")
        outside = [p for p in generator if not p.startswith(self.trainable_prefix)]
        if outside:
            raise ValueError(f"config.trainable_regex={self.config.trainable_regex!r} must select parameters under "
                             f"{self.trainable_prefix!r} only; it also matches {outside[:3]}")
        return labels

    def optimizer_groups(self) -> dict[str, Mapping[str, Any]]:
        groups = {GENERATOR: self.config.optimizer}
        if self.adversarial:
            groups[DISCRIMINATOR] = self.config.discriminator_optimizer
        return groups

    # --- data ------------------------------------------------------------------------------------------------
    def host_batch(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if "video" not in batch:
            raise KeyError(f"data batch has no 'video' entry (keys: {sorted(batch)})")
        video = np.asarray(batch["video"], np.float32)
        if video.ndim != 5 or video.shape[-1] != 3 or video.shape[1] < self.min_frames:
            raise ValueError(f"batch['video'] must be [B, F>={self.min_frames}, H, W, 3], got shape {video.shape}")
        if video.shape[2] % self.vae_factor or video.shape[3] % self.vae_factor:
            raise ValueError(f"batch['video'] height/width {video.shape[2:4]} must be multiples of the VAE's "
                             f"downsampling factor {self.vae_factor}")
        return {"video": video}

    # --- step ------------------------------------------------------------------------------------------------
    def encode(self, params: Params, video: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Frozen E on every frame: posterior ``(mean, logvar)`` ``[B·F, h, w, C]``."""
        frames = video.reshape((-1,) + video.shape[2:])
        return self.vae.apply({"params": params["vae"]}, frames, method="encode")

    def decode(self, params: Params, z: jax.Array, num_frames: int, deterministic: bool = True,
               rng: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """D on latents ``[B·F, h, w, C]`` -> ``(pixels [B·F, H, W, 3], input of the last layer [B·F, H, W, C0])``."""
        captured = {}

        def capture_last_layer_input(next_fun, args, kwargs, context):
            if context.method_name == "__call__" and context.module.path == LAST_LAYER:
                captured["h"] = args[0]
            return next_fun(*args, **kwargs)

        rngs = {"dropout": rng} if rng is not None else {}
        with nn.intercept_methods(capture_last_layer_input):
            recon = self.vae.apply({"params": params["vae"]}, z, num_frames=num_frames, deterministic=deterministic,
                                   method="decode", rngs=rngs)
        if "h" not in captured:
            raise RuntimeError(f"the VAE decoder has no last layer at {'/'.join(LAST_LAYER)}")
        return recon, captured["h"]

    def preprocess(self, params: Params, batch: Mapping[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]:
        """The clips: E runs inside :meth:`loss` (autodiff skips it while the encoder is frozen)."""
        return {"video": batch["video"]}

    @abc.abstractmethod
    def decode_frames(self, video: jax.Array) -> int:
        """Frames the decoder sees together when decoding the clips ``video`` ``[B, F, H, W, 3]``."""

    def reconstruction_loss(self, params: Params, video: jax.Array, recon: jax.Array
                            ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """α_rec·(mean w·|x − x̂| (or w·(x − x̂)², ``loss.pixel_loss``) + perceptual_weight·mean LPIPS) over clips
        ``[B, F, H, W, 3]`` in [-1, 1], w = 1 + saturation_weight·(max − min of x over RGB) / 2."""
        loss = self.config.loss
        error = video - recon
        error = jnp.abs(error) if loss.pixel_loss == "l1" else jnp.square(error)
        if loss.saturation_weight:
            error = error * (1.0 + loss.saturation_weight * 0.5 * (video.max(-1) - video.min(-1)))[..., None]
        rec = jnp.mean(error)
        metrics = {loss.pixel_loss: rec}
        if self.lpips_params is not None:
            flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
            perceptual = jnp.mean(LPIPS().apply({"params": params["lpips"]}, flat(video), flat(recon)))
            rec = rec + loss.perceptual_weight * perceptual
            metrics["lpips"] = perceptual
        return loss.rec_weight * rec, metrics

    def loss(self, params: Params, inputs: Mapping[str, jax.Array], rng: jax.Array, step: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Eq. 9 for the decoder plus the hinge loss of the discriminator (module docstring).

        ``step`` (the train step) switches both adversarial terms on at ``loss.disc_start``.
        """
        cfg = self.config.loss
        disc_factor = (step >= cfg.disc_start).astype(jnp.float32)
        sg = jax.lax.stop_gradient
        video = inputs["video"]
        posterior_rng, dropout_rng = jax.random.split(rng)
        mean, logvar = self.encode(params, video)
        mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
        z = mean
        if cfg.sample_posterior:
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(posterior_rng, mean.shape, jnp.float32)
        recon_flat, last_input = self.decode(params, z, self.decode_frames(video), deterministic=False,
                                             rng=dropout_rng)
        recon = recon_flat.reshape(video.shape)
        recon_sg = sg(recon)

        # Gradients of both generator terms w.r.t. x̂, computed once (for λ and for the decoder update).
        (nll, rec_metrics), grad_nll = jax.value_and_grad(
            lambda r: self.reconstruction_loss(params, video, r), has_aux=True)(recon_sg)
        kl = jnp.mean(kl_divergence(mean, logvar))
        if not self.adversarial:  # loss.disc_weight = 0: L_rec + α_reg·L_reg only, no discriminator at all
            surrogate = jnp.sum(sg(grad_nll) * (recon - recon_sg))
            generator_total = nll + cfg.reg_weight * kl
            return generator_total + surrogate, {**rec_metrics, "rec_loss": nll, "kl": kl,
                                                 "generator_loss": generator_total}
        disc_frozen = sg(params["discriminator"])
        g_loss, grad_g = jax.value_and_grad(
            lambda r: generator_loss(self.discriminator.apply({"params": disc_frozen}, r)))(recon_sg)

        if cfg.adaptive_weight:
            kernel = params["vae"][LAST_LAYER[0]][LAST_LAYER[1]]["kernel"]
            w_nll, w_g = conv_kernel_grads(sg(last_input), sg(kernel), grad_nll.reshape(recon_flat.shape),
                                           grad_g.reshape(recon_flat.shape))
            d_weight = cfg.disc_weight * adaptive_weight(w_nll, w_g, cfg.max_adaptive_weight)
        else:
            d_weight = jnp.asarray(cfg.disc_weight, jnp.float32)
        g_scale = sg(d_weight * disc_factor)

        # Decoder: value of eq. 9, gradient through x̂ = grad_nll + λ·α_disc·grad_g (first-order surrogate).
        surrogate = jnp.sum(sg(grad_nll + g_scale * grad_g) * (recon - recon_sg))
        generator_total = nll + cfg.reg_weight * kl + g_scale * g_loss

        # Two calls rather than one on [real; fake]: concatenating along the sharded batch axis would reshuffle it.
        logits_real = self.discriminator.apply({"params": params["discriminator"]}, video)
        logits_fake = self.discriminator.apply({"params": params["discriminator"]}, recon_sg)
        d_loss = hinge_d_loss(logits_real, logits_fake)

        total = generator_total + surrogate + disc_factor * d_loss
        metrics = {**rec_metrics, "rec_loss": nll, "kl": kl, "g_loss": g_loss, "d_weight": d_weight,
                   "disc_factor": disc_factor, "generator_loss": generator_total, "d_loss": d_loss,
                   "logits_real": jnp.mean(logits_real), "logits_fake": jnp.mean(logits_fake),
                   "disc_accuracy": clip_accuracy(logits_real, logits_fake)}
        return total, metrics

    # --- evaluation / outputs -----------------------------------------------------------------------------------
    @functools.cached_property
    def _eval_fn(self):
        def run(params, video, rng):
            mean, logvar = self.encode(params, video)
            sampled = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
            f = video.shape[1]
            metrics, previews = {}, [pixels_to_uint8(video)]
            for latents, z in (("mean", mean), ("sample", sampled)):
                for decoder, num_frames in (("image_decoder", 1), ("temporal_decoder", f)):
                    recon = self.vae.apply({"params": params["vae"]}, z, num_frames=num_frames, method="decode")
                    recon = recon.reshape(video.shape)
                    for k, v in video_metrics.reconstruction_metrics(video, recon).items():
                        metrics[f"{latents}/{decoder}/{k}"] = v
                    if latents == "mean":
                        previews.append(pixels_to_uint8(recon))
            return metrics, jnp.concatenate(previews, axis=3)

        return jax.jit(run)

    @functools.cached_property
    def eval_clips(self) -> list[np.ndarray]:
        """The fixed evaluation clips: ``sample.num_batches`` batches of ``config.data`` drawn with ``sample.seed``."""
        pipeline = data_interface.pipeline()
        s = self.config.sample
        data = pipeline.split_config(self.config.data, s.split) if s.split else self.config.data
        iterator = pipeline.make_iterator(data, batch_size=s.batch_size, seed=s.seed)
        return [self.host_batch(next(iterator))["video"] for _ in range(s.num_batches)]

    def evaluate(self, params: Params, clips: list[np.ndarray] | None = None) -> dict[str, float]:
        """PSNR / SSIM / flicker of the image decoder (before fine-tuning) and the temporal decoder (after).

        Both decode the posterior mean (``mean/…``: plain reconstruction) and a posterior sample drawn independently
        per frame (``sample/…``: latents that disagree slightly from frame to frame, as generated ones do; fixed
        noise from ``sample.seed``). Keys ``{mean,sample}/{image_decoder,temporal_decoder,delta}/{psnr,ssim,flicker,
        flicker_interior}`` (delta = temporal − image; see ``video_metrics.reconstruction_metrics``). ``clips``
        default to :attr:`eval_clips`.
        """
        rng = jax.random.key(self.config.sample.seed)
        results = [jax.device_get(self._eval_fn(params, jnp.asarray(c), jax.random.fold_in(rng, i))[0])
                   for i, c in enumerate(clips or self.eval_clips)]
        out = {k: float(np.mean([r[k] for r in results])) for k in results[0]}
        for key in [k for k in out if "/image_decoder/" in k]:
            temporal = out[key.replace("image_decoder", "temporal_decoder")]
            out[key.replace("image_decoder", "delta")] = temporal - out[key]
        return out

    def sample(self, params: Params, rng: jax.Array) -> jax.Array:
        """``[input | image decoder | temporal decoder]`` previews of the first evaluation clips."""
        rng = jax.random.key(self.config.sample.seed)
        _, previews = self._eval_fn(params, jnp.asarray(self.eval_clips[0]), rng)
        return previews[: self.config.sample.num_previews]

    def export(self, params: Params, dtype: str) -> tuple[Params, dict[str, Any]]:
        """The fine-tuned ``vae`` (standard VAE tree, as ``vae.py``) over the other models of ``model.export_into``
        (default ``model.init_from``), if any.

        Returns ``(params, model_config)`` for ``checkpoints.save_inference_checkpoint``: that checkpoint with its
        ``vae`` part replaced (the other models as stored), or a VAE-only checkpoint. Only the VAE is cast to ``dtype``.
        """
        target = jnp.dtype(dtype)
        vae = jax.tree.map(lambda x: np.asarray(x).astype(target) if jnp.issubdtype(x.dtype, jnp.floating)
                           else np.asarray(x), params["vae"])
        vae_config = {**self.vae_config.to_dict(), "dtype": dtype, "param_dtype": dtype, "remat_policy": "none"}
        source = f"vidrd_jax.train:{self.config.task}"
        if not self.export_base:
            return {"vae": vae}, {"vae": vae_config, "source": source}
        base_params, base_config = checkpoints.load_inference_checkpoint(self.export_base)
        return {**base_params, "vae": vae}, {**base_config, "vae": vae_config, "source": source}
