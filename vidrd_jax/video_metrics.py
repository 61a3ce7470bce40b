"""Reconstruction metrics for video autoencoders (used to judge the temporal decoder fine-tuning of paper §4.4).

All functions take clips ``[B, F, H, W, C]`` channels-last in the pixel range of the data (``[-1, 1]`` here, so
``data_range=2``) and are pure ``jnp`` (jit-able):

* :func:`psnr` per frame: ``10·log10(data_range² / MSE)``, ``[B, F]`` (dB).
* :func:`ssim` per frame: Wang et al. (2004) with an 11-tap Gaussian window (σ = 1.5), K1 = 0.01, K2 = 0.03, the
  mean over the valid window positions and the channels, ``[B, F]``. It equals
  ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
  data_range=data_range, channel_axis=-1)``.
* :func:`temporal_flicker`: ``mean |Δ_t(x) − Δ_t(x̂)|`` with ``Δ_t(v) = v[:, t+1] − v[:, t]``, ``[B]`` in pixel units
  (:func:`frame_pair_flicker`: the same per frame pair).
  It is the L1 error of the frame-to-frame changes: 0 when the reconstruction's errors are the same in every frame
  (no flicker), and it grows when each frame is decoded with a different error, which is what a per-frame (2-D)
  decoder does and the Temp-Conv layers are trained to remove.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

SSIM_K1, SSIM_K2 = 0.01, 0.03


def _check_pair(x: Array, y: Array, name: str) -> None:
    if x.shape != y.shape:
        raise ValueError(f"{name}: video and reconstruction shapes differ: {x.shape} vs {y.shape}")
    if x.ndim != 5:
        raise ValueError(f"{name}: expected clips [B, F, H, W, C], got shape {x.shape}")


def psnr(x: Array, y: Array, data_range: float = 2.0) -> Array:
    """Peak signal-to-noise ratio of every frame, ``[B, F]`` dB (``inf`` for identical frames)."""
    _check_pair(x, y, "psnr")
    mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(2, 3, 4))
    return 10.0 * jnp.log10(data_range ** 2 / mse)


def _gaussian_window(size: int, sigma: float) -> Array:
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2
    w = jnp.exp(-0.5 * jnp.square(r / sigma))
    return w / jnp.sum(w)


def _filter_valid(img: Array, window: Array) -> Array:
    """Separable 'valid' Gaussian filtering of ``[N, H, W, C]`` per channel."""
    k = window.shape[0]
    n, h, w, c = img.shape
    x = img.transpose(0, 3, 1, 2).reshape(n * c, 1, h, w)
    x = jax.lax.conv_general_dilated(x, window.reshape(1, 1, k, 1), (1, 1), "VALID",
                                     precision=jax.lax.Precision.HIGHEST)
    x = jax.lax.conv_general_dilated(x, window.reshape(1, 1, 1, k), (1, 1), "VALID",
                                     precision=jax.lax.Precision.HIGHEST)
    return x.reshape(n, c, h - k + 1, w - k + 1).transpose(0, 2, 3, 1)


def ssim(x: Array, y: Array, data_range: float = 2.0, win_size: int = 11, sigma: float = 1.5) -> Array:
    """Structural similarity of every frame, ``[B, F]`` (1 for identical frames)."""
    _check_pair(x, y, "ssim")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim: win_size must be a positive odd int, got {win_size}")
    b, f, h, w, c = x.shape
    if h < win_size or w < win_size:
        raise ValueError(f"ssim: frames of {h}x{w} pixels are smaller than win_size={win_size}")
    window = _gaussian_window(win_size, sigma)
    x = x.astype(jnp.float32).reshape(b * f, h, w, c)
    y = y.astype(jnp.float32).reshape(b * f, h, w, c)
    mu_x, mu_y = _filter_valid(x, window), _filter_valid(y, window)
    var_x = _filter_valid(x * x, window) - mu_x * mu_x
    var_y = _filter_valid(y * y, window) - mu_y * mu_y
    cov = _filter_valid(x * y, window) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return jnp.mean(s, axis=(1, 2, 3)).reshape(b, f)


def frame_pair_flicker(x: Array, y: Array) -> Array:
    """``mean |Δ_t(x) − Δ_t(y)|`` over pixels and channels for each frame pair ``(t, t+1)``: ``[B, F-1]``."""
    _check_pair(x, y, "temporal_flicker")
    if x.shape[1] < 2:
        raise ValueError(f"temporal_flicker: needs clips of at least 2 frames, got {x.shape[1]}")
    dx = jnp.diff(x.astype(jnp.float32), axis=1)
    dy = jnp.diff(y.astype(jnp.float32), axis=1)
    return jnp.mean(jnp.abs(dx - dy), axis=(2, 3, 4))


def temporal_flicker(x: Array, y: Array) -> Array:
    """``mean |Δ_t(x) − Δ_t(y)|`` over frames, pixels and channels: ``[B]`` (needs at least 2 frames)."""
    return jnp.mean(frame_pair_flicker(x, y), axis=1)


def reconstruction_metrics(video: Array, recon: Array, data_range: float = 2.0) -> dict[str, Array]:
    """Scalar means of a batch; ``recon`` is clipped to the data range first.

    ``psnr``, ``ssim``, ``flicker`` (all frame pairs) and, for clips of 4 or more frames, ``flicker_interior``
    (without the first and last pair: frames at the clip border are decoded with the Temp-Convs' zero padding in
    time, so they behave differently). The pixel range is ``[-data_range/2, data_range/2]`` (``[-1, 1]``).
    """
    half = data_range / 2
    recon = jnp.clip(recon.astype(jnp.float32), -half, half)
    pairs = frame_pair_flicker(video, recon)
    metrics = {"psnr": jnp.mean(psnr(video, recon, data_range)), "ssim": jnp.mean(ssim(video, recon, data_range)),
               "flicker": jnp.mean(pairs)}
    if pairs.shape[1] >= 3:
        metrics["flicker_interior"] = jnp.mean(pairs[:, 1:-1])
    return metrics
