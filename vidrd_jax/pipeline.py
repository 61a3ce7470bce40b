"""Text-to-video inference: prompts -> text embeddings -> sampler -> VAE temporal decode -> uint8 frames, per clip.

:class:`VideoPipeline` holds the three models' parameters, the tokenizer and the noise schedule of an inference
checkpoint and runs the two long-video samplers on them:

- :meth:`VideoPipeline.generate_long_video`: VidRD's clip-by-clip generation (paper 002 §4.3, eq. 5-8) with
  classifier-free guidance and a negative prompt (§5.3); every clip is decoded with the temporal-aware VAE decoder
  (§4.4) as soon as it is sampled and yielded, so memory does not grow with the number of clips.
- :meth:`VideoPipeline.co_denoise`: temporal co-denoising over overlapping windows (paper 000 §3.4, eq. 18-19); the
  whole latent video is sampled in one call, then decoded and yielded ``decode_frames`` frames at a time.

A batch of B independent videos runs through the model together: ``prompts[b]`` are video b's prompts (per clip,
or per window), all videos sharing the negative prompt. Randomness comes only from the ``key`` argument.

Compilation: the denoiser passed to the samplers (``model_fn``, a :class:`UNetDenoiser`) is a hashable value
(equal UNet configs give equal denoisers), and the model parameters travel as jit arguments, so one compiled clip
program serves every clip, every call and every pipeline with the same UNet config and shapes. The VAE decoder and
text encoder are jitted the same way, keyed by their configs.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vidrd_jax import checkpoints
from vidrd_jax.diffusion import (ClassifierFreeGuidance, CoDenoiseConfig, LongVideoConfig, NoiseSchedule,
                                 co_denoise_sample, generate_long_video)
from vidrd_jax.models import factory
from vidrd_jax.models.text_encoder import CLIPTextConfig, CLIPTextModel
from vidrd_jax.models.tokenizer import Tokenizer, load_tokenizer
from vidrd_jax.models.unet3d import UNet3D, UNet3DConfig
from vidrd_jax.models.vae import AutoencoderKL, VAEConfig

MODEL_KINDS = ("unet", "vae", "text_encoder")


# --- the denoiser and its progress report ---------------------------------------------------------------------

class StepProgress:
    """A tqdm bar of denoising steps, fed from inside the compiled sampler by a host callback.

    The callback receives the step's timestep; calls with the timestep of the previous call (the windows of one
    co-denoising step) count once. A bar closes after ``num_steps`` steps; the next step (next clip) opens another.
    """

    def __init__(self, desc: str = "steps"):
        self.desc = desc
        self.num_steps = 0
        self.steps_seen = 0  # steps counted since construction, over all bars
        self._bar = None
        self._last_t: int | None = None

    def reset(self, num_steps: int) -> None:
        """Closes the current bar; the next step opens one of ``num_steps`` steps."""
        self.close()
        self.num_steps = num_steps

    def __call__(self, t: Any) -> None:
        from tqdm import tqdm

        t = int(np.asarray(t))
        if t == self._last_t:
            return
        self._last_t = t
        self.steps_seen += 1
        if self._bar is None:
            self._bar = tqdm(total=self.num_steps or None, desc=self.desc, leave=False)
        self._bar.update(1)
        if self._bar.n == self.num_steps:
            self._bar.close()
            self._bar = None

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = None
        self._last_t = None


@dataclasses.dataclass(frozen=True)
class UNetDenoiser:
    """``model_fn(z, t, text, params) -> eps`` for :class:`ClassifierFreeGuidance`: ε_θ(z_t, t, c) of eq. 3.

    ``t`` is the int32 scalar timestep, broadcast over the batch. ``step_callback`` (optional) is called on the
    host with ``t`` at every denoiser call (progress bars); it is part of the value, so denoisers with different
    callbacks compile separately.
    """

    config: UNet3DConfig
    step_callback: Callable[[Any], None] | None = None

    def __call__(self, z: jax.Array, t: jax.Array, text: jax.Array, params: Any) -> jax.Array:
        if self.step_callback is not None:
            jax.debug.callback(self.step_callback, t)
        timesteps = jnp.broadcast_to(jnp.asarray(t, jnp.int32), (z.shape[0],))
        return UNet3D(self.config).apply({"params": params}, z, timesteps, text)


# --- jitted model calls, keyed by the (hashable) model configs ---------------------------------------------------

@functools.partial(jax.jit, static_argnames=("config",))
def _encode_text(config: CLIPTextConfig, params: Any, input_ids: jax.Array) -> jax.Array:
    return CLIPTextModel(config).apply({"params": params}, input_ids).astype(jnp.float32)


def pixels_to_uint8(pixels: jax.Array) -> jax.Array:
    """Pixels in [-1, 1] -> uint8 levels ``round((x + 1) · 127.5)`` (ties to even) clipped to [0, 255]: the one
    conversion of decoded frames (generator and training previews)."""
    return jnp.clip(jnp.round((pixels.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def decode_latents(config: VAEConfig, params: Any, latents: jax.Array, num_frames: int) -> jax.Array:
    """Traceable: scaled latents [B, F, h, w, C] -> uint8 [B, F, H, W, 3]; the temporal decoder sees clips of
    ``num_frames`` frames (it must divide B·F)."""
    b, f = latents.shape[:2]
    z = latents.reshape((b * f,) + latents.shape[2:]) / config.scaling_factor
    pixels = pixels_to_uint8(AutoencoderKL(config).apply({"params": params}, z, num_frames=num_frames,
                                                         method="decode"))
    return pixels.reshape((b, f) + pixels.shape[1:])


@functools.partial(jax.jit, static_argnames=("config", "num_frames"))
def _decode_to_uint8(config: VAEConfig, num_frames: int, params: Any, latents: jax.Array) -> jax.Array:
    return decode_latents(config, params, latents, num_frames)


@functools.partial(jax.jit, static_argnames=("config",))
def _encode_from_uint8(config: VAEConfig, params: Any, frames: jax.Array) -> jax.Array:
    """uint8 [B, F, H, W, 3] -> scaled posterior-mean latents [B, F, h, w, C] (frame by frame)."""
    b, f = frames.shape[:2]
    pixels = frames.reshape((b * f,) + frames.shape[2:]).astype(jnp.float32) / 127.5 - 1.0
    mean, _ = AutoencoderKL(config).apply({"params": params}, pixels, method="encode")
    return (mean.astype(jnp.float32) * config.scaling_factor).reshape((b, f) + mean.shape[1:])


@functools.lru_cache(maxsize=16)
def _param_shapes(kind: str, config: Any) -> dict[str, tuple[int, ...]]:
    """{"a/b/kernel": shape} of a model's parameters (traced once per config, nothing allocated)."""
    tree = factory.abstract_params(kind, config)
    return {_path_str(path): tuple(leaf.shape) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


@functools.lru_cache(maxsize=4)
def _load_tokenizer(path: str | None) -> Tokenizer:
    """Tokenizers are immutable: pipelines of one process share each one."""
    return load_tokenizer(path)


def _path_str(path: Sequence[Any]) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def check_params(params: Mapping[str, Any], configs: Mapping[str, Any]) -> None:
    """Raises one ``ValueError`` listing missing, unexpected and misshaped parameters of every model."""
    problems = []
    for kind in MODEL_KINDS:
        if kind not in params:
            problems.append(f"{kind}: missing from params")
            continue
        want = _param_shapes(kind, configs[kind])
        have = {_path_str(p): tuple(np.shape(x)) for p, x in jax.tree_util.tree_leaves_with_path(params[kind])}
        missing = sorted(want.keys() - have.keys())
        unexpected = sorted(have.keys() - want.keys())
        misshaped = sorted(f"{k} {have[k]} (config wants {want[k]})" for k in want.keys() & have.keys()
                           if have[k] != want[k])
        for label, items in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
            if items:
                problems.append(f"{kind}: {len(items)} {label}: {', '.join(items[:5])}{' …' if len(items) > 5 else ''}")
    if problems:
        raise ValueError("parameters do not match the model config: " + "; ".join(problems))


# --- the pipeline ------------------------------------------------------------------------------------------------

class VideoChunk(NamedTuple):
    """Decoded frames of one clip (VidRD) or one decode chunk (co-denoising), in video order."""

    index: int
    frames: np.ndarray  # uint8 [B, F, H, W, 3]
    guided_steps: tuple[int, ...] | None  # DSG steps of each prompt frame (VidRD; all 0 for clip 0), else None
    sample_seconds: float  # sampling time attributed to this chunk (includes compilation on the first call)
    decode_seconds: float


def resolve_schedule(scheduler_config: Mapping[str, Any] | None) -> NoiseSchedule:
    """The checkpoint's scheduler; an empty or missing entry means SD-2.1-base's (not diffusers' DDIM defaults)."""
    return NoiseSchedule.from_diffusers(scheduler_config) if scheduler_config else NoiseSchedule.sd21_base()


def _batch_prompts(prompts: Sequence[Sequence[str]] | None, default: Sequence[str]) -> list[tuple[str, ...]]:
    """[B][P] prompts (all rows the same length P >= 1) from ``prompts`` or one video of ``default``."""
    rows = [tuple(default)] if prompts is None else [(row,) if isinstance(row, str) else tuple(row) for row in prompts]
    if not rows:
        raise ValueError("prompts must hold at least one video's prompts")
    for b, row in enumerate(rows):
        if not row or not all(isinstance(p, str) for p in row):
            raise ValueError(f"prompts[{b}] must be a non-empty list of str, got {row!r}")
        if len(row) != len(rows[0]):
            raise ValueError(f"prompts[{b}] has {len(row)} prompts but prompts[0] has {len(rows[0])}: every video "
                             "needs the same number of per-clip/per-window prompts")
    return rows


class VideoPipeline:
    """Models, parameters, tokenizer and schedule of an inference checkpoint, ready to sample videos.

    ``params`` = ``{"unet", "vae", "text_encoder"}`` and ``model_config`` as written by
    :func:`vidrd_jax.checkpoints.save_inference_checkpoint`; ``tokenizer`` defaults to
    ``load_tokenizer(model_config["tokenizer"])`` with a relative path taken from ``checkpoint_dir``.
    ``progress=True`` shows tqdm bars over clips and denoising steps. With ``mesh``, params are replicated over it
    and a batch of videos (text embeddings, hence latents) is split over its ``data`` axis (data-parallel sampling).
    """

    def __init__(self, params: Mapping[str, Any], model_config: Mapping[str, Any], *,
                 tokenizer: Tokenizer | None = None, checkpoint_dir: str | None = None, progress: bool = False,
                 mesh: Mesh | None = None):
        missing = [k for k in MODEL_KINDS if k not in model_config]
        if missing:
            raise ValueError(f"model_config lacks {missing} (has {sorted(model_config)})")
        self.configs = {kind: factory.config_from_dict(kind, model_config[kind]) for kind in MODEL_KINDS}
        check_params(params, self.configs)
        if mesh is not None and "data" not in mesh.shape:
            raise ValueError(f"mesh: needs a 'data' axis, got axes {dict(mesh.shape)}")
        self.mesh = mesh
        self._replicated = None if mesh is None else NamedSharding(mesh, PartitionSpec())
        self.params = jax.device_put({kind: params[kind] for kind in MODEL_KINDS}, self._replicated)
        self.schedule = resolve_schedule(model_config.get("scheduler"))
        if tokenizer is None:
            path = model_config.get("tokenizer")
            if path is not None and checkpoint_dir is not None:
                path = os.path.join(checkpoint_dir, path)
            tokenizer = _load_tokenizer(path)
        self.tokenizer = tokenizer
        self._truncation_reported: set[str] = set()
        self.progress = progress
        self.step_progress = StepProgress() if progress else None
        self.model_fn: Callable[..., jax.Array] = UNetDenoiser(self.configs["unet"], self.step_progress)

    @classmethod
    def from_checkpoint(cls, directory: str, *, progress: bool = False, mesh: Mesh | None = None) -> "VideoPipeline":
        """Loads an inference checkpoint directory (``vidrd_jax.convert``, ``make_tiny_checkpoint``, export)."""
        params, model_config = checkpoints.load_inference_checkpoint(directory)
        return cls(params, model_config, checkpoint_dir=os.path.abspath(directory), progress=progress, mesh=mesh)

    # --- geometry ---
    @property
    def vae_factor(self) -> int:
        """Pixels per latent along height and width."""
        return factory.downsampling_factor(self.configs["vae"])

    @property
    def spatial_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE factor times the UNet's downsampling."""
        return self.vae_factor * factory.downsampling_factor(self.configs["unet"])

    def check_size(self, height: int, width: int) -> None:
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value % self.spatial_multiple:
                raise ValueError(f"{name}={value!r} must be a positive multiple of {self.spatial_multiple} (VAE factor "
                                 f"{self.vae_factor} x UNet downsampling {self.spatial_multiple // self.vae_factor})")

    def latent_shape(self, batch: int, num_frames: int, height: int, width: int) -> tuple[int, ...]:
        self.check_size(height, width)
        f = self.vae_factor
        return (batch, num_frames, height // f, width // f, self.configs["unet"].in_channels)

    # --- model calls ---
    def encode_prompts(self, prompts: Sequence[str]) -> jax.Array:
        """Prompt embeddings ``[P, 77, D]`` (text encoder's last hidden state, SD's conditioning c).

        The batch is padded to a power of two, so varying prompt counts reuse a few compiled programs. A prompt
        longer than the tokenizer's ``model_max_length`` (77) is cut there, with a warning (once per prompt).
        """
        self._report_truncation(prompts)
        ids = self.tokenizer.encode(list(prompts))
        count = len(ids)
        padded = np.concatenate([ids, np.repeat(ids[:1], (1 << (count - 1).bit_length()) - count, axis=0)])
        return _encode_text(self.configs["text_encoder"], self.params["text_encoder"], jnp.asarray(padded))[:count]

    def _report_truncation(self, prompts: Sequence[str]) -> None:
        limit = self.tokenizer.model_max_length
        for prompt, count in zip(prompts, self.tokenizer.token_counts(list(prompts))):
            if count > limit and prompt not in self._truncation_reported:
                self._truncation_reported.add(prompt)
                logging.warning("prompt %r is %d tokens long (with the start and end tokens); the text encoder reads "
                                "only the first %d, the rest is ignored", prompt, count, limit)

    def encode_clip(self, frames: np.ndarray) -> jax.Array:
        """uint8 frames ``[B, F, H, W, 3]`` -> scaled posterior-mean latents ``[B, F, h, w, C]`` (the inverse of
        :meth:`decode_clip` up to the autoencoder's error)."""
        frames = np.asarray(frames)
        if (frames.ndim != 5 or frames.shape[-1] != 3 or frames.dtype != np.uint8
                or frames.shape[2] % self.vae_factor or frames.shape[3] % self.vae_factor):
            raise ValueError(f"frames must be uint8 [B, F, H, W, 3] with H and W multiples of the VAE factor "
                             f"{self.vae_factor}, got {frames.dtype} {frames.shape}")
        return _encode_from_uint8(self.configs["vae"], self.params["vae"], jnp.asarray(frames))

    def decode_clip(self, latents: jax.Array, num_frames: int | None = None) -> np.ndarray:
        """Scaled latents ``[B, F, h, w, C]`` -> uint8 frames ``[B, F, H, W, 3]`` on the host.

        The temporal-aware decoder (§4.4) runs over clips of ``num_frames`` frames (default F; it must divide F),
        on ``latents / scaling_factor``.
        """
        latents = jnp.asarray(latents)
        if latents.ndim != 5:
            raise ValueError(f"latents must be [B, F, h, w, C], got shape {latents.shape}")
        b, f = latents.shape[:2]
        num_frames = f if num_frames is None else num_frames
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1 or f % num_frames:
            raise ValueError(f"num_frames={num_frames!r} must be a positive int dividing F={f}")
        clips = latents.reshape((b * f // num_frames, num_frames) + latents.shape[2:])
        frames = _decode_to_uint8(self.configs["vae"], num_frames, self.params["vae"], clips)
        return np.asarray(frames).reshape((b, f) + frames.shape[2:])

    def eps_fn(self, guidance_scale: float) -> ClassifierFreeGuidance:
        return ClassifierFreeGuidance(self.model_fn, float(guidance_scale))

    def _batch_sharding(self) -> NamedSharding | None:
        """The batch axis split over the mesh's data axis (None without a mesh)."""
        return None if self.mesh is None else NamedSharding(self.mesh, PartitionSpec("data"))

    def _conds(self, rows: list[tuple[str, ...]], negative_prompt: str, split_batch: bool = True
               ) -> tuple[list[dict[str, jax.Array]], jax.Array]:
        """Per-prompt-slot conds ``[{"text": [B, 77, D]}] * P`` and the negative embedding ``[1, 77, D]``.

        Every distinct prompt is encoded once, in one text-encoder call together with the negative prompt. With a
        mesh, the conds are split over its data axis (``split_batch``) or replicated.
        """
        unique = list(dict.fromkeys([p for row in rows for p in row] + [negative_prompt]))
        embeddings = self.encode_prompts(unique)
        index = {p: i for i, p in enumerate(unique)}
        conds = [{"text": embeddings[np.asarray([index[row[k]] for row in rows])]} for k in range(len(rows[0]))]
        negative = embeddings[index[negative_prompt]][None]
        if self.mesh is None:
            return conds, negative
        if not split_batch:
            return jax.device_put(conds, self._replicated), jax.device_put(negative, self._replicated)
        data = self.mesh.shape["data"]
        if len(rows) % data:
            raise ValueError(f"prompts: a batch of {len(rows)} videos does not split over the mesh's data axis of "
                             f"{data} devices; give a multiple of {data} videos (or a smaller mesh data axis)")
        return jax.device_put(conds, self._batch_sharding()), jax.device_put(negative, self._replicated)

    # --- samplers ---
    def generate_long_video(self, config: LongVideoConfig, *, key: jax.Array, height: int, width: int,
                            prompts: Sequence[Sequence[str]] | None = None) -> Iterator[VideoChunk]:
        """VidRD (Algorithm 1): yields ``config.num_clips`` decoded clips of a batch of videos, one at a time.

        ``prompts[b]`` are video b's per-clip prompts (1 or ``num_clips`` each, the same count for every video);
        None means one video of ``config.prompts``. Each clip's N latent frames are decoded together, then clips
        >= 1 drop their first M frames when ``config.output == "drop_prompt_frames"`` (the decoder always sees
        whole clips, so every decode has the same shape and compiles once).
        """
        rows = _batch_prompts(prompts, config.prompts)
        sampler_config = dataclasses.replace(config, prompts=rows[0], output="all_frames")
        conds, negative = self._conds(rows, config.negative_prompt)
        shape = self.latent_shape(len(rows), config.num_frames, height, width)
        shared = {"params": self.params["unet"], "negative": negative}
        if self.step_progress is not None:
            self.step_progress.reset(config.num_steps)
        clips = generate_long_video(self.eps_fn(config.guidance_scale), self.schedule, sampler_config, conds,
                                    shared_cond=shared, key=key, latent_shape=shape, progress=self.progress,
                                    batch_sharding=self._batch_sharding())
        drop = config.num_prompt_frames if config.output == "drop_prompt_frames" else 0
        try:
            while True:
                start = time.perf_counter()
                clip = next(clips, None)
                if clip is None:
                    return
                latents = jax.block_until_ready(clip.latents)
                sampled = time.perf_counter()
                frames = self.decode_clip(latents)
                if clip.index > 0 and drop:
                    frames = frames[:, drop:]
                guided = tuple(int(g) for g in np.asarray(clip.guided_steps))
                yield VideoChunk(clip.index, frames, guided, sampled - start, time.perf_counter() - sampled)
        finally:
            clips.close()
            if self.step_progress is not None:
                self.step_progress.close()

    def co_denoise(self, config: CoDenoiseConfig, *, key: jax.Array, height: int, width: int,
                   prompts: Sequence[Sequence[str]] | None = None, decode_frames: int | None = None,
                   split_windows: bool = False) -> Iterator[VideoChunk]:
        """Co-denoising (eq. 18-19): samples all L frames in one call, then yields them ``decode_frames`` at a time.

        ``prompts[b]`` are video b's per-window prompts (at most ``num_windows``, spread by
        ``CoDenoiseConfig.window_prompts``); ``decode_frames`` (default ``window_size``) is the temporal decoder's
        clip length; the last chunk holds the remaining ``L mod decode_frames`` frames. With a mesh, the batch of
        videos is split over its data axis, or with ``split_windows`` each denoising step's windows are (any batch
        size, e.g. one long video on every device).
        """
        decode_frames = config.window_size if decode_frames is None else decode_frames
        if isinstance(decode_frames, bool) or not isinstance(decode_frames, int) or decode_frames < 1:
            raise ValueError(f"decode_frames must be a positive int, got {decode_frames!r}")
        rows = _batch_prompts(prompts, config.prompts)
        sampler_config = dataclasses.replace(config, prompts=rows[0])
        split_windows = split_windows and self.mesh is not None
        conds, negative = self._conds(rows, config.negative_prompt, split_batch=not split_windows)
        b, _, h, w, c = self.latent_shape(len(rows), config.num_frames, height, width)
        parallel = (dict(window_mesh=self.mesh, window_axis="data") if split_windows
                    else dict(batch_sharding=self._batch_sharding()))
        if self.step_progress is not None:
            self.step_progress.reset(config.num_steps)
        try:
            start = time.perf_counter()
            latents = co_denoise_sample(self.eps_fn(config.guidance_scale), self.schedule, sampler_config, conds,
                                        shared_cond={"params": self.params["unet"], "negative": negative}, key=key,
                                        batch_and_latent_shape=(b, h, w, c), **parallel)
            latents = jax.block_until_ready(latents)
            sample_seconds = time.perf_counter() - start
        finally:
            if self.step_progress is not None:
                self.step_progress.close()
        for index, first in enumerate(range(0, config.num_frames, decode_frames)):
            start = time.perf_counter()
            frames = self.decode_clip(latents[:, first:first + decode_frames])
            yield VideoChunk(index, frames, None, sample_seconds if index == 0 else 0.0, time.perf_counter() - start)


def num_output_frames(config: LongVideoConfig | CoDenoiseConfig) -> int:
    """Frames per video that the pipeline yields for ``config``."""
    if isinstance(config, CoDenoiseConfig):
        return config.num_frames
    later = config.num_frames - (config.num_prompt_frames if config.output == "drop_prompt_frames" else 0)
    return config.num_frames + (config.num_clips - 1) * later


__all__ = ["StepProgress", "UNetDenoiser", "VideoChunk", "VideoPipeline", "check_params", "decode_latents",
           "num_output_frames", "pixels_to_uint8", "resolve_schedule"]
