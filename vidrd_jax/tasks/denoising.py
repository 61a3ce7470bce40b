"""VidRD's UNet training task (paper §3.1 eq. 3, §4.1, §5.1).

Each clip is encoded frame by frame with the frozen VAE (a posterior sample, times ``scaling_factor``), the caption
with the frozen CLIP text encoder; a timestep ``t ~ U{0, T-1}`` (or logit-normal: ``config.timestep_logit_normal``)
and noise ``y ~ N(0, I)`` give ``z_t`` (eq. 2) and the UNet is regressed onto the target of eq. 3 (the noise for
``epsilon`` prediction, the velocity for ``v_prediction``)::

    L = E ||y - f_theta(z_t; c, t)||^2

Trainable parameters are picked by ``config.trainable_regex`` over flat paths ``unet/…/kernel``; the paper's set
(§4.1, §5.1: the new temporal layers plus the transformer blocks of the spatial layers) is the default,
:data:`PAPER_TRAINABLE_REGEX` (565.3 M of the 1.18 B UNet parameters at SD-2.1 size, 316.5 M of them temporal).
Caption dropout for classifier-free guidance happens in the data pipeline (empty captions).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vidrd_jax import checkpoints, train_state
from vidrd_jax.diffusion.ddim import add_noise, min_snr_weight, sample_training_timesteps, training_target
from vidrd_jax.diffusion.guidance import ClassifierFreeGuidance
from vidrd_jax.diffusion.schedule import NoiseSchedule
from vidrd_jax.diffusion.solvers import SamplerConfig, ddim_sample
from vidrd_jax.models import factory
from vidrd_jax.models.tokenizer import load_tokenizer
from vidrd_jax.pipeline import UNetDenoiser, decode_latents
from vidrd_jax.tasks import Params, Task

MODELS = ("unet", "vae", "text_encoder")
PRESETS = ("tiny", "sd21")
# Temp-Conv layers + every transformer block of the spatial attentions (which holds Temp-Attn and temp_norm too);
# proj_in / proj_out / norm of the Transformer3DModel wrappers and all ResNets stay frozen.
PAPER_TRAINABLE_REGEX = r"^unet/.*(temp_convs_\d+|attentions_\d+/transformer_blocks_\d+)/"
LABEL = "unet"


def _model_config(kind: str, base: Mapping[str, Any] | None, preset: str, overrides: ml_collections.ConfigDict):
    """A model config: the checkpoint's (``base``) or, for a model it lacks, the ``preset`` 's; ``overrides`` applied.
    """
    cls = factory.CONFIG_CLASSES[kind]
    fields = dict(base[kind]) if base is not None and kind in base else getattr(cls, preset)().to_dict()
    fields["param_dtype"] = "float32"  # fp32 master weights (a bf16 export used as init_from is cast up)
    fields.update({k: list(v) if isinstance(v, tuple) else v for k, v in overrides.to_dict().items()})
    try:
        return cls.from_dict(fields)
    except (TypeError, ValueError) as e:
        raise ValueError(f"config.model.{kind}: {e}") from e


def _training_schedule(base: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> NoiseSchedule:
    """The init checkpoint's scheduler (SD-2.1-base's without one) with ``config.model.scheduler``'s fields on top."""
    schedule = NoiseSchedule.from_diffusers(base["scheduler"]) if base and "scheduler" in base \
        else NoiseSchedule.sd21_base()
    return NoiseSchedule.from_diffusers({**schedule.to_dict(), **overrides}) if overrides else schedule


class DenoisingTask(Task):
    """Trains the UNet3D with eq. 3 on frozen-VAE latents and frozen-CLIP text embeddings."""

    @classmethod
    def config_defaults(cls) -> ml_collections.ConfigDict:
        """``model`` (where parameters come from, per-model config overrides), ``trainable_regex``, ``sample``.

        ``model.unet`` / ``vae`` / ``text_encoder`` / ``scheduler`` hold fields of ``UNet3DConfig`` / ``VAEConfig`` /
        ``CLIPTextConfig`` / ``NoiseSchedule`` that override the preset's or the ``init_from`` checkpoint's values;
        the runtime knobs are declared here, config files may declare more (a locked config rejects new keys).
        """
        c = ml_collections.ConfigDict()
        c.model = ml_collections.ConfigDict(dict(
            init_from="",  # inference checkpoint dir (e.g. converted SD-2.1); "" = fresh init of `preset`
            preset="tiny",  # tiny | sd21: models init_from lacks (all when it is "") are fresh inits of the preset
            allow_missing="temp_",  # regex of params absent from init_from that keep their fresh init
            tokenizer="",  # tokenizer folder; "" = init_from's, else the built-in CLIP BPE
            unet=ml_collections.ConfigDict(dict(dtype="float32", remat_policy="none", attention_impl="plain")),
            vae=ml_collections.ConfigDict(dict(dtype="float32")),
            text_encoder=ml_collections.ConfigDict(dict(dtype="float32")),
            scheduler=ml_collections.ConfigDict(),
        ))
        c.trainable_regex = PAPER_TRAINABLE_REGEX
        # ((regex, factor), ...): trainable parameters whose path matches a regex (first match) train at
        # factor x config.optimizer.learning_rate (big_vision's lr_mults), e.g. (("^text_encoder/", 0.1),)
        c.lr_mults = ()
        # (m, s): logit-normal training timesteps (diffusion.ddim.sample_training_timesteps); () = uniform (eq. 3)
        c.timestep_logit_normal = ()
        c.snr_gamma = 0.0  # > 0: Min-SNR-γ weighting of eq. 3 (diffusion.ddim.min_snr_weight); 0 = plain eq. 3
        c.sample = ml_collections.ConfigDict(dict(
            every_steps=0,  # 0 = off
            prompts=("a corgi running on the beach, sunset",), negative_prompt="", num_frames=8, height=256,
            width=256, num_steps=25, guidance_scale=7.5, fps=8.0))
        return c

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        m = config.model
        if m.preset not in PRESETS:
            raise ValueError(f"config.model.preset must be one of {PRESETS}, got {m.preset!r}")
        # raises naming the directory if it is not a checkpoint
        base = checkpoints.load_model_config(m.init_from) if m.init_from else {}
        for i, entry in enumerate(config.lr_mults):
            if len(entry) != 2 or not isinstance(entry[1], (int, float)) or not entry[1] > 0:
                raise ValueError(f"config.lr_mults[{i}] must be (regex, factor > 0), got {entry!r}")
        patterns = [("trainable_regex", config.trainable_regex), ("model.allow_missing", m.allow_missing)]
        patterns += [(f"lr_mults[{i}]", rx) for i, (rx, _) in enumerate(config.lr_mults)]
        for field, pattern in patterns:
            try:
                re.compile(pattern)
            except (re.error, TypeError) as e:
                raise ValueError(f"config.{field}: invalid regex {pattern!r} ({e})") from e
        ln = config.timestep_logit_normal
        if ln and (len(ln) != 2 or not all(isinstance(x, (int, float)) for x in ln) or not ln[1] > 0):
            raise ValueError(f"config.timestep_logit_normal must be () (uniform) or (mean, std > 0), got {ln!r}")
        if not config.snr_gamma >= 0:
            raise ValueError(f"config.snr_gamma must be >= 0 (0 = unweighted eq. 3), got {config.snr_gamma!r}")
        unknown = set(m.scheduler.keys()) - {f.name for f in dataclasses.fields(NoiseSchedule)}
        if unknown:
            raise ValueError(f"config.model.scheduler: unknown fields {sorted(unknown)} (NoiseSchedule has "
                             f"{[f.name for f in dataclasses.fields(NoiseSchedule)]})")
        try:
            _training_schedule(base, m.scheduler.to_dict())
        except ValueError as e:
            raise ValueError(f"config.model.scheduler: {e}") from e
        s = config.sample
        if s.every_steps < 0:
            raise ValueError(f"config.sample.every_steps must be >= 0 (0 = off), got {s.every_steps}")
        if s.every_steps:
            if not s.prompts or not all(isinstance(p, str) for p in s.prompts):
                raise ValueError(f"config.sample.prompts must be a non-empty list of str, got {s.prompts!r}")
            for name in ("num_frames", "height", "width", "num_steps", "fps"):
                if s[name] <= 0:
                    raise ValueError(f"config.sample.{name} must be > 0, got {s[name]}")
            if s.guidance_scale < 0:
                raise ValueError(f"config.sample.guidance_scale must be >= 0, got {s.guidance_scale}")

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        m = config.model
        base = checkpoints.load_model_config(m.init_from) if m.init_from else None
        self.model_configs = {kind: _model_config(kind, base, m.preset, m[kind]) for kind in MODELS}
        self.schedule = _training_schedule(base, m.scheduler.to_dict())
        tokenizer = m.tokenizer or (base or {}).get("tokenizer") or None
        if tokenizer and base is not None and not m.tokenizer and not os.path.isabs(tokenizer):
            tokenizer = os.path.join(m.init_from, tokenizer)  # converted checkpoints carry their tokenizer folder
        self.tokenizer_path = tokenizer
        self.tokenizer = load_tokenizer(self.tokenizer_path)
        self.models = {kind: factory.build(kind, cfg) for kind, cfg in self.model_configs.items()}
        vae_cfg = self.model_configs["vae"]
        self.scaling_factor = float(vae_cfg.scaling_factor)
        self.vae_factor = factory.downsampling_factor(vae_cfg)
        if config.sample.every_steps:
            multiple = self.vae_factor * factory.downsampling_factor(self.model_configs["unet"])
            for name in ("height", "width"):
                if config.sample[name] % multiple:
                    raise ValueError(f"config.sample.{name} must be a multiple of {multiple} (VAE x UNet "
                                     f"downsampling), got {config.sample[name]}")

    # --- parameters -------------------------------------------------------------------------------------------
    def abstract_params(self) -> tuple[Params, Params]:
        shapes = {k: factory.abstract_params(k, c) for k, c in self.model_configs.items()}
        specs = {k: factory.logical_specs(k, c) for k, c in self.model_configs.items()}
        return shapes, specs

    def init_params(self, rng: jax.Array) -> Params:
        keys = dict(zip(MODELS, jax.random.split(rng, len(MODELS))))
        # factory.init_fn is traceable (factory.init_params jits it on its own, which cannot nest).
        return {k: nn.meta.unbox(factory.init_fn(k, c)(keys[k])["params"]) for k, c in self.model_configs.items()}

    def pretrained(self) -> tuple[str, str] | None:
        m = self.config.model
        return (m.init_from, m.allow_missing) if m.init_from else None

    def param_labels(self, shapes: Params) -> dict[str, str]:
        """``LABEL`` for trainable parameters, ``LABEL_lr{i}`` for those of ``config.lr_mults[i]``."""
        labels = train_state.regex_labels(shapes, {LABEL: self.config.trainable_regex})
        if LABEL not in labels.values():
            raise ValueError(f"config.trainable_regex={self.config.trainable_regex!r} matches no parameter path")
        mults = train_state.regex_labels(shapes, {f"{LABEL}_lr{i}": rx for i, (rx, _) in
                                                  enumerate(self.config.lr_mults)})
        labels = {p: mults[p] if label == LABEL and mults[p] != train_state.FROZEN else label
                  for p, label in labels.items()}
        for i, (rx, _) in enumerate(self.config.lr_mults):
            if f"{LABEL}_lr{i}" not in labels.values():
                raise ValueError(f"config.lr_mults[{i}]: {rx!r} matches no trainable parameter (before it: "
                                 f"{[m[0] for m in self.config.lr_mults[:i]]})")
        return labels

    def optimizer_groups(self) -> dict[str, Mapping[str, Any]]:
        groups = {LABEL: self.config.optimizer}
        for i, (_, factor) in enumerate(self.config.lr_mults):
            scaled = self.config.optimizer.copy_and_resolve_references()
            scaled.learning_rate = self.config.optimizer.learning_rate * factor
            groups[f"{LABEL}_lr{i}"] = scaled
        return groups

    # --- data ------------------------------------------------------------------------------------------------
    def host_batch(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        for key in ("video", "caption"):
            if key not in batch:
                raise KeyError(f"data batch has no {key!r} entry (keys: {sorted(batch)})")
        video = np.asarray(batch["video"], np.float32)
        if video.ndim != 5 or video.shape[-1] != 3:
            raise ValueError(f"batch['video'] must be [B, F, H, W, 3], got shape {video.shape}")
        if video.shape[2] % self.vae_factor or video.shape[3] % self.vae_factor:
            raise ValueError(f"batch['video'] height/width {video.shape[2:4]} must be multiples of the VAE's "
                             f"downsampling factor {self.vae_factor}")
        return {"video": video, "input_ids": self.tokenizer.encode(list(batch["caption"]))}

    # --- step ------------------------------------------------------------------------------------------------
    def encode_text(self, params: Params, input_ids: jax.Array) -> jax.Array:
        """Prompt embeddings ``[B, 77, D]`` from the (frozen) text encoder."""
        return self.models["text_encoder"].apply({"params": params["text_encoder"]}, input_ids)

    def preprocess(self, params: Params, batch: Mapping[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]:
        """Scaled posterior-sample latents ``[B, F, h, w, 4]`` (no gradient) and the token ids.

        The text encoder runs in :meth:`loss`, so it trains when ``trainable_regex`` selects it (autodiff skips it
        while it is frozen)."""
        video = batch["video"]
        b, f = video.shape[:2]
        mean, logvar = self.models["vae"].apply({"params": params["vae"]}, video.reshape((b * f,) + video.shape[2:]),
                                                method="encode")
        mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, jnp.float32)
        latents = (z * self.scaling_factor).reshape((b, f) + z.shape[1:])
        return {"latents": jax.lax.stop_gradient(latents), "input_ids": batch["input_ids"]}

    def squared_errors(self, params: Params, inputs: Mapping[str, jax.Array], rng: jax.Array
                       ) -> tuple[jax.Array, jax.Array]:
        """Eq. 3's per-element squared error between the UNet output and the epsilon / velocity target at sampled
        timesteps ``t`` (float32, the latents' shape), and ``t``."""
        z0 = inputs["latents"]
        t_rng, noise_rng, dropout_rng = jax.random.split(rng, 3)
        t = sample_training_timesteps(t_rng, z0.shape[0], self.schedule.num_train_timesteps,
                                      tuple(self.config.timestep_logit_normal) or None)
        noise = jax.random.normal(noise_rng, z0.shape, jnp.float32)
        z_t = add_noise(self.schedule, z0, noise, t)
        text = self.encode_text(params, inputs["input_ids"])
        pred = self.models["unet"].apply({"params": params["unet"]}, z_t, t, text, deterministic=False,
                                         rngs={"dropout": dropout_rng})
        target = training_target(self.schedule, z0, noise, t)
        return jnp.square(pred.astype(jnp.float32) - target), t

    def loss(self, params: Params, inputs: Mapping[str, jax.Array], rng: jax.Array, step: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Eq. 3: mean squared error between the UNet output and the epsilon / velocity target (per clip weighted by
        Min-SNR-γ when ``config.snr_gamma`` > 0)."""
        squared, t = self.squared_errors(params, inputs, rng)
        errors = jnp.mean(squared, axis=tuple(range(1, squared.ndim)))
        if self.config.snr_gamma > 0:
            weighted = jnp.mean(min_snr_weight(self.schedule, t, self.config.snr_gamma) * errors)
            return weighted, {"unweighted_loss": jnp.mean(errors)}
        return jnp.mean(errors), {}

    # --- outputs ---------------------------------------------------------------------------------------------
    @functools.cached_property
    def _sampler(self):
        """One jitted program (text encoding, sampling, decoding) on the training parameters as they are (sharded
        global arrays): the pipeline's denoiser, guidance and decoder without its host-side loop."""
        s = self.config.sample
        latent_shape = (len(s.prompts), s.num_frames, s.height // self.vae_factor, s.width // self.vae_factor,
                        self.model_configs["unet"].in_channels)
        guided = ClassifierFreeGuidance(UNetDenoiser(self.model_configs["unet"]), float(s.guidance_scale))

        def run(params, ids, negative_ids, rng):
            cond = {"text": self.encode_text(params, ids), "negative": self.encode_text(params, negative_ids),
                    "params": params["unet"]}
            z = ddim_sample(guided, self.schedule, SamplerConfig(num_steps=s.num_steps), cond, key=rng,
                            shape=latent_shape)
            return decode_latents(self.model_configs["vae"], params["vae"], z, num_frames=z.shape[1])

        return jax.jit(run)

    def sample(self, params: Params, rng: jax.Array) -> jax.Array:
        """DDIM samples (``config.sample``) with classifier-free guidance, decoded with the VAE; uint8 videos."""
        s = self.config.sample
        ids = self.tokenizer.encode(list(s.prompts))
        negative = self.tokenizer.encode([s.negative_prompt])
        return self._sampler(params, ids, negative, rng)

    def export(self, params: Params, dtype: str) -> tuple[Params, dict[str, Any]]:
        target = jnp.dtype(dtype)
        params = jax.tree.map(lambda x: x.astype(target) if jnp.issubdtype(x.dtype, jnp.floating) else x, params)
        model_config: dict[str, Any] = {
            kind: {**cfg.to_dict(), "dtype": dtype, "param_dtype": dtype, "remat_policy": "none"}
            for kind, cfg in self.model_configs.items()}
        model_config.update(tokenizer=self.tokenizer_path, scheduler=self.schedule.to_dict(), source="vidrd_jax.train")
        return {k: params[k] for k in MODELS}, model_config
