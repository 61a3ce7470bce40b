"""DDIM (Song et al., 2021) on top of a denoiser function, plus the forward process used for training.

The denoiser is ``eps_fn(z, t, cond) -> model_output``: ``z`` latents ``[B, F, h, w, C]``, ``t`` an int32 scalar
timestep, ``cond`` any pytree (text embeddings, model params, ...: everything that must be a jit *argument* rather
than a constant baked into the program). ``model_output`` is an epsilon or a v prediction
(``schedule.prediction_type``).

Randomness is explicit: samplers take the initial latents and, when ``eta > 0``, one noise array per step, so a run
can be replayed bit for bit elsewhere; :func:`draw_noise` draws both from a PRNG key.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vidrd_jax.diffusion.schedule import DDIMConfig, NoiseSchedule, ddim_tables

EpsFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def _per_example(values: jax.Array, ndim: int) -> jax.Array:
    """[B] -> [B, 1, ..., 1] with ``ndim`` dims in total."""
    return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def _alphas_at(schedule: NoiseSchedule, timesteps: jax.Array, ndim: int) -> jax.Array:
    alphas_cumprod = jnp.asarray(schedule.alphas_cumprod, jnp.float32)
    return _per_example(alphas_cumprod[jnp.asarray(timesteps, jnp.int32)], ndim)


def add_noise(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
    """Samples ``q(x_t | x_0)`` (eq. 2): ``sqrt(abar_t) x0 + sqrt(1 - abar_t) noise``; ``timesteps`` int [B]."""
    alpha = _alphas_at(schedule, timesteps, x0.ndim)
    return (jnp.sqrt(alpha) * x0 + jnp.sqrt(1.0 - alpha) * noise).astype(x0.dtype)


def get_velocity(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
    """The v-prediction target ``sqrt(abar_t) noise - sqrt(1 - abar_t) x0``; ``timesteps`` int [B]."""
    alpha = _alphas_at(schedule, timesteps, x0.ndim)
    return (jnp.sqrt(alpha) * noise - jnp.sqrt(1.0 - alpha) * x0).astype(x0.dtype)


def training_target(schedule: NoiseSchedule, x0: jax.Array, noise: jax.Array, timesteps: jax.Array) -> jax.Array:
    """The regression target ``y`` of eq. 3 for ``schedule.prediction_type``: the noise, or the velocity."""
    if schedule.prediction_type == "epsilon":
        return noise
    return get_velocity(schedule, x0, noise, timesteps)


def sample_training_timesteps(key: jax.Array, batch: int, num_train_timesteps: int,
                              logit_normal: tuple[float, float] | None = None) -> jax.Array:
    """Training timesteps ``[B]`` (int32): ``U{0, T-1}`` (eq. 3), or with ``logit_normal = (m, s)``
    ``floor(T * sigmoid(m + s * n))``, ``n ~ N(0, 1)`` (Esser et al. 2024, SD3 §3.1; ``m > 0`` puts more of the
    batch at high noise, where the layout of a clip is decided)."""
    if logit_normal is None:
        return jax.random.randint(key, (batch,), 0, num_train_timesteps)
    mean, std = logit_normal
    u = jax.nn.sigmoid(mean + std * jax.random.normal(key, (batch,), jnp.float32))
    return jnp.minimum((u * num_train_timesteps).astype(jnp.int32), num_train_timesteps - 1)


def min_snr_weight(schedule: NoiseSchedule, timesteps: jax.Array, gamma: float) -> jax.Array:
    """Min-SNR-γ loss weights ``[B]`` (Hang et al. 2023): ``min(SNR_t, γ) / SNR_t`` for epsilon targets and
    ``min(SNR_t, γ) / (SNR_t + 1)`` for velocity targets, with ``SNR_t = abar_t / (1 - abar_t)``; γ = 5 in the
    paper. It stops the many easy low-noise steps from dominating eq. 3, which speeds up training severalfold."""
    abar = jnp.asarray(schedule.alphas_cumprod, jnp.float32)[jnp.asarray(timesteps, jnp.int32)]
    snr = abar / (1.0 - abar)
    clipped = jnp.minimum(snr, gamma)
    return clipped / (snr + 1.0) if schedule.prediction_type == "v_prediction" else clipped / snr


def predict_x0_and_eps(sample: jax.Array, model_output: jax.Array, alpha: jax.Array,
                       prediction_type: str) -> tuple[jax.Array, jax.Array]:
    """``(x0_hat, eps_hat)`` from an epsilon or v prediction at noise level ``alpha = abar_t``."""
    sqrt_a, sqrt_1ma = jnp.sqrt(alpha), jnp.sqrt(1.0 - alpha)
    if prediction_type == "epsilon":
        return (sample - sqrt_1ma * model_output) / sqrt_a, model_output
    if prediction_type == "v_prediction":
        return sqrt_a * sample - sqrt_1ma * model_output, sqrt_a * model_output + sqrt_1ma * sample
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


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


def draw_noise(key: jax.Array, shape: tuple[int, ...], config: DDIMConfig,
               dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array | None]:
    """``(initial latents, per-step noise [S, *shape] or None when eta == 0)`` drawn from ``key``."""
    key_init, key_steps = jax.random.split(key)
    latents = jax.random.normal(key_init, shape, dtype)
    step_noise = jax.random.normal(key_steps, (config.num_steps,) + tuple(shape), dtype) if config.eta > 0 else None
    return latents, step_noise


def check_step_noise(step_noise: Any, shape: tuple[int, ...], config: DDIMConfig, name: str = "step_noise") -> None:
    """Raises unless ``step_noise`` is ``[num_steps, *shape]`` when eta > 0 and None when eta == 0."""
    if config.eta > 0:
        expected = (config.num_steps,) + tuple(shape)
        if step_noise is None or tuple(np.shape(step_noise)) != expected:
            got = None if step_noise is None else tuple(np.shape(step_noise))
            raise ValueError(f"{name} must have shape {expected} (eta={config.eta} > 0), got {got}")
    elif step_noise is not None:
        raise ValueError(f"{name} must be None when eta == 0")


@functools.partial(jax.jit, static_argnames=("eps_fn", "schedule", "config"))
def _ddim_loop(eps_fn: EpsFn, schedule: NoiseSchedule, config: DDIMConfig, cond: Any, latents: jax.Array,
               step_noise: jax.Array | None) -> jax.Array:
    tables = ddim_tables(schedule, config.num_steps)

    def body(x, xs):
        t, alpha, alpha_prev, noise = xs
        x, _ = ddim_step(x, eps_fn(x, t, cond), alpha, alpha_prev, prediction_type=schedule.prediction_type,
                         eta=config.eta, noise=noise)
        return x, None

    xs = (jnp.asarray(tables.timesteps), jnp.asarray(tables.alphas), jnp.asarray(tables.alphas_prev), step_noise)
    latents, _ = jax.lax.scan(body, latents, xs)
    return latents


def ddim_sample(eps_fn: EpsFn, schedule: NoiseSchedule, config: DDIMConfig, cond: Any, *,
                latents: jax.Array | None = None, step_noise: jax.Array | None = None,
                key: jax.Array | None = None, shape: tuple[int, ...] | None = None) -> jax.Array:
    """Full DDIM sampling: one ``lax.scan`` over the steps inside ``jit``; returns the final latents.

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
    return _ddim_loop(eps_fn, schedule, config, cond, jnp.asarray(latents), step_noise)
