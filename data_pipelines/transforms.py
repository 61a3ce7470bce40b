"""Per-sample transforms of paper §5.1 ("Training details"): keyframe sampling, shorter-side resize, random crop,
caption choice, caption dropout, and the uint8 -> [-1, 1] conversion.

"8 keyframes are sampled uniformly every 4 frames. The starting frame of sampling is randomly selected along the
timeline. Each frame is resized along the shorter side and then randomly cropped to the target resolution. For video
datasets with multiple captions, one caption is randomly chosen every time it is sampled."
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from PIL import Image

from data_pipelines import stats


@dataclasses.dataclass(frozen=True)
class Sampling:
    """What every source produces: ``num_frames`` keyframes ``stride`` frames apart, cropped to ``height x width``."""

    num_frames: int = 8
    stride: int = 4
    height: int = 256
    width: int = 256

    def __post_init__(self):
        for field in ("num_frames", "stride", "height", "width"):
            value = getattr(self, field)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{field}: must be a positive int, got {value!r}")


def _named(key: str | None) -> str:
    """``"KEY: "`` (the prefix of a skip message naming its item), or nothing."""
    return f"{key}: " if key else ""


def clip_span(num_frames: int, stride: int) -> int:
    """Frames a clip of ``num_frames`` keyframes ``stride`` apart spans (first to last keyframe, inclusive)."""
    return (num_frames - 1) * stride + 1


def sample_frame_indices(rng: np.random.Generator, start_frame: int, end_frame: int, num_frames: int,
                         stride: int, *, key: str | None = None) -> np.ndarray:
    """Keyframes ``s, s + stride, …`` (``num_frames`` of them) with ``s`` uniform so all lie in ``[start, end)``.

    Raises ``SkipError(too_short)``, naming the item ``key`` (its file), when the segment holds fewer than
    ``clip_span(num_frames, stride)`` frames.
    """
    span = clip_span(num_frames, stride)
    available = end_frame - start_frame
    if available < span:
        raise stats.SkipError(stats.TOO_SHORT, f"{_named(key)}{available} frames in [{start_frame}, {end_frame}), "
                                               f"need {span} ({num_frames} keyframes every {stride})")
    start = start_frame + int(rng.integers(0, available - span + 1))
    return start + stride * np.arange(num_frames, dtype=np.int64)


def shorter_side_size(height: int, width: int, out_height: int, out_width: int) -> tuple[int, int]:
    """Size after resizing (aspect kept) so the frame just covers ``out_height x out_width``.

    For a square target this resizes the shorter side to the target side (paper §5.1).
    """
    scale = max(out_height / height, out_width / width)
    return max(out_height, int(round(height * scale))), max(out_width, int(round(width * scale)))


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resizes uint8 ``[T, H, W, 3]`` frames to ``size=(h, w)`` (PIL bilinear, antialiased when shrinking)."""
    height, width = size
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BILINEAR))
                     for f in frames])


def random_crop(rng: np.random.Generator, frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """The same uniformly placed ``height x width`` window of every frame of ``[T, H, W, C]``."""
    h, w = frames.shape[1:3]
    if h < height or w < width:
        raise ValueError(f"frames: {h}x{w} is smaller than the crop {height}x{width}")
    y = int(rng.integers(0, h - height + 1))
    x = int(rng.integers(0, w - width + 1))
    return frames[:, y:y + height, x:x + width]


def random_window(rng: np.random.Generator, frames: np.ndarray, num_frames: int, *,
                  key: str | None = None) -> np.ndarray:
    """``num_frames`` consecutive frames from a uniform start (stored keyframes are already ``stride`` apart)."""
    if len(frames) < num_frames:
        raise stats.SkipError(stats.TOO_SHORT, f"{_named(key)}{len(frames)} stored keyframes, need {num_frames}")
    start = int(rng.integers(0, len(frames) - num_frames + 1))
    return frames[start:start + num_frames]


def choose_caption(rng: np.random.Generator, captions: Sequence[str]) -> str:
    """One caption uniformly at random (paper §5.1: "one caption is randomly chosen every time it is sampled")."""
    if not captions:
        raise stats.SkipError(stats.EMPTY_CAPTION, "no caption")
    return captions[int(rng.integers(0, len(captions)))]


def drop_caption(rng: np.random.Generator, caption: str, probability: float) -> str:
    """Caption replaced by "" with ``probability`` (unconditional training for classifier-free guidance)."""
    return "" if probability > 0 and rng.random() < probability else caption


def to_model_range(frames: np.ndarray) -> np.ndarray:
    """uint8 ``[0, 255]`` -> float32 ``[-1, 1]``."""
    return frames.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
