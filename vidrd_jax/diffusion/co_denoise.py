"""Temporal co-denoising over overlapping windows (Gen-L-Video; paper 000 §3.4, eq. 18-19).

A video of ``L = K + n·S`` latent frames is covered by ``W = n + 1`` windows ``[i·S, i·S + K)`` (eq. 18). At every
step each window gets its own (guided) noise prediction and solver update, and each frame's ``x_{t-1}`` is the
minimiser of eq. 19, i.e. the weighted mean over the windows that contain it:
``x_{t-1}[j] = sum_i w_i[j - i·S] · x^i_{t-1}[j - i·S] / sum_i w_i[j - i·S]``. The update is the config's solver
(``solver``: DDIM or DPM-Solver++(2M), ``solvers.py``); a solver state (DPM-Solver++'s previous x0) is fused over the
windows with the same weights. With ``eta > 0`` (DDIM) every window slices the same per-frame noise, so averaging
keeps the DDIM variance.

Window weights over the K frames of a window (``k = 0..K-1``, centre ``c = (K-1)/2``):

- ``"uniform"``: 1 (Gen-L-Video's released code).
- ``"pyramid"``: ``1 - |k - c| / ((K + 1) / 2)``: triangular, peak at the centre, > 0 at the edges.
- ``"gaussian"``: ``exp(-(k - c)^2 / (2 (gaussian_sigma · K)^2))``.

Per-window prompts: prompt p of P is anchored at window ``round_half_up(p · (W-1) / (P-1))`` (P = 1: all windows
take prompt 0); a window takes the prompt whose anchor is nearest, ties going to the lower prompt index. P <= W.

Windows run under ``vmap``, ``window_chunk_size`` of them at a time (``lax.map`` over chunks bounds memory); the
whole sampling loop is one ``lax.scan`` inside ``jit``.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vidrd_jax.diffusion.ddim import EpsFn, check_step_noise, draw_noise, place_noise
from vidrd_jax.diffusion.guidance import check_guidance_fields, normalize_prompts
from vidrd_jax.diffusion.schedule import NoiseSchedule, check_int
from vidrd_jax.diffusion.solvers import SamplerConfig

WINDOW_WEIGHTINGS = ("uniform", "pyramid", "gaussian")


@dataclasses.dataclass(frozen=True)
class CoDenoiseConfig:
    """Co-denoising settings; ``num_frames`` L must be ``window_size + n · stride``."""

    prompts: tuple[str, ...]
    num_frames: int = 16  # L
    window_size: int = 8  # K
    stride: int = 4  # S of eq. 18
    weighting: str = "uniform"
    gaussian_sigma: float = 0.25  # std of the "gaussian" weights, as a fraction of window_size
    window_chunk_size: int | None = None  # windows per vmap call (None: all at once)
    num_steps: int = 50
    eta: float = 0.0
    guidance_scale: float = 10.0
    negative_prompt: str = "watermark"
    solver: str = "ddim"  # solvers.SOLVERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", normalize_prompts(self.prompts))
        check_int("window_size", self.window_size, 1)
        check_int("stride", self.stride, 1, self.window_size)
        check_int("num_frames", self.num_frames, 1)
        k, s, length = self.window_size, self.stride, self.num_frames
        if length < k or (length - k) % s:
            below = k + max(0, (length - k) // s) * s
            above = below + s if length > k else k + s
            raise ValueError(f"num_frames L={length} is not window_size K={k} + n · stride S={s}; the nearest valid "
                             f"lengths are {below} and {above}")
        if len(self.prompts) > self.num_windows:
            raise ValueError(f"prompts has {len(self.prompts)} entries but there are only {self.num_windows} windows")
        if self.weighting not in WINDOW_WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WINDOW_WEIGHTINGS}, got {self.weighting!r}")
        if not isinstance(self.gaussian_sigma, (int, float)) or not 0 < self.gaussian_sigma < math.inf:
            raise ValueError(f"gaussian_sigma must be a finite float > 0, got {self.gaussian_sigma!r}")
        if self.window_chunk_size is not None:
            check_int("window_chunk_size", self.window_chunk_size, 1)
        SamplerConfig(self.num_steps, self.eta, self.solver)
        check_guidance_fields(self.guidance_scale, self.negative_prompt)

    @property
    def sampler(self) -> SamplerConfig:
        return SamplerConfig(self.num_steps, self.eta, self.solver)

    @property
    def num_windows(self) -> int:
        return (self.num_frames - self.window_size) // self.stride + 1

    def window_weights(self) -> np.ndarray:
        """float64 [K]: the weight of each frame inside a window."""
        k = np.arange(self.window_size, dtype=np.float64)
        centre = (self.window_size - 1) / 2
        if self.weighting == "uniform":
            return np.ones_like(k)
        if self.weighting == "pyramid":
            return 1.0 - np.abs(k - centre) / ((self.window_size + 1) / 2)
        return np.exp(-((k - centre) ** 2) / (2 * (self.gaussian_sigma * self.window_size) ** 2))

    def window_prompts(self) -> tuple[int, ...]:
        """Prompt index of each window (module docstring rule)."""
        num_prompts, num_windows = len(self.prompts), self.num_windows
        if num_prompts == 1:
            return (0,) * num_windows
        anchors = np.floor(np.arange(num_prompts) * (num_windows - 1) / (num_prompts - 1) + 0.5)
        distances = np.abs(np.arange(num_windows)[:, None] - anchors[None, :])
        return tuple(int(p) for p in np.argmin(distances, axis=1))  # argmin: first minimum = lower index on ties


@dataclasses.dataclass(frozen=True)
class _WindowPlan:
    """Static per-window tables, padded to a multiple of the chunk size (padding windows have weight 0 and cover
    zero frames past the video's end)."""

    sampler: SamplerConfig
    window_size: int  # K
    stride: int  # S
    chunk_size: int
    prompts: tuple[int, ...]  # [Wp]
    weights: tuple[tuple[float, ...], ...]  # [Wp][K], normalised so every frame's weights sum to 1

    @property
    def starts(self) -> tuple[int, ...]:
        """First frame of every (padded) window, eq. 18."""
        return tuple(i * self.stride for i in range(len(self.prompts)))

    @property
    def padded_frames(self) -> int:
        """Frames the padded windows cover (>= L)."""
        return self.starts[-1] + self.window_size

    @classmethod
    def from_config(cls, config: CoDenoiseConfig) -> "_WindowPlan":
        num_windows, k = config.num_windows, config.window_size
        chunk = min(config.window_chunk_size or num_windows, num_windows)
        frame_index = (np.arange(num_windows) * config.stride)[:, None] + np.arange(k)[None, :]
        weights = np.broadcast_to(config.window_weights(), (num_windows, k))
        totals = np.zeros(config.num_frames)
        np.add.at(totals, frame_index, weights)
        plan = cls(config.sampler, k, config.stride, chunk, config.window_prompts(),
                   tuple(tuple(float(w) for w in row) for row in weights / totals[frame_index]))
        return _pad_windows(plan, chunk)


def _pad_windows(plan: _WindowPlan, multiple: int) -> _WindowPlan:
    """Pads the plan with weight-0 windows to a multiple of ``multiple`` windows (padding adds nothing to eq. 19)."""
    pad = -len(plan.prompts) % multiple
    return dataclasses.replace(plan, prompts=plan.prompts + (0,) * pad,
                               weights=plan.weights + ((0.0,) * plan.window_size,) * pad)


@functools.partial(jax.jit, static_argnames=("eps_fn", "schedule", "plan", "window_mesh", "window_axis"))
def _co_denoise(eps_fn: EpsFn, schedule: NoiseSchedule, plan: _WindowPlan, conds: Any,
                shared_cond: Mapping[str, Any] | None, latents: jax.Array, step_noise: jax.Array | None,
                window_mesh: jax.sharding.Mesh | None = None, window_axis: str | None = None) -> jax.Array:
    k, stride, chunk = plan.window_size, plan.stride, plan.chunk_size
    solver = plan.sampler.make_solver()
    tables = jax.tree.map(jnp.asarray, solver.tables(schedule, plan.sampler.num_steps))

    def predict_and_fuse(x, state, row, noise, conds, shared_cond, prompts, weights):
        """Steps the windows ``prompts``/``weights`` (a multiple of ``chunk``; with a mesh, this device's share, which
        are consecutive) from (x, state) and returns their weighted sum into [B, L', h, w, C] (eq. 19; partial on a
        device). Windows are static slices of one contiguous segment, and the fusion is their transpose (pads and
        adds): no gather or scatter."""
        count = prompts.shape[0]
        first = 0 if window_mesh is None else jax.lax.axis_index(window_axis) * (count * stride)
        length = (count - 1) * stride + k  # frames this call's windows cover, from ``first``

        def segment_windows(segment: jax.Array) -> jax.Array:  # [B, length, ...] -> [chunks, chunk, B, K, ...]
            windows = jnp.stack([segment[:, i * stride:i * stride + k] for i in range(count)])
            return windows.reshape((count // chunk, chunk) + windows.shape[1:])

        def segment_of(a: jax.Array) -> jax.Array:  # varies over the window axis under shard_map
            return jax.lax.dynamic_slice_in_dim(a, first, length, axis=1)

        def windows_of(a: jax.Array) -> jax.Array:
            """[B, L', h, w, C] -> this call's [chunks, chunk, B, K, h, w, C] windows."""
            return segment_windows(segment_of(a))

        def fuse(a: jax.Array, windows: jax.Array) -> jax.Array:
            """The weighted sum of eq. 19 over the [chunks, chunk, B, K, h, w, C] window results."""
            weighted = windows * weights.reshape((count // chunk, chunk, 1, k) + (1,) * (windows.ndim - 4))
            segment = jax.linear_transpose(segment_windows, segment_of(a))(weighted.astype(a.dtype))[0]
            return jax.lax.dynamic_update_slice_in_dim(jnp.zeros_like(a), segment, first, axis=1)

        def window_step(z, window_noise, window_state, prompt):
            cond = jax.tree.map(lambda c: c[prompt], conds)
            if shared_cond is not None:
                cond = {**shared_cond, **cond}
            return solver.step(schedule, row, window_state, z, eps_fn(z, row.timesteps, cond), window_noise)

        window_noise = None if noise is None else windows_of(noise)
        per_chunk = (windows_of(x), window_noise, jax.tree.map(windows_of, state), prompts.reshape(-1, chunk))
        windows, window_states = jax.lax.map(lambda args: jax.vmap(window_step)(*args), per_chunk)
        fused = (fuse(x, windows), jax.tree.map(fuse, state, window_states))
        return fused if window_mesh is None else jax.lax.psum(fused, window_axis)

    if window_mesh is not None:  # each device steps its share of the windows; psum completes eq. 19
        windowed, replicated = jax.sharding.PartitionSpec(window_axis), jax.sharding.PartitionSpec()
        predict_and_fuse = jax.shard_map(predict_and_fuse, mesh=window_mesh, out_specs=replicated,
                                         in_specs=(replicated,) * 6 + (windowed,) * 2)
    window_tables = (jnp.asarray(plan.prompts, jnp.int32), jnp.asarray(np.asarray(plan.weights, np.float32)))
    num_frames, pad = latents.shape[1], plan.padded_frames - latents.shape[1]

    def padded(a: jax.Array) -> jax.Array:  # padding windows cover zero frames past the end
        return jnp.pad(a, [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2))

    def body(carry, xs):
        x, state = carry
        row, noise = xs
        return predict_and_fuse(x, state, row, noise, conds, shared_cond, *window_tables), None

    noise = None if step_noise is None else jax.vmap(padded)(step_noise)
    x = padded(latents)
    (x, _), _ = jax.lax.scan(body, (x, solver.init_state(x)), (tables, noise))
    return x[:, :num_frames]


def co_denoise_sample(eps_fn: EpsFn, schedule: NoiseSchedule, config: CoDenoiseConfig, conds: Sequence[Any], *,
                      shared_cond: Mapping[str, Any] | None = None, latents: jax.Array | None = None,
                      step_noise: jax.Array | None = None,
                      key: jax.Array | None = None, batch_and_latent_shape: Sequence[int] | None = None,
                      window_mesh: jax.sharding.Mesh | None = None, window_axis: str = "data",
                      batch_sharding: jax.sharding.NamedSharding | None = None) -> jax.Array:
    """Samples an L-frame video by co-denoising K-frame windows; returns latents [B, L, h, w, C].

    With ``window_mesh``, each step's windows are split over its ``window_axis`` under ``shard_map`` (padded with
    weight-0 windows to a multiple of chunk x devices) and the eq. 19 sums are completed with a ``psum``. With
    ``batch_sharding`` (a sharding of the batch axis), x_T and the step noise are placed with it (data-parallel).

    ``conds[p]`` is the denoiser cond of ``config.prompts[p]`` (all with the same structure and shapes; they are
    stacked and gathered per window). Entries common to all prompts (model params, the negative embedding) go in
    ``shared_cond`` instead, which is passed unstacked; windows see ``{**shared_cond, **conds[p]}``. Randomness:
    ``latents`` [B, L, h, w, C] (x_T) and, iff eta > 0, ``step_noise`` [S, B, L, h, w, C]; or ``key`` with
    ``batch_and_latent_shape`` = (B, h, w, C).
    """
    conds = list(conds)
    if len(conds) != len(config.prompts):
        raise ValueError(f"conds has {len(conds)} entries but config.prompts has {len(config.prompts)}")
    if latents is None:
        if key is None or batch_and_latent_shape is None:
            raise ValueError("co_denoise_sample: give latents (and step_noise if eta > 0), or key and "
                             "batch_and_latent_shape")
        b, h, w, c = (int(d) for d in batch_and_latent_shape)
        latents, step_noise = draw_noise(key, (b, config.num_frames, h, w, c), config.sampler)
    elif step_noise is None and config.eta > 0:
        if key is None:
            raise ValueError(f"co_denoise_sample: eta={config.eta} > 0 needs step_noise or a key")
        step_noise = draw_noise(key, tuple(np.shape(latents)), config.sampler)[1]
    latents = jnp.asarray(latents)
    if latents.ndim != 5 or latents.shape[1] != config.num_frames:
        raise ValueError(f"latents must be [B, num_frames={config.num_frames}, h, w, C], got {latents.shape}")
    check_step_noise(step_noise, tuple(latents.shape), config.sampler)
    latents, step_noise = place_noise(latents, step_noise, batch_sharding)
    stacked = jax.tree.map(lambda *leaves: jnp.stack([jnp.asarray(leaf) for leaf in leaves]), *conds)
    plan = _WindowPlan.from_config(config)
    if window_mesh is not None:
        if window_axis not in window_mesh.shape:
            raise ValueError(f"window_axis={window_axis!r} is not an axis of window_mesh {dict(window_mesh.shape)}")
        plan = _pad_windows(plan, plan.chunk_size * window_mesh.shape[window_axis])
    return _co_denoise(eps_fn, schedule, plan, stacked, shared_cond, latents, step_noise, window_mesh, window_axis)
