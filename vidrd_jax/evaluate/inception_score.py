"""Video Inception Score (Salimans et al. 2016 applied to videos with a UCF-101 C3D, as TGAN / TGANv2 report it).

``IS = exp(E_x KL(p(y|x) || p(y)))`` over the class posteriors of the C3D of :mod:`.c3d`: videos ``[N, F, H, W, 3]``
in [-1, 1] -> 16 frames (every ``frame_stride``-th from ``start``) -> corner-aligned bilinear resize to 112x112 ->
C3D logits (float32, jitted, batches split over the devices) -> softmax and the score in float64 on the host.

As in TGANv2's ``inception_score`` (after openai/improved-gan): the posteriors are split into ``splits`` consecutive
parts, ``1e-20`` is added to every probability, each part's score is ``exp(mean_i sum_y p log(p / mean_part(p)))``,
and the result is the mean and standard deviation over the parts. TGANv2's UCF-101 protocol uses ``splits=1`` on
2048 generated videos and reports the mean ± std over 10 such sample sets (a caller's loop).
"""
from __future__ import annotations

import functools

import numpy as np
from jax.sharding import Mesh

from vidrd_jax.evaluate import c3d
from vidrd_jax.evaluate.fvd import FeatureExtractor, select_frames
from vidrd_jax.evaluate.resize import apply_resized

IS_EPS = 1e-20


def inception_score(probs: np.ndarray, splits: int = 1, eps: float = IS_EPS) -> tuple[float, float]:
    """``(mean, std)`` of the Inception Score of class posteriors ``probs [N, K]`` over ``splits`` parts (float64)."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or not len(probs):
        raise ValueError(f"inception_score: probs must be [N, K], got shape {probs.shape}")
    if not 1 <= splits <= len(probs):
        raise ValueError(f"inception_score: splits must be in [1, {len(probs)}], got {splits}")
    n, scores = len(probs), []
    for i in range(splits):
        part = probs[i * n // splits:(i + 1) * n // splits] + eps
        kl = np.sum(part * (np.log(part) - np.log(part.mean(axis=0, keepdims=True))), axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def softmax64(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    logits = np.asarray(logits, np.float64)
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def c3d_extractor(params: c3d.Params, config: c3d.C3DConfig = c3d.C3DConfig(), *, batch_size: int = 16,
                  mesh: Mesh | None = None) -> FeatureExtractor:
    """``extractor(clips [N, num_frames, H, W, 3]) -> [N, num_classes]`` C3D logits after the corner-aligned resize."""
    model = c3d.C3D(config)
    fn = functools.partial(apply_resized, lambda p, x: model.apply({"params": p}, x), config.resolution,
                           "align_corners")
    return FeatureExtractor(fn, params, batch_size=batch_size, mesh=mesh, name="C3D")


def load_c3d_extractor(weights_path: str, mean_path: str, *, batch_size: int = 16,
                       mesh: Mesh | None = None) -> FeatureExtractor:
    """The UCF-101 C3D from TGANv2's ``conv3d_deepnetA_ucf.npz`` and ``mean2.npz``."""
    return c3d_extractor(c3d.load_c3d_params(weights_path, mean_path), batch_size=batch_size, mesh=mesh)


def video_inception_score(videos: np.ndarray, extractor: FeatureExtractor, *, splits: int = 1, num_frames: int = 16,
                          frame_stride: int = 1, start: int = 0) -> tuple[float, float]:
    """``(mean, std)`` Inception Score of ``videos [N, F, H, W, 3]`` in [-1, 1] (``num_frames`` must be the C3D's)."""
    logits = extractor(select_frames(videos, num_frames, frame_stride, start))
    return inception_score(softmax64(logits), splits)

