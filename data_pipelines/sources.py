"""Index-file sources: captioned videos (mp4 / webm / gif / anything FFmpeg reads) and captioned images.

Index files are CSV (header row required) or JSONL (one JSON object per line), chosen by extension
(``.csv`` / ``.jsonl`` / ``.json``). Fields:

- ``path`` (required): media file; relative paths are relative to the index file's folder.
- ``caption`` (str) and/or ``captions`` (list of str; in CSV a JSON list): one is drawn per sample.
- ``start_frame`` / ``end_frame`` (videos, optional): the segment ``[start_frame, end_frame)`` (end exclusive),
  as written by ``data_pipelines.captioning.segments`` (segment-then-caption) and ``data_pipelines.caption``.
- any other field (e.g. ``label``) is ignored.

Rows without a path, with an unparsable line or an invalid segment are counted as ``bad_row``; rows without a
non-empty caption as ``empty_caption``; both are dropped when the index is read. A source whose rows are all bad
raises ``SourceFailedError`` naming it.

Images: grayscale (and 16-bit grayscale) images are converted to RGB by channel replication; images with alpha are
composited over white (what a viewer shows on a white page) — both deliberate, not skips. EXIF orientation is
applied. Large JPEGs are decoded at reduced size (``draft``) when that still covers the pseudo-video's needs.
Videos are converted to RGB by FFmpeg whatever their pixel format (grayscale replicated, an alpha plane dropped).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from data_pipelines import base, pseudo_video, stats, transforms
from vidrd_jax import media


@dataclasses.dataclass(frozen=True)
class IndexRow:
    path: str
    captions: tuple[str, ...]
    start_frame: int = 0
    end_frame: int | None = None


def _parse_captions(record: dict) -> tuple[str, ...] | None:
    """Captions of a row, or None when a caption field is malformed."""
    captions = []
    for field in ("caption", "captions"):
        value = record.get(field)
        if value is None or value == "":
            continue
        if field == "captions" and isinstance(value, str) and value.lstrip().startswith("["):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                return None
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            return None
        captions.extend(base.clean_captions(value))
    return tuple(captions)


def _parse_frame(value) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError("bool is not a frame index")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value} is not an integer")
    return int(value)


def _parse_row(record, root: str, allow_segments: bool) -> IndexRow | str:
    """An ``IndexRow``, or the skip reason for a bad row."""
    if not isinstance(record, dict):
        return stats.BAD_ROW
    path = record.get("path")
    if not isinstance(path, str) or not path.strip():
        return stats.BAD_ROW
    path = path.strip()
    if not os.path.isabs(path):
        path = os.path.join(root, path)
    try:
        start, end = _parse_frame(record.get("start_frame")), _parse_frame(record.get("end_frame"))
    except (TypeError, ValueError):
        return stats.BAD_ROW
    if not allow_segments and (start is not None or end is not None):
        return stats.BAD_ROW
    start = start or 0
    if start < 0 or (end is not None and end <= start):
        return stats.BAD_ROW
    captions = _parse_captions(record)
    if captions is None:
        return stats.BAD_ROW
    if not captions:
        return stats.EMPTY_CAPTION
    return IndexRow(path, captions, start, end)


def read_index(index_path: str, *, allow_segments: bool) -> tuple[list[IndexRow], dict[str, int]]:
    """Rows of a CSV / JSONL index and the per-reason counts of dropped rows."""
    if not os.path.isfile(index_path):
        raise FileNotFoundError(f"index: no such file {index_path!r}")
    root = os.path.dirname(os.path.abspath(index_path))
    ext = os.path.splitext(index_path)[1].lower()
    rows: list[IndexRow] = []
    skips: dict[str, int] = {}

    def add(record) -> None:
        row = _parse_row(record, root, allow_segments)
        if isinstance(row, str):
            skips[row] = skips.get(row, 0) + 1
        else:
            rows.append(row)

    with open(index_path, newline="", encoding="utf-8", errors="replace") as f:
        if ext == ".csv":
            reader = csv.DictReader(f)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise ValueError(f"index: {index_path!r} has no 'path' column in its header {reader.fieldnames}")
            for record in reader:
                add(record)
        elif ext in (".jsonl", ".json"):
            for line in f:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    record = None
                add(record)
        else:
            raise ValueError(f"index: {index_path!r} must end in .csv, .jsonl or .json")
    return rows, skips


class _IndexSource(base.Source):
    """Shared index handling: rows, dropped-row counts, and the all-rows-bad error."""

    allow_segments: bool

    def __init__(self, name: str, sampling: transforms.Sampling, *, index: str, min_side: int | None = None,
                 zoom_pan: pseudo_video.ZoomPan | None = None):
        super().__init__(name, sampling, min_side=min_side, zoom_pan=zoom_pan)
        self.index = index
        self.rows, self.index_skips = read_index(index, allow_segments=self.allow_segments)
        if not self.rows:
            raise stats.SourceFailedError(
                f"data source {name!r}: no usable row in index {index!r} "
                f"(dropped: {self.index_skips or 'the index is empty'})")

    def __len__(self) -> int:
        return len(self.rows)


class VideoIndexSource(_IndexSource):
    """Captioned videos from an index (paper §5.1 sampling: keyframes every ``stride`` from a random start)."""

    kind = "video_index"
    allow_segments = True

    def __init__(self, name: str, sampling: transforms.Sampling, *, index: str, min_side: int | None = None):
        super().__init__(name, sampling, index=index, min_side=min_side)

    def load_raw(self, index: int, rng: np.random.Generator, keyframes: int) -> base.Raw:
        row = self.rows[index]
        s = self.sampling
        try:
            with media.VideoReader(row.path) as reader:
                info = reader.info if row.end_frame is None else None
                height, width = reader.size
                self.check_size(height, width, row.path)
                end = info.num_frames if info is not None else row.end_frame
                indices = transforms.sample_frame_indices(rng, row.start_frame, end, keyframes, s.stride, key=row.path)
                frames = reader.read(indices, size=transforms.shorter_side_size(height, width, s.height, s.width))
        except media.MediaError as e:
            raise stats.SkipError(e.reason, str(e)) from e
        return base.Raw(frames, row.captions, base.CLIP, row.path)


def load_image(path: str, min_side: int, wanted: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of an image file (see module docstring for grayscale / alpha / EXIF handling).

    ``wanted=(h, w)``: a JPEG may be decoded at a reduced scale that still covers ``h x w``. Raises SkipError.
    """
    if not os.path.isfile(path):
        raise stats.SkipError(media.MISSING_FILE, f"{path}: no such file")
    if os.path.getsize(path) == 0:
        raise stats.SkipError(media.EMPTY_FILE, f"{path}: file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if min(img.size) < min_side:
                    raise stats.SkipError(stats.TOO_SMALL, f"{path}: {img.size[1]}x{img.size[0]} has a side below "
                                                           f"min_side={min_side}")
                if wanted is not None and img.format == "JPEG":
                    img.draft("RGB", (wanted[1], wanted[0]))
                img.load()
                img = ImageOps.exif_transpose(img)
                return _to_rgb(img)
    except stats.SkipError:
        raise
    except (Image.UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise stats.SkipError(media.UNREADABLE, f"{path}: {e}") from e
    except Exception as e:  # pylint: disable=broad-except  (PIL decoders raise OSError, EOFError, struct.error, …
        # on corrupt data; the file is skipped and counted, never a crash)
        raise stats.SkipError(media.DECODE_ERROR, f"{path}: {type(e).__name__}: {e}") from e


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = np.asarray(img, dtype=np.uint32)
        gray = (gray >> 8).astype(np.uint8) if gray.max() > 255 else gray.astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


class ImageIndexSource(_IndexSource):
    """Captioned images from an index, turned into pseudo-videos (paper §4.2) by random zoom/pan."""

    kind = "image_index"
    allow_segments = False

    def __init__(self, name: str, sampling: transforms.Sampling, *, index: str, min_side: int | None = None,
                 zoom_range: tuple[float, float] = pseudo_video.ZoomPan.zoom_range,
                 pan_range: tuple[float, float] = pseudo_video.ZoomPan.pan_range):
        super().__init__(name, sampling, index=index, min_side=min_side,
                         zoom_pan=pseudo_video.ZoomPan(tuple(zoom_range), tuple(pan_range)))

    def load_raw(self, index: int, rng: np.random.Generator, keyframes: int) -> base.Raw:
        row = self.rows[index]
        s = self.sampling
        out = (s.height, s.width)
        wanted = tuple(int(np.ceil(v * self.zoom_pan.zoom_range[1])) for v in out)
        image = load_image(row.path, self.min_side, wanted)
        image = pseudo_video.fit_for_zoom(image, out, self.zoom_pan.zoom_range[1])
        return base.Raw(image[None], row.captions, base.IMAGE, row.path)
