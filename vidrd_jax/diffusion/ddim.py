"""The forward process (training targets, timesteps, loss weights) and what every sampler shares: the denoiser type,
the model output -> (x0, eps) conversion and the sampling noise.

The denoiser is ``eps_fn(z, t, cond) -> model_output``: ``z`` latents ``[B, F, h, w, C]``, ``t`` an int32 scalar
timestep, ``cond`` any pytree (text embeddings, model params, ...: everything that must be a jit *argument* rather
than a constant baked into the program). ``model_output`` is an epsilon or a v prediction
(``schedule.prediction_type``).

Randomness is explicit: samplers (``solvers``, ``long_video``, ``co_denoise``) take the initial latents and, when
``eta > 0``, one noise array per step, so a run can be replayed bit for bit elsewhere; :func:`draw_noise` draws both
from a PRNG key.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from vidrd_jax.diffusion.schedule import NoiseSchedule

if TYPE_CHECKING:
    from vidrd_jax.diffusion.solvers import SamplerConfig

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


def draw_noise(key: jax.Array, shape: tuple[int, ...], config: SamplerConfig,
               dtype: Any = jnp.float32) -> tuple[jax.Array, jax.Array | None]:
    """``(initial latents, per-step noise [S, *shape] or None when eta == 0)`` drawn from ``key``."""
    key_init, key_steps = jax.random.split(key)
    latents = jax.random.normal(key_init, shape, dtype)
    step_noise = jax.random.normal(key_steps, (config.num_steps,) + tuple(shape), dtype) if config.eta > 0 else None
    return latents, step_noise


def place_noise(noise: Any, step_noise: Any, batch_sharding: jax.sharding.NamedSharding | None) -> tuple[Any, Any]:
    """``noise`` [B, ...] placed with ``batch_sharding`` (a sharding of the batch axis) and ``step_noise``
    [S, B, ...] with the same split of its second axis, so a jitted sampler runs data-parallel; unchanged (and not
    copied) without a sharding."""
    if batch_sharding is None:
        return noise, step_noise
    noise = jax.device_put(noise, batch_sharding)
    if step_noise is not None:
        step_spec = jax.sharding.PartitionSpec(None, *batch_sharding.spec)
        step_noise = jax.device_put(step_noise, batch_sharding.update(spec=step_spec))
    return noise, step_noise


def check_step_noise(step_noise: Any, shape: tuple[int, ...], config: SamplerConfig, name: str = "step_noise") -> None:
    """Raises unless ``step_noise`` is ``[num_steps, *shape]`` when eta > 0 and None when eta == 0."""
    if config.eta > 0:
        expected = (config.num_steps,) + tuple(shape)
        if step_noise is None or tuple(np.shape(step_noise)) != expected:
            got = None if step_noise is None else tuple(np.shape(step_noise))
            raise ValueError(f"{name} must have shape {expected} (eta={config.eta} > 0), got {got}")
    elif step_noise is not None:
        raise ValueError(f"{name} must be None when eta == 0")
