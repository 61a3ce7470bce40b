"""The source interface: random access to items, each decoded into a ``Raw`` and augmented into one sample.

A source's ``load_raw(index, rng, keyframes)`` decodes what is stored or needed (a clip of ``keyframes`` frames
already ``stride`` apart, or one image) at roughly the target size, uncropped, with all its captions. ``augment``
turns a ``Raw`` into the training sample (uint8 ``[F, H, W, 3]``, one caption): clips get a random window of ``F``
keyframes, a shorter-side resize (a no-op when the source already resized) and a random crop; images become
pseudo-videos (random zoom/pan). ``prepare`` stores ``Raw``s in ArrayRecord shards and the ArrayRecord source feeds
them back through the same ``augment``.

Bad items raise ``stats.SkipError``; sources count bad index rows at construction in ``index_skips``.
"""
from __future__ import annotations

import abc
import dataclasses
import math
from typing import ClassVar

import numpy as np

from data_pipelines import pseudo_video, stats, transforms

CLIP = "clip"
IMAGE = "image"


@dataclasses.dataclass(frozen=True)
class Raw:
    """Decoded item: uint8 ``frames [T, h, w, 3]`` (``T = 1`` for images), its captions, ``kind`` and ``key``."""

    frames: np.ndarray
    captions: tuple[str, ...]
    kind: str
    key: str

    def __post_init__(self):
        if self.kind not in (CLIP, IMAGE):
            raise ValueError(f"kind: must be {CLIP!r} or {IMAGE!r}, got {self.kind!r}")
        f = self.frames
        if f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3 or (self.kind == IMAGE and len(f) != 1):
            raise ValueError(f"frames: expected uint8 [T, h, w, 3] (T = 1 for images), got {f.dtype} {f.shape}")


def clean_captions(captions) -> tuple[str, ...]:
    """Non-empty, stripped captions from a str, bytes, or a list of them (None -> ())."""
    if captions is None:
        return ()
    if isinstance(captions, (str, bytes)):
        captions = [captions]
    out = []
    for c in captions:
        if isinstance(c, bytes):
            c = c.decode("utf-8", errors="replace")
        if not isinstance(c, str):
            return ()
        c = c.strip()
        if c:
            out.append(c)
    return tuple(out)


class Source(abc.ABC):
    """Random-access captioned items. Subclasses set ``kind`` and implement ``__len__`` and ``load_raw``.

    ``min_side`` (None -> half the target's shorter side, rounded up): items whose original shorter side is below
    it are skipped as ``too_small`` rather than upscaled into blur. ``zoom_pan`` is used for image items.
    """

    kind: ClassVar[str]

    def __init__(self, name: str, sampling: transforms.Sampling, *, min_side: int | None = None,
                 zoom_pan: pseudo_video.ZoomPan | None = None):
        if not name:
            raise ValueError("name: a source needs a non-empty name")
        if min_side is not None and (not isinstance(min_side, int) or min_side < 1):
            raise ValueError(f"min_side: must be a positive int or None, got {min_side!r}")
        self.name = name
        self.sampling = sampling
        self.min_side = min_side if min_side is not None else math.ceil(min(sampling.height, sampling.width) / 2)
        self.zoom_pan = zoom_pan or pseudo_video.ZoomPan()
        self.index_skips: dict[str, int] = {}

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of items (bad index rows excluded)."""

    @abc.abstractmethod
    def load_raw(self, index: int, rng: np.random.Generator, keyframes: int) -> Raw:
        """Decodes item ``index``; clips hold ``keyframes`` frames ``sampling.stride`` apart. Raises SkipError."""

    def check_size(self, height: int, width: int, key: str) -> None:
        """SkipError(too_small) when the original shorter side is below ``min_side``."""
        if min(height, width) < self.min_side:
            raise stats.SkipError(stats.TOO_SMALL, f"{key}: {height}x{width} has a side below min_side={self.min_side}")

    def augment(self, raw: Raw, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """Training sample of a ``Raw``: uint8 ``[F, H, W, 3]`` and one caption (paper §4.2 and §5.1)."""
        s = self.sampling
        if raw.kind == IMAGE:
            frames = pseudo_video.random_pseudo_video(rng, raw.frames[0], s.num_frames, (s.height, s.width),
                                                      self.zoom_pan)
        else:
            frames = transforms.random_window(rng, raw.frames, s.num_frames, key=raw.key)
            frames = transforms.resize_frames(frames, transforms.shorter_side_size(*frames.shape[1:3],
                                                                                    s.height, s.width))
            frames = transforms.random_crop(rng, frames, s.height, s.width)
        return frames, transforms.choose_caption(rng, raw.captions)

    def load(self, index: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """``augment(load_raw(index, rng, num_frames))``."""
        return self.augment(self.load_raw(index, rng, self.sampling.num_frames), rng)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, items={len(self)})"
