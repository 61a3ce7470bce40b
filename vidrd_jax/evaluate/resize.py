"""Bilinear frame resizing in the two conventions the video-metric detectors were run with.

* ``"tf1"``: TensorFlow 1's ``tf.image.resize_bilinear`` with its defaults (``align_corners=False``,
  ``half_pixel_centers=False``), which the FVD reference (google-research ``frechet_video_distance.py``) uses to bring
  frames to 224x224 before the TF-Hub I3D: output pixel ``i`` samples the input at ``i * in / out`` (no half-pixel
  shift), interpolating between ``floor`` and ``floor + 1`` clamped to the last pixel. No antialiasing when shrinking.
* ``"align_corners"``: corners mapped to corners, ``i * (in - 1) / (out - 1)``: Chainer's ``F.resize_images``
  default, which TGANv2's C3D (the video Inception Score) applies to reach 112x112.

``jax.image.resize`` implements neither (it uses half-pixel centres and antialiases when shrinking), hence this module.
The resize is two matrix products with ``[out, in]`` interpolation matrices built in float64 on the host (each row
holds the two weights of one output pixel), at ``Precision.HIGHEST`` so TPUs do not round the pixels to bfloat16.
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

Mode = Literal["tf1", "align_corners"]
MODES = ("tf1", "align_corners")


def interpolation_matrix(in_size: int, out_size: int, mode: Mode) -> np.ndarray:
    """``[out_size, in_size]`` float32 weights: row ``i`` resamples a line of ``in_size`` pixels at output ``i``."""
    if mode not in MODES:
        raise ValueError(f"resize mode must be one of {MODES}, got {mode!r}")
    if in_size < 1 or out_size < 1:
        raise ValueError(f"resize: sizes must be positive, got {in_size} -> {out_size}")
    out = np.arange(out_size, dtype=np.float64)
    if mode == "tf1":
        src = out * (in_size / out_size)
    else:
        src = out * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros_like(out)
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    frac = src - lo
    weights = np.zeros((out_size, in_size), np.float64)
    np.add.at(weights, (np.arange(out_size), lo), 1.0 - frac)
    np.add.at(weights, (np.arange(out_size), hi), frac)
    return weights.astype(np.float32)


def resize_bilinear(images: jax.Array, size: tuple[int, int], mode: Mode) -> jax.Array:
    """Resizes ``images [..., H, W, C]`` to ``[..., size[0], size[1], C]`` (float32); same size returns the input."""
    if images.ndim < 3:
        raise ValueError(f"resize: expected images [..., H, W, C], got shape {images.shape}")
    height, width = images.shape[-3:-1]
    images = images.astype(jnp.float32)
    if (height, width) == tuple(size):
        return images
    rows = jnp.asarray(interpolation_matrix(height, size[0], mode))
    cols = jnp.asarray(interpolation_matrix(width, size[1], mode))
    highest = jax.lax.Precision.HIGHEST
    images = jnp.einsum("oh,...hwc->...owc", rows, images, precision=highest)
    return jnp.einsum("pw,...owc->...opc", cols, images, precision=highest)


def apply_resized(model_fn: Callable[[Any, jax.Array], jax.Array], size: int, mode: Mode, params: Any,
                  videos: jax.Array) -> jax.Array:
    """``model_fn(params, videos resized to size x size)``: a detector's input stage (bind the first three with
    ``functools.partial``)."""
    return model_fn(params, resize_bilinear(videos, (size, size), mode))
