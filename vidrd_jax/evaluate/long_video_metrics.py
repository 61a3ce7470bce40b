"""Temporal metrics of (long) videos in VBench's definitions, on the CPU; uint8 RGB videos ``[F, H, W, 3]``.

* :func:`temporal_flickering` (VBench ``temporal_flickering``): ``(255 − MAE) / 255`` with MAE the mean absolute
  difference of consecutive frames over all pixels, channels and pairs; 1 = no change at all.
* :func:`subject_consistency` (VBench ``subject_consistency``): for every frame t >= 1 the mean of
  ``max(0, cos(e_t, e_{t-1}))`` and ``max(0, cos(e_t, e_0))``, averaged over t. VBench embeds frames with DINO
  ViT-B/16; here any per-frame image embedding is used (the harness passes CLIP image embeddings), so values are
  comparable between our runs, not with VBench's tables.
* :func:`dynamic_degree` (VBench ``dynamic_degree``): optical flow between consecutive frames (after keeping every
  ``round(fps / 8)``-th frame), each pair's score the mean of its largest 5% flow magnitudes; the video is dynamic
  when at least ``round(4 · n / 16)`` pairs (n = frames kept; at least 1, where VBench's 0 would call any 2-frame
  video dynamic) score above ``6 · max(1, 8 / fps) · min(H, W) / 256`` pixels. VBench's flow is RAFT; here it is
  OpenCV's (``opencv-python-headless``): Farnebäck (default) or DIS, which find the same large motions but differ
  from RAFT in detail, so the degree is again ours, not VBench's.
* :func:`junction_change`: for a long video made of clips, the mean absolute frame-to-frame change (``[0, 1]``
  pixel scale) across clip junctions (last frame of a clip -> first of the next), inside clips, and their ratio
  (1: junctions look like any other step; > 1: visible seams).

A still video has perfect flickering and consistency scores: always report the dynamic degree beside them
(:func:`long_video_report` does).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

FLOW_METHODS = ("farneback", "dis")
TOP_FRACTION = 0.05  # VBench: mean of the largest 5% flow magnitudes per frame pair


def _check_video(video: np.ndarray, name: str = "video", min_frames: int = 2) -> np.ndarray:
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) < min_frames:
        raise ValueError(f"{name} must be uint8 [F >= {min_frames}, H, W, 3], got {video.dtype} {video.shape}")
    return video


def frame_changes(video: np.ndarray) -> np.ndarray:
    """Mean absolute change of each consecutive frame pair, ``[F - 1]`` in ``[0, 1]`` pixel units."""
    video = _check_video(video)
    return np.abs(np.diff(video.astype(np.float32), axis=0)).mean(axis=(1, 2, 3)) / 255.0


def temporal_flickering(video: np.ndarray) -> float:
    """VBench temporal flickering ``(255 − mean |frame_{t+1} − frame_t|) / 255``, in [0, 1]; 1 = no flicker."""
    return float(1.0 - frame_changes(video).mean())


def subject_consistency(embeds: np.ndarray) -> float:
    """VBench subject consistency of per-frame embeddings ``[F >= 2, D]`` (similarity to the previous and first)."""
    embeds = np.asarray(embeds, np.float64)
    if embeds.ndim != 2 or len(embeds) < 2:
        raise ValueError(f"subject_consistency needs [F >= 2, D] embeddings, got {embeds.shape}")
    unit = embeds / np.maximum(np.linalg.norm(embeds, axis=-1, keepdims=True), 1e-12)
    previous = np.maximum(0.0, np.sum(unit[1:] * unit[:-1], axis=-1))
    first = np.maximum(0.0, unit[1:] @ unit[0])
    return float(np.mean((previous + first) / 2))


def _flow(method: str, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    import cv2  # opencv-python-headless

    a, b = (cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in (first, second))
    if method == "farneback":  # OpenCV's documented parameters: pyramid 0.5 x 3 levels, 15 px window, 3 iterations
        return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(a, b, None)


def flow_scores(video: np.ndarray, method: str = "farneback") -> np.ndarray:
    """Per consecutive pair, the mean of the largest 5% optical-flow magnitudes in pixels, ``[F - 1]``."""
    video = _check_video(video)
    if method not in FLOW_METHODS:
        raise ValueError(f"flow method must be one of {FLOW_METHODS}, got {method!r}")
    count = max(1, int(video.shape[1] * video.shape[2] * TOP_FRACTION))
    scores = []
    for first, second in zip(video[:-1], video[1:]):
        magnitude = np.linalg.norm(_flow(method, first, second), axis=-1).ravel()
        scores.append(float(np.mean(np.partition(magnitude, -count)[-count:])))
    return np.asarray(scores)


@dataclasses.dataclass(frozen=True)
class DynamicDegree:
    """VBench's decision for one video and what it rests on."""

    dynamic: bool
    scores: tuple[float, ...]  # per kept frame pair (pixels)
    threshold: float  # pixels
    pairs_needed: int
    frame_step: int  # every frame_step-th frame was kept


def dynamic_degree(video: np.ndarray, fps: float = 8.0, method: str = "farneback") -> DynamicDegree:
    """VBench dynamic degree of one video at frame rate ``fps`` (see the module docstring)."""
    video = _check_video(video)
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    step = max(1, round(fps / 8))
    kept = video[::step]
    if len(kept) < 2:
        raise ValueError(f"dynamic_degree: {len(video)} frames at {fps} fps keep {len(kept)} frame(s) at ~8 fps; "
                         "need >= 2")
    threshold = 6.0 * max(1.0, 8.0 / fps) * min(video.shape[1:3]) / 256.0
    pairs_needed = max(1, round(4 * len(kept) / 16))
    scores = flow_scores(kept, method)
    return DynamicDegree(bool(np.sum(scores > threshold) >= pairs_needed), tuple(float(s) for s in scores),
                         threshold, pairs_needed, step)


def clip_starts(num_frames: int, clip_frames: int, first_clip_frames: int | None = None) -> list[int]:
    """First-frame indices of clips 1, 2, … in a video of ``num_frames`` frames made of ``clip_frames``-frame clips
    (the first clip ``first_clip_frames`` long, e.g. N when later clips lost their M prompt frames)."""
    first = clip_frames if first_clip_frames is None else first_clip_frames
    for name, value in (("clip_frames", clip_frames), ("first_clip_frames", first), ("num_frames", num_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return list(range(first, num_frames, clip_frames))


@dataclasses.dataclass(frozen=True)
class JunctionChange:
    junction_change: float  # mean |Δ| across clip junctions, [0, 1] pixel scale
    inside_change: float  # mean |Δ| between consecutive frames of the same clip
    junction_ratio: float  # junction_change / inside_change


def junction_change(video: np.ndarray, starts: Sequence[int]) -> JunctionChange:
    """Frame-to-frame change at clip junctions (frame ``s - 1`` -> ``s`` for ``s`` in ``starts``) vs inside clips."""
    changes = frame_changes(video)
    starts = sorted(set(int(s) for s in starts))
    if not starts or starts[0] < 1 or starts[-1] > len(changes):
        raise ValueError(f"clip starts {starts} must lie in 1..{len(changes)} (a video of {len(video)} frames)")
    junction = np.zeros(len(changes), bool)
    junction[[s - 1 for s in starts]] = True
    if junction.all():
        raise ValueError("every frame pair is a junction: clips need >= 2 frames for an inside-clip change")
    inside = float(changes[~junction].mean())
    across = float(changes[junction].mean())
    return JunctionChange(across, inside, across / max(inside, 1e-8))


def long_video_report(video: np.ndarray, *, fps: float = 8.0, embeds: np.ndarray | None = None,
                      starts: Sequence[int] | None = None, flow_method: str = "farneback") -> dict[str, float]:
    """Every metric of this module for one video (flat dict): flickering and dynamic degree always, subject
    consistency when ``embeds`` are given, junction change when clip ``starts`` are."""
    degree = dynamic_degree(video, fps, flow_method)
    report = {"temporal_flickering": temporal_flickering(video), "dynamic_degree": float(degree.dynamic),
              "motion_score": float(np.mean(degree.scores))}
    if embeds is not None:
        report["subject_consistency"] = subject_consistency(embeds)
    if starts:
        report.update(dataclasses.asdict(junction_change(video, starts)))
    return report
