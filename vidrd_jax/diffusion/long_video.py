"""VidRD iterative long-video generation (paper 002 §4.3, eq. 5-8, Algorithm 1).

A video is generated clip by clip, N frames per clip; the last M frames of clip i-1 prompt clip i. Clip i starts from
clip i-1's *initial* latents ``z_T^{i-1}`` and is steered by clip i-1's per-step latents; both are kept in a
:class:`LongVideoState` (``trajectory`` holds only the M prompt-source frames, so memory is O(S·M), not O(S·N)).

Frame mapping ``src(j)``: the frame of clip i-1 that frame j of clip i reuses.

- ``"reverse"`` (the paper): ``src(j) = N-1-j``. Prompt frame 0 continues clip i-1's last frame.
- ``"forward"``: ``src(j) = (j + N - M) mod N``, i.e. prompt frame j < M continues clip i-1's frame N-M+j (the last M
  frames in their original order, an overlap that ``output="drop_prompt_frames"`` removes) and frame j >= M reuses
  frame j-M. Like "reverse" it is a permutation, so every initial latent of clip i-1 is reused exactly once.

Both mappings use ``src`` for all three strategies:

- eq. 5: clip 0 starts from i.i.d. noise ``z_T^{0,j} ~ N(0, I)``.
- FNR (eq. 6) and PNS (eq. 7): ``z_T^{i,j} = z_T^{i-1,src(j)}`` for j < M and
  ``z_T^{i,j} = alpha/sqrt(1+alpha^2) · z_T^{i-1,src(j)} + 1/sqrt(1+alpha^2) · eps^{i,j}``, ``eps ~ N(0, I)``, for
  j >= M (alpha = ``pns_alpha``; alpha = inf gives FNR, alpha = 0 fresh noise).
- DSG (eq. 8): at step s (s = 0 is the noisiest, S steps in all) and *before* the denoiser call, prompt frame
  m < M is replaced by clip i-1's latent ``x_t`` of frame ``src(m)`` at the same step s when
  ``s < (M - m) · (S / M) · beta``. This is eq. 8 with diffusion time measured in solver steps and the condition
  evaluated on the latent being replaced: the latent entering step s sits at time ``t = T (1 - s/S)`` and eq. 8's
  ``t > (1 - beta) T + beta T m / M`` becomes ``s/S < beta (M - m)/M``. Prompt frame m is therefore guided for
  ``ceil(beta · S · (M - m) / M)`` steps: 20, 15, 10, 5 with the defaults S=50, M=4, beta=0.4; beta = 0 never copies.
  Guidance weakens as m approaches M under both mappings (the frames next to the new content are freest).

Every step is an update of the config's solver (``solver``: DDIM or DPM-Solver++(2M); ``solvers.py`` says what the
three strategies need from a solver and which combinations are valid). One clip is one jitted call
(:func:`sample_clip`), compiled once whatever the number of clips: clip 0 runs the same program with a ``first`` flag
array that selects eq. 5 and disables DSG. :func:`generate_long_video` yields the
clips one by one so the caller can decode and stream each, and memory does not grow with the video length.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Iterator, Mapping, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from vidrd_jax.diffusion.ddim import EpsFn, check_step_noise, draw_noise, place_noise
from vidrd_jax.diffusion.guidance import check_guidance_fields, normalize_prompts
from vidrd_jax.diffusion.schedule import NoiseSchedule, check_int
from vidrd_jax.diffusion.solvers import SamplerConfig

FRAME_MAPPINGS = ("reverse", "forward")
OUTPUTS = ("all_frames", "drop_prompt_frames")


@dataclasses.dataclass(frozen=True)
class LongVideoConfig:
    """VidRD long-video settings (paper defaults). ``prompts``: one for all clips or one per clip."""

    prompts: tuple[str, ...]
    num_clips: int = 4
    num_frames: int = 8  # N
    num_prompt_frames: int = 4  # M
    pns_alpha: float = 4.0  # alpha of eq. 7 (math.inf: FNR only)
    dsg_beta: float = 0.4  # beta of eq. 8
    num_steps: int = 50  # S
    eta: float = 0.0
    guidance_scale: float = 10.0
    negative_prompt: str = "watermark"
    frame_mapping: str = "reverse"
    output: str = "all_frames"
    solver: str = "ddim"  # solvers.SOLVERS

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", normalize_prompts(self.prompts))
        check_int("num_clips", self.num_clips, 1)
        if len(self.prompts) not in (1, self.num_clips):
            raise ValueError(f"prompts has {len(self.prompts)} entries: give 1 (shared by all clips) or one per clip "
                             f"(num_clips={self.num_clips})")
        check_int("num_frames", self.num_frames, 1)
        check_int("num_prompt_frames", self.num_prompt_frames, 0, self.num_frames)
        if not isinstance(self.pns_alpha, (int, float)) or not self.pns_alpha >= 0:
            raise ValueError(f"pns_alpha must be a float >= 0 (inf allowed), got {self.pns_alpha!r}")
        if not isinstance(self.dsg_beta, (int, float)) or not 0.0 <= self.dsg_beta <= 1.0:
            raise ValueError(f"dsg_beta must be a float in [0, 1], got {self.dsg_beta!r}")
        SamplerConfig(self.num_steps, self.eta, self.solver)
        check_guidance_fields(self.guidance_scale, self.negative_prompt)
        if self.frame_mapping not in FRAME_MAPPINGS:
            raise ValueError(f"frame_mapping must be one of {FRAME_MAPPINGS}, got {self.frame_mapping!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {self.output!r}")
        if self.output == "drop_prompt_frames" and self.num_prompt_frames == self.num_frames:
            raise ValueError(f"output='drop_prompt_frames' with num_prompt_frames == num_frames={self.num_frames} "
                             "would drop every frame of clips >= 1")

    @property
    def sampler(self) -> SamplerConfig:
        return SamplerConfig(self.num_steps, self.eta, self.solver)

    def prompt_index(self, clip: int) -> int:
        """Index into ``prompts`` (and the matching conds) for clip ``clip``."""
        return 0 if len(self.prompts) == 1 else clip

    def source_frames(self) -> tuple[int, ...]:
        """``src(j)`` for j = 0..N-1: the frame of the previous clip that frame j reuses (module docstring)."""
        n, m = self.num_frames, self.num_prompt_frames
        if self.frame_mapping == "reverse":
            return tuple(n - 1 - j for j in range(n))
        return tuple((j + n - m) % n for j in range(n))

    def guided_steps(self) -> tuple[int, ...]:
        """DSG steps per prompt frame m: the number of s in [0, S) with ``s < (M - m) · (S / M) · beta``."""
        s, m = self.num_steps, self.num_prompt_frames
        # ceil(x) counts the integers s >= 0 with s < x; the 1e-9 keeps float rounding of an integral x (e.g.
        # 0.4 · 50 · 4 / 4 = 20) from adding a step.
        return tuple(min(s, max(0, math.ceil(self.dsg_beta * s * (m - k) / m - 1e-9))) for k in range(m))

    def pns_coefficients(self) -> tuple[float, float]:
        """``(alpha / sqrt(1 + alpha^2), 1 / sqrt(1 + alpha^2))`` of eq. 7; ``(1, 0)`` for alpha = inf."""
        if math.isinf(self.pns_alpha):
            return 1.0, 0.0
        norm = math.sqrt(1.0 + self.pns_alpha ** 2)
        return self.pns_alpha / norm, 1.0 / norm


@dataclasses.dataclass(frozen=True)
class _ClipPlan:
    """The static (compile-time) part of a clip: what shapes the program. The frame mapping, DSG steps and PNS
    coefficients are traced (:class:`_ClipSettings`), so sweeping them reuses one compiled program."""

    num_frames: int
    num_prompt_frames: int
    sampler: SamplerConfig

    @classmethod
    def from_config(cls, config: LongVideoConfig) -> "_ClipPlan":
        return cls(config.num_frames, config.num_prompt_frames, config.sampler)


class _ClipSettings(NamedTuple):
    source_frames: jax.Array  # int32 [N]
    guided_steps: jax.Array  # int32 [M]
    pns_coefficients: jax.Array  # float32 [2]

    @classmethod
    def from_config(cls, config: LongVideoConfig) -> "_ClipSettings":
        return cls(jnp.asarray(config.source_frames(), jnp.int32), jnp.asarray(config.guided_steps(), jnp.int32),
                   jnp.asarray(config.pns_coefficients(), jnp.float32))


class LongVideoState(NamedTuple):
    """What clip i needs from clip i-1."""

    init_latents: jax.Array  # [B, N, h, w, C]: z_T of the clip (after eq. 5-7)
    trajectory: jax.Array  # [S, B, M, h, w, C]: x_t entering each step, frames N-M .. N-1 (after DSG)


class ClipResult(NamedTuple):
    latents: jax.Array  # [B, N, h, w, C]: z_0 of every frame of the clip
    state: LongVideoState
    guided_steps: jax.Array  # int32 [M]: DSG steps applied to each prompt frame (all 0 for clip 0)


class ClipOutput(NamedTuple):
    index: int
    latents: jax.Array  # [B, N or N-M, h, w, C] (``config.output``)
    guided_steps: jax.Array  # int32 [M]


def _frame_mask(mask: np.ndarray | jax.Array) -> jax.Array:
    """[F] bool -> [1, F, 1, 1, 1] for selecting frames of a [B, F, h, w, C] array."""
    return jnp.asarray(mask)[None, :, None, None, None]


@functools.partial(jax.jit, static_argnames=("eps_fn", "schedule", "plan"))
def _sample_clip(eps_fn: EpsFn, schedule: NoiseSchedule, plan: _ClipPlan, settings: _ClipSettings, cond: Any,
                 first: jax.Array, noise: jax.Array, prev: LongVideoState, step_noise: jax.Array | None) -> ClipResult:
    n, m, steps = plan.num_frames, plan.num_prompt_frames, plan.sampler.num_steps
    src = settings.source_frames
    prompt_src = src[:m] - (n - m)  # positions of src(0..M-1) inside the trajectory's frames N-M .. N-1
    solver = plan.sampler.make_solver()
    tables = jax.tree.map(jnp.asarray, solver.tables(schedule, steps))

    # eq. 5-7: initial latents.
    reused = prev.init_latents[:, src]
    pns_scale, noise_scale = settings.pns_coefficients[0], settings.pns_coefficients[1]
    init = jnp.where(_frame_mask(np.arange(n) < m), reused, pns_scale * reused + noise_scale * noise)
    init = jnp.where(first, noise, init).astype(noise.dtype)

    # eq. 8: guide[s, k] = prompt frame k takes the previous clip's latent at step s.
    guide = (jnp.arange(steps)[:, None] < settings.guided_steps[None, :]) & jnp.logical_not(first)

    def body(carry, xs):
        x, state = carry
        row, prev_x, guide_s, step_noise_s = xs
        prompt = jnp.where(_frame_mask(guide_s), prev_x[:, prompt_src], x[:, :m])
        x = jnp.concatenate([prompt.astype(x.dtype), x[:, m:]], axis=1)
        return solver.step(schedule, row, state, x, eps_fn(x, row.timesteps, cond), step_noise_s), x[:, n - m:]

    xs = (tables, prev.trajectory, guide, step_noise)
    (latents, _), trajectory = jax.lax.scan(body, (init, solver.init_state(init)), xs)
    return ClipResult(latents, LongVideoState(init, trajectory), guide.sum(axis=0, dtype=jnp.int32))


def sample_clip(eps_fn: EpsFn, schedule: NoiseSchedule, config: LongVideoConfig, cond: Any, noise: jax.Array,
                state: LongVideoState | None = None, step_noise: jax.Array | None = None) -> ClipResult:
    """Samples one clip (one jitted call, one ``lax.scan`` over the solver's steps).

    ``noise`` [B, N, h, w, C] is z_T for clip 0 (``state=None``, eq. 5) and PNS's eps (eq. 7) for later clips, whose
    ``state`` is the previous clip's ``ClipResult.state``. ``step_noise`` [S, B, N, h, w, C] is required iff eta > 0.
    """
    noise = jnp.asarray(noise)
    shape = tuple(noise.shape)
    if len(shape) != 5 or shape[1] != config.num_frames:
        raise ValueError(f"noise must be [B, num_frames={config.num_frames}, h, w, C], got shape {shape}")
    check_step_noise(step_noise, shape, config.sampler)
    m, steps = config.num_prompt_frames, config.num_steps
    trajectory_shape = (steps, shape[0], m) + shape[2:]
    first = state is None
    if first:
        state = LongVideoState(jnp.zeros(shape, noise.dtype), jnp.zeros(trajectory_shape, noise.dtype))
    elif tuple(state.init_latents.shape) != shape or tuple(state.trajectory.shape) != trajectory_shape:
        raise ValueError(f"state does not match this clip: init_latents {tuple(state.init_latents.shape)} (want "
                         f"{shape}), trajectory {tuple(state.trajectory.shape)} (want {trajectory_shape})")
    return _sample_clip(eps_fn, schedule, _ClipPlan.from_config(config), _ClipSettings.from_config(config), cond,
                        jnp.asarray(first), noise, state, step_noise)


def generate_long_video(eps_fn: EpsFn, schedule: NoiseSchedule, config: LongVideoConfig, conds: Sequence[Any], *,
                        shared_cond: Mapping[str, Any] | None = None, key: jax.Array | None = None,
                        latent_shape: Sequence[int] | None = None, noise: Sequence[jax.Array] | None = None,
                        step_noise: Sequence[jax.Array] | None = None, progress: bool = True,
                        batch_sharding: jax.sharding.NamedSharding | None = None) -> Iterator[ClipOutput]:
    """Yields ``config.num_clips`` clips of latents, one jitted call each (Algorithm 1).

    ``conds[k]`` is the denoiser cond for ``config.prompts[k]`` (same length; clip i uses
    ``conds[config.prompt_index(i)]``, merged as ``{**shared_cond, **conds[k]}`` when ``shared_cond`` (e.g. params
    and the negative embedding) is given). Randomness: either ``key`` with ``latent_shape`` [B, N, h, w, C] (clip i
    draws from ``fold_in(key, i)``), or explicit arrays: ``noise[i]`` [B, N, h, w, C] (clip 0: z_T; later clips: PNS
    eps) and, iff eta > 0, ``step_noise[i]`` [S, B, N, h, w, C]. Clip i >= 1 drops its first M frames when
    ``config.output == "drop_prompt_frames"``. ``batch_sharding`` (a ``NamedSharding`` of the batch axis) places each
    clip's noise with it, so the jitted clips run data-parallel and return batch-sharded latents.
    """
    conds = list(conds)
    if len(conds) != len(config.prompts):
        raise ValueError(f"conds has {len(conds)} entries but config.prompts has {len(config.prompts)}")
    if noise is None:
        if key is None or latent_shape is None:
            raise ValueError("generate_long_video: give noise (one array per clip), or key and latent_shape")
        shape = tuple(int(d) for d in latent_shape)
    else:
        if len(noise) != config.num_clips:
            raise ValueError(f"noise has {len(noise)} entries, want num_clips={config.num_clips}")
        shape = tuple(np.shape(noise[0]))
    if len(shape) != 5 or shape[1] != config.num_frames:
        raise ValueError(f"latent shape must be [B, num_frames={config.num_frames}, h, w, C], got {shape}")
    if config.eta > 0 and step_noise is None and key is None:
        raise ValueError(f"eta={config.eta} > 0 needs step_noise (one array per clip) or a key")
    if step_noise is not None and len(step_noise) != config.num_clips:
        raise ValueError(f"step_noise has {len(step_noise)} entries, want num_clips={config.num_clips}")
    if step_noise is not None and config.eta == 0:
        raise ValueError("step_noise must be None when eta == 0")

    state = None
    for i in tqdm(range(config.num_clips), desc="clips", disable=not progress):
        drawn_noise, drawn_step_noise = draw_noise(jax.random.fold_in(key, i), shape, config.sampler) \
            if key is not None else (None, None)
        clip_noise = noise[i] if noise is not None else drawn_noise
        clip_step_noise = step_noise[i] if step_noise is not None else drawn_step_noise
        clip_noise, clip_step_noise = place_noise(clip_noise, clip_step_noise, batch_sharding)
        cond = conds[config.prompt_index(i)]
        if shared_cond is not None:
            cond = {**shared_cond, **cond}
        result = sample_clip(eps_fn, schedule, config, cond, clip_noise, state, clip_step_noise)
        state = result.state
        latents = result.latents
        if i > 0 and config.output == "drop_prompt_frames":
            latents = latents[:, config.num_prompt_frames:]
        yield ClipOutput(i, latents, result.guided_steps)
