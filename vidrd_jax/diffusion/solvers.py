"""Solvers: how a sampler turns the denoiser's output at one step into the latents of the next (one small interface).

A :class:`Solver` is a frozen, hashable value (a static argument of the jitted samplers) with three pure functions:

- ``tables(schedule, num_steps)``: per-step constants as a NamedTuple of host arrays ``[S]``, noisiest step first;
  its first field is ``timesteps`` (int32), the denoiser's ``t``. The samplers scan over the rows.
- ``init_state(x)``: the solver's carry entering step 0, a pytree of arrays shaped like ``x`` (``()`` for none).
- ``step(schedule, row, state, x, model_output, noise) -> (x_next, state)``: one update; ``row`` is the tables'
  row of this step, ``noise`` the step's noise (``None`` unless the solver is stochastic).

Two solvers (``SOLVERS``; :class:`SamplerConfig` ``solver`` picks one):

- ``"ddim"`` (Song et al. 2021, eq. 12): first order, no state; ``eta > 0`` adds the DDPM-like variance (per-step
  noise). With ``set_alpha_to_one=False`` the last step goes to ``alphas_cumprod[0]`` (diffusers' DDIMScheduler).
- ``"dpm_solver++"``: DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Alg. 2, midpoint form) as diffusers'
  ``DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2, solver_type="midpoint",
  lower_order_final=True, final_sigmas_type="zero")`` on the same timesteps: a second-order multistep update in
  ``lambda = log(alpha / sigma)`` from the data predictions ``x0`` of this and the previous step (the state: the
  previous ``x0``, per element); the first step, and the last (to sigma 0, so it returns that step's ``x0``), are
  first order. Deterministic only: ``eta`` must be 0. As in diffusers, a zero-SNR first timestep
  (``rescale_betas_zero_snr``) is clamped to ``abar = 2^-24``.

What VidRD's strategies and co-denoising need from a solver, and why both solvers qualify:

- FNR / PNS (eq. 6-7) reuse the previous clip's ``z_T`` as the next clip's start: the timestep table must be the
  same for every clip (it depends only on the schedule and the step count) and ``x_T ~ N(0, I)`` (both are
  variance-preserving with unit initial scale).
- DSG (eq. 8) replaces a prompt frame's latent entering step s by the previous clip's at the same step, *before*
  the denoiser call. A solver whose state is built only from this clip's step inputs and denoiser outputs stays
  consistent: DSG guides a prefix of the steps, so while a frame is guided its inputs lie on the previous clip's
  path and DPM-Solver++'s previous x0 is this clip's denoiser at the previous point of that path; at the first
  unguided step the frame branches off with a consistent history. Copying the previous clip's state instead would
  difference two denoisers (two prompts) in the second-order term. The state must be per frame (shaped like ``x``).
- Co-denoising (eq. 19) fuses each frame's ``x_{t-1}`` over the windows holding it; it fuses the state with the same
  weights. Both updates are linear in ``x_t``, the state and this step's ``x0``, so fusing the state equals each
  window keeping its own.

So every (solver, strategy) pair is valid except stochastic DPM-Solver++: ``solver="dpm_solver++"`` with ``eta > 0``
is refused by :class:`SamplerConfig` (naming ``eta``).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from vidrd_jax.diffusion.ddim import EpsFn, check_step_noise, draw_noise, predict_x0_and_eps
from vidrd_jax.diffusion.schedule import NoiseSchedule, check_int

SOLVERS = ("ddim", "dpm_solver++")


class Solver(Protocol):
    """The interface of the module docstring."""

    def tables(self, schedule: NoiseSchedule, num_steps: int) -> Any: ...

    def init_state(self, x: jax.Array) -> Any: ...

    def step(self, schedule: NoiseSchedule, row: Any, state: Any, x: jax.Array, model_output: jax.Array,
             noise: jax.Array | None) -> tuple[jax.Array, Any]: ...


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Sampling knobs: number of steps, the solver (``SOLVERS``) and DDIM's eta (0 = deterministic DDIM, 1 =
    DDPM-like variance; only ``"ddim"`` takes eta > 0)."""

    num_steps: int = 50
    eta: float = 0.0
    solver: str = "ddim"

    def __post_init__(self) -> None:
        check_int("num_steps", self.num_steps, 1)
        if not (isinstance(self.eta, (int, float)) and math.isfinite(self.eta) and self.eta >= 0):
            raise ValueError(f"eta must be a finite float >= 0, got {self.eta!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {SOLVERS}, got {self.solver!r}")
        if self.solver != "ddim" and self.eta > 0:
            raise ValueError(f"eta must be 0 with solver={self.solver!r} (only 'ddim' is stochastic), got {self.eta!r}")

    def make_solver(self) -> Solver:
        return DDIMSolver(float(self.eta)) if self.solver == "ddim" else DPMSolverPP2M()


# --- DDIM ------------------------------------------------------------------------------------------------------

class DDIMTables(NamedTuple):
    """Per-step constants of a DDIM run, noisiest step first (host numpy arrays)."""

    timesteps: np.ndarray  # int32 [S]
    alphas: np.ndarray  # float32 [S]: abar at the step's timestep
    alphas_prev: np.ndarray  # float32 [S]: abar at the next timestep, final_alpha_cumprod for the last step


def ddim_tables(schedule: NoiseSchedule, num_steps: int) -> DDIMTables:
    """Timesteps and ``abar_t``/``abar_{t-1}`` for each DDIM step.

    The previous timestep is the next one in the table; this equals diffusers' ``t - T // S`` for "leading" spacing
    (always) and for "trailing" spacing whenever S divides T.
    """
    timesteps = schedule.ddim_timesteps(num_steps)
    alphas_cumprod = schedule.alphas_cumprod
    alphas = alphas_cumprod[timesteps]
    alphas_prev = np.append(alphas_cumprod[timesteps[1:]], schedule.final_alpha_cumprod)
    return DDIMTables(timesteps.astype(np.int32), alphas.astype(np.float32), alphas_prev.astype(np.float32))


def ddim_step(sample: jax.Array, model_output: jax.Array, alpha: jax.Array, alpha_prev: jax.Array, *,
              prediction_type: str, eta: float = 0.0,
              noise: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """One DDIM update ``x_t -> x_{t-1}`` (Song et al. eq. 12); returns ``(x_{t-1}, x0_hat)``.

    ``alpha``/``alpha_prev`` are ``abar`` at this and the next timestep; ``eta`` is static (0: deterministic);
    ``noise`` (same shape as ``sample``) is required when ``eta > 0``.
    """
    model_output = model_output.astype(jnp.promote_types(sample.dtype, jnp.float32))
    x0, eps = predict_x0_and_eps(sample, model_output, alpha, prediction_type)
    if eta > 0:
        if noise is None:
            raise ValueError(f"ddim_step: eta={eta} > 0 needs a noise array")
        variance = (1.0 - alpha_prev) / (1.0 - alpha) * (1.0 - alpha / alpha_prev)
        std = eta * jnp.sqrt(variance)
    else:
        std = jnp.zeros((), jnp.float32)
    direction = jnp.sqrt(jnp.maximum(1.0 - alpha_prev - std ** 2, 0.0)) * eps
    prev = jnp.sqrt(alpha_prev) * x0 + direction
    if eta > 0:
        prev = prev + std * noise
    return prev.astype(sample.dtype), x0


@dataclasses.dataclass(frozen=True)
class DDIMSolver:
    """DDIM (module docstring); ``eta`` is static."""

    eta: float = 0.0

    def tables(self, schedule: NoiseSchedule, num_steps: int) -> DDIMTables:
        return ddim_tables(schedule, num_steps)

    def init_state(self, x: jax.Array) -> tuple[()]:
        return ()

    def step(self, schedule: NoiseSchedule, row: DDIMTables, state: tuple[()], x: jax.Array, model_output: jax.Array,
             noise: jax.Array | None) -> tuple[jax.Array, tuple[()]]:
        x_next, _ = ddim_step(x, model_output, row.alphas, row.alphas_prev, prediction_type=schedule.prediction_type,
                              eta=self.eta, noise=noise)
        return x_next, state


# --- DPM-Solver++(2M) ------------------------------------------------------------------------------------------

class DPMSolverTables(NamedTuple):
    """Per-step constants of DPM-Solver++(2M): ``x_next = sample · x + data · x0 + diff · (x0 - x0_prev)``."""

    timesteps: np.ndarray  # int32 [S]
    alphas: np.ndarray  # float32 [S]: abar at the step's timestep (turns the model output into x0)
    sample: np.ndarray  # float32 [S]: sigma_next / sigma
    data: np.ndarray  # float32 [S]: alpha_next (1 - exp(-h))
    diff: np.ndarray  # float32 [S]: data / (2 r) on second-order steps, 0 on first-order ones


def dpm_solver_tables(schedule: NoiseSchedule, num_steps: int) -> DPMSolverTables:
    """The coefficients of diffusers' midpoint DPM-Solver++(2M) update, in float64 on the host (module docstring)."""
    timesteps = schedule.ddim_timesteps(num_steps)
    abar = np.maximum(schedule.alphas_cumprod[timesteps], 2.0 ** -24)
    alpha, sigma = np.append(np.sqrt(abar), 1.0), np.append(np.sqrt(1.0 - abar), 0.0)  # the last step goes to sigma 0
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sigma)  # lambda; +inf at sigma 0
    h = lam[1:] - lam[:-1]
    data = -alpha[1:] * np.expm1(-h)
    diff = np.zeros(num_steps)
    second = np.arange(num_steps) >= 1
    second[-1] = False  # the step to sigma 0 is first order (final_sigmas_type="zero")
    r = (lam[1:-1] - lam[:-2])[second[1:]] / h[second]  # h_{s-1} / h_s
    diff[second] = 0.5 * data[second] / r
    return DPMSolverTables(timesteps.astype(np.int32), abar.astype(np.float32),
                           (sigma[1:] / sigma[:-1]).astype(np.float32), data.astype(np.float32),
                           diff.astype(np.float32))


@dataclasses.dataclass(frozen=True)
class DPMSolverPP2M:
    """DPM-Solver++(2M) (module docstring); the state is the previous step's x0 prediction."""

    def tables(self, schedule: NoiseSchedule, num_steps: int) -> DPMSolverTables:
        return dpm_solver_tables(schedule, num_steps)

    def init_state(self, x: jax.Array) -> jax.Array:
        return jnp.zeros(x.shape, jnp.promote_types(x.dtype, jnp.float32))

    def step(self, schedule: NoiseSchedule, row: DPMSolverTables, state: jax.Array, x: jax.Array,
             model_output: jax.Array, noise: jax.Array | None) -> tuple[jax.Array, jax.Array]:
        sample = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        x0, _ = predict_x0_and_eps(sample, model_output.astype(sample.dtype), row.alphas, schedule.prediction_type)
        x_next = row.sample * sample + row.data * x0 + row.diff * (x0 - state)
        return x_next.astype(x.dtype), x0


# --- the plain sampler -----------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("eps_fn", "schedule", "config"))
def _sample_loop(eps_fn: EpsFn, schedule: NoiseSchedule, config: SamplerConfig, cond: Any, latents: jax.Array,
                 step_noise: jax.Array | None) -> jax.Array:
    solver = config.make_solver()

    def body(carry, xs):
        x, state = carry
        row, noise = xs
        return solver.step(schedule, row, state, x, eps_fn(x, row.timesteps, cond), noise), None

    tables = jax.tree.map(jnp.asarray, solver.tables(schedule, config.num_steps))
    (latents, _), _ = jax.lax.scan(body, (latents, solver.init_state(latents)), (tables, step_noise))
    return latents


def ddim_sample(eps_fn: EpsFn, schedule: NoiseSchedule, config: SamplerConfig, cond: Any, *,
                latents: jax.Array | None = None, step_noise: jax.Array | None = None,
                key: jax.Array | None = None, shape: tuple[int, ...] | None = None) -> jax.Array:
    """Full sampling with ``config.solver`` (DDIM by default): one ``lax.scan`` over the steps inside ``jit``; returns
    the final latents.

    Give either ``latents`` (x_T) and, if ``config.eta > 0``, ``step_noise`` [S, *shape]; or ``key`` and ``shape``
    to draw them (:func:`draw_noise`). The program is compiled once per (eps_fn, schedule, config, shapes): build
    ``eps_fn`` once and pass changing values (params, embeddings) through ``cond``.
    """
    if latents is None:
        if key is None or shape is None:
            raise ValueError("ddim_sample: give latents (and step_noise if eta > 0), or key and shape")
        latents, step_noise = draw_noise(key, tuple(shape), config)
    elif step_noise is None and config.eta > 0:
        if key is None:
            raise ValueError(f"ddim_sample: eta={config.eta} > 0 needs step_noise or a key")
        step_noise = draw_noise(key, tuple(latents.shape), config)[1]
    check_step_noise(step_noise, tuple(latents.shape), config)
    return _sample_loop(eps_fn, schedule, config, cond, jnp.asarray(latents), step_noise)
