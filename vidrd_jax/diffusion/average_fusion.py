"""Average fusion (paper 000 §3.2, eq. 10-12): a step-k latent built from n sampled backgrounds and one foreground.

At DDIM step ``k`` the latents of ``n`` stochastic trajectories from the same start give the backgrounds, the
reference trajectory's latent ``x_k`` the foreground; with the foreground mask ``m`` (on the latent grid, binary)::

    r'_k = w1 / n · Σ_i (1 - m) ⊗ x_k^(i)  +  w2 · m ⊗ x_k          (eq. 11)

and the remaining steps ``k -> 0`` denoise ``r'_k`` into ``r'`` (eq. 12). ``(w1, w2)`` are fixed, or fitted
(:func:`fitted_weights`): averaging n partly independent latents shrinks the background's spread (by up to √n for
independent noise), which the later steps would read as a lower noise level; the fitted weights give each region of
``r'_k`` the root-mean-square of the reference latent in that region.

:func:`sample_steps` runs any contiguous range of a sampler's steps (``0 -> k`` and ``k -> S``) with any solver
(:mod:`vidrd_jax.diffusion.solvers`), on the same ``eps_fn(z, t, cond)`` closures as the other samplers. Eq. 11 fuses
latents only, so the framework fuses at a DDIM step (stateless; a multistep solver's state would need fusing too).
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from vidrd_jax.diffusion.ddim import EpsFn, check_step_noise
from vidrd_jax.diffusion.schedule import NoiseSchedule
from vidrd_jax.diffusion.solvers import SamplerConfig


def _check(backgrounds: jax.Array, foreground: jax.Array, fg_mask: jax.Array) -> None:
    if backgrounds.ndim != foreground.ndim + 1 or backgrounds.shape[1:] != foreground.shape:
        raise ValueError(f"backgrounds must be [n, *foreground.shape] = [n, *{foreground.shape}], got "
                         f"{backgrounds.shape}")
    try:
        broadcast = jnp.broadcast_shapes(fg_mask.shape, foreground.shape)
    except ValueError:
        broadcast = None
    if broadcast != foreground.shape:
        raise ValueError(f"fg_mask {fg_mask.shape} does not broadcast to the foreground {foreground.shape}")


def average_fusion(backgrounds: jax.Array, foreground: jax.Array, fg_mask: jax.Array,
                   weights: tuple[float, float] | jax.Array) -> jax.Array:
    """Eq. 11: ``w1 / n · Σ_i (1 - m) ⊗ backgrounds[i] + w2 · m ⊗ foreground``.

    ``backgrounds`` ``[n, *S]`` (step-k latents of n sampled trajectories), ``foreground`` ``[*S]`` (the reference's
    step-k latent), ``fg_mask`` binary, broadcastable to ``S`` (e.g. ``[B, F, h, w, 1]``), ``weights`` ``(w1, w2)``.
    """
    backgrounds, foreground = jnp.asarray(backgrounds), jnp.asarray(foreground)
    fg_mask = jnp.asarray(fg_mask, foreground.dtype)
    _check(backgrounds, foreground, fg_mask)
    w1, w2 = weights[0], weights[1]
    n = backgrounds.shape[0]
    return w1 * jnp.sum((1 - fg_mask) * backgrounds, axis=0) / n + w2 * (fg_mask * foreground)


def fitted_weights(backgrounds: jax.Array, foreground: jax.Array, fg_mask: jax.Array) -> jax.Array:
    """Learned ``(w1, w2)`` [2]: each region of eq. 11's output gets the reference latent's root-mean-square there
    (the least-squares fit of the regions' second moments; a region the mask leaves empty keeps weight 1)."""
    backgrounds, foreground = jnp.asarray(backgrounds), jnp.asarray(foreground)
    fg_mask = jnp.asarray(fg_mask, foreground.dtype)
    _check(backgrounds, foreground, fg_mask)
    fg_mask = jnp.broadcast_to(fg_mask, foreground.shape)
    mean_bg = jnp.mean(backgrounds, axis=0)

    def ratio(region: jax.Array, fused: jax.Array) -> jax.Array:
        target, current = jnp.sum(region * foreground ** 2), jnp.sum(region * fused ** 2)
        return jnp.where(current > 0, jnp.sqrt(target / jnp.where(current > 0, current, 1.0)), 1.0)

    return jnp.stack([ratio(1 - fg_mask, mean_bg), ratio(fg_mask, foreground)])


@functools.partial(jax.jit, static_argnames=("eps_fn", "schedule", "config", "start", "stop"))
def _steps(eps_fn: EpsFn, schedule: NoiseSchedule, config: SamplerConfig, start: int, stop: int, cond: Any,
           latents: jax.Array, state: Any, step_noise: jax.Array | None) -> tuple[jax.Array, Any]:
    solver = config.make_solver()

    def body(carry, xs):
        x, solver_state = carry
        row, noise = xs
        return solver.step(schedule, row, solver_state, x, eps_fn(x, row.timesteps, cond), noise), None

    tables = jax.tree.map(lambda a: jnp.asarray(a[start:stop]), solver.tables(schedule, config.num_steps))
    noise = None if step_noise is None else step_noise[start:stop]
    (latents, state), _ = jax.lax.scan(body, (latents, state), (tables, noise))
    return latents, state


def sample_steps(eps_fn: EpsFn, schedule: NoiseSchedule, config: SamplerConfig, cond: Any, latents: jax.Array, *,
                 start: int, stop: int, state: Any = None, step_noise: jax.Array | None = None
                 ) -> tuple[jax.Array, Any]:
    """Steps ``start .. stop - 1`` of ``config`` 's sampler from ``latents`` (the latent entering step ``start``);
    returns ``(latents, solver state)``. ``state`` is the solver's carry entering ``start`` (None: its initial state,
    right at step 0 and for stateless DDIM); ``step_noise`` ``[num_steps, *shape]`` when ``config.eta > 0``.
    ``start=0, stop=num_steps`` is :func:`vidrd_jax.diffusion.solvers.ddim_sample`; consecutive ranges chain."""
    if not 0 <= start <= stop <= config.num_steps:
        raise ValueError(f"steps: need 0 <= start <= stop <= num_steps={config.num_steps}, got {start}, {stop}")
    check_step_noise(step_noise, tuple(jnp.shape(latents)), config)
    latents = jnp.asarray(latents)
    if state is None:
        state = config.make_solver().init_state(latents)
    if start == stop:
        return latents, state
    return _steps(eps_fn, schedule, config, start, stop, cond, latents, state, step_noise)


def timestep_at(schedule: NoiseSchedule, config: SamplerConfig, index: int) -> int:
    """The timestep of step ``index`` of ``config`` 's sampler (the noise level of the latent entering it)."""
    return int(config.make_solver().tables(schedule, config.num_steps).timesteps[index])
