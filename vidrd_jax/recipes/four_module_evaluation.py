"""The four-module framework's probes on built-in-data videos: foreground identity, background stability, ghosts.

The built-in clips are saturated shapes over neutral-gray backgrounds, so a pixel whose channels spread by more than
``saturation`` (max - min, 0-255) is object, anything else background. Per video (uint8 ``[T, H, W, 3]``):

* ``blobs_per_frame`` / ``multi_blob_frames`` / ``empty_frames``: connected object components of at least
  ``min_blob_pixels`` pixels (``scipy.ndimage.label``, 8-connectivity) per frame, and the fraction of frames with more
  than one (a ghost: a second object where windows overlap) or none;
* ``fg_colour_error``: mean RGB distance of each frame's mean object colour to the prompt's colour;
  ``fg_colour_change``: mean RGB distance between consecutive frames' mean object colours (identity over time);
* ``fg_area_cv``: coefficient of variation of the object's pixel count over frames; ``fg_fill_std``: standard
  deviation of its fill ratio (area / bounding-box area: circle ≈ .79, square 1, triangle / diamond ≈ .5), a shape
  probe;
* ``bg_change`` / ``fg_change``: mean absolute frame-to-frame change (0-255) over pixels that are background (resp.
  object) in both frames (the masked frame-to-frame change; the background is eroded away from objects by one pixel).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
from scipy import ndimage

from data_pipelines import builtin

_EIGHT = np.ones((3, 3), bool)


def object_mask(video: np.ndarray, saturation: float) -> np.ndarray:
    """bool ``[T, H, W]``: pixels whose channel spread (max - min) exceeds ``saturation``."""
    video = np.asarray(video, np.int16)
    return (video.max(-1) - video.min(-1)) > saturation


def blob_counts(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    """int ``[T]``: 8-connected components of at least ``min_pixels`` pixels in each frame of ``mask``."""
    counts = []
    for frame in mask:
        labels, n = ndimage.label(frame, structure=_EIGHT)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        counts.append(int(np.sum(sizes >= min_pixels)))
    return np.asarray(counts)


def _nan_mean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def video_probes(video: np.ndarray, prompt: str, *, saturation: float = 60.0, min_blob_pixels: int = 3
                 ) -> dict[str, float]:
    """The module docstring's probes of one video of ``prompt`` (a built-in caption naming the object's colour)."""
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or len(video) < 2:
        raise ValueError(f"video must be uint8 [T >= 2, H, W, 3], got {video.dtype} {video.shape}")
    colour = np.asarray(builtin.COLOURS[builtin.parse_combo(prompt)[0]], np.float64)
    fg = object_mask(video, saturation)
    counts = blob_counts(fg, min_blob_pixels)
    pixels = video.astype(np.float64)
    areas = fg.sum((1, 2)).astype(np.float64)
    means = [pixels[t][fg[t]].mean(0) if areas[t] else np.full(3, math.nan) for t in range(len(video))]
    fills = []
    for frame, area in zip(fg, areas):
        if area:
            ys, xs = np.nonzero(frame)
            fills.append(area / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1)))
    bg = ~ndimage.binary_dilation(fg, structure=_EIGHT[None])  # one pixel away from any object, in the same frame
    change = np.abs(pixels[1:] - pixels[:-1]).mean(-1)
    both_bg, both_fg = bg[1:] & bg[:-1], fg[1:] & fg[:-1]
    return {
        "blobs_per_frame": float(counts.mean()),
        "multi_blob_frames": float(np.mean(counts > 1)),
        "empty_frames": float(np.mean(counts == 0)),
        "fg_colour_error": _nan_mean([float(np.linalg.norm(m - colour)) for m in means]),
        "fg_colour_change": _nan_mean([float(np.linalg.norm(a - b)) for a, b in zip(means[1:], means[:-1])]),
        "fg_area_cv": float(areas.std() / areas.mean()) if areas.mean() else math.nan,
        "fg_fill_std": float(np.std(fills)) if len(fills) > 1 else math.nan,
        "bg_change": float(change[both_bg].mean()) if both_bg.any() else math.nan,
        "fg_change": float(change[both_fg].mean()) if both_fg.any() else math.nan,
    }


def mean_probes(videos: Sequence[np.ndarray], prompts: Sequence[str], **kwargs: Any) -> dict[str, float]:
    """:func:`video_probes` averaged over videos (NaN entries, e.g. no object in a video, left out)."""
    rows = [video_probes(v, p, **kwargs) for v, p in zip(videos, prompts)]
    return {key: _nan_mean([row[key] for row in rows]) for key in rows[0]}


COLUMNS = ("blobs_per_frame", "multi_blob_frames", "empty_frames", "fg_colour_error", "fg_colour_change",
           "fg_area_cv", "fg_fill_std", "bg_change", "fg_change", "sample_s", "total_s")


def markdown_table(rows: dict[str, dict[str, float]]) -> str:
    """One row per method, :data:`COLUMNS` as columns."""
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row.get(c, math.nan):.3f}" for c in COLUMNS) + " |")
    return "\n".join(lines) + "\n"
