"""Video / GIF / PNG readers and writers on PyAV (FFmpeg).

Reading decodes only what is asked for: frames are counted from the container header (or, when the header has no
count, by demuxing packets without decoding), decoding stops after the last requested frame, and a request that
starts deep into a seekable stream (mp4, webm, mov, …; never GIF) seeks to the keyframe before it. Frames can be
resized by swscale right after decoding (``size=``), which is what the data pipeline uses to resize the shorter
side without an extra pass.

Writing picks the codec from the extension: ``.mp4`` H.264 (yuv420p, needs even height/width), ``.webm`` VP9,
``.gif`` 256-colour palette per frame (median cut, no dithering). ``VideoWriter`` streams: frames are encoded as
they are written.
"""
from __future__ import annotations

import dataclasses
import fractions
import os
from typing import Sequence

import av
import numpy as np
from PIL import Image

# Reasons a file cannot be read; the data pipeline counts skips under these names.
MISSING_FILE = "missing_file"
EMPTY_FILE = "empty_file"
UNREADABLE = "unreadable"  # not a media file / no video stream / container cannot be opened
DECODE_ERROR = "decode_error"  # the stream breaks, or ends before frames its header promised
OUT_OF_RANGE = "out_of_range"  # a requested frame index is >= the number of frames

# A request whose first frame lies at least this deep into a seekable stream seeks instead of decoding from 0.
SEEK_MIN_FRAME = 32

_WRITE_CODECS = {".mp4": ("libx264", "yuv420p"), ".webm": ("libvpx-vp9", "yuv420p"), ".gif": ("gif", "pal8")}
_WRITE_OPTIONS = {".mp4": {"crf": "18", "preset": "medium"}, ".webm": {"crf": "30", "b:v": "0"}, ".gif": {}}


class _SeekMismatch(Exception):
    """Frame timestamps after a seek do not match frame counting (variable frame rate)."""


class MediaError(Exception):
    """A media file cannot be read as asked; ``reason`` is one of the module's reason constants."""

    def __init__(self, message: str, reason: str = UNREADABLE):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """Frame count (decodable frames), frame rate, and frame size of a video's first video stream."""

    num_frames: int
    fps: float
    height: int
    width: int


def _check_file(path: str) -> None:
    if not os.path.isfile(path):
        raise MediaError(f"{path}: no such file", MISSING_FILE)
    if os.path.getsize(path) == 0:
        raise MediaError(f"{path}: file is empty (0 bytes)", EMPTY_FILE)


class VideoReader:
    """One opened video: ``info`` (probing) and ``read`` (decoding) share the container. Context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        _check_file(self.path)
        self._container = None
        self._fresh = False  # container positioned at the start, nothing demuxed yet
        self._open()
        stream = self._stream
        self._fps = float(stream.average_rate or stream.guessed_rate or stream.base_rate or 0.0)
        self._header_frames = int(stream.frames or 0)
        self._num_frames: int | None = None
        self._height = int(stream.codec_context.height)
        self._width = int(stream.codec_context.width)
        if self._height <= 0 or self._width <= 0:
            self.close()
            raise MediaError(f"{self.path}: video stream has no frame size", UNREADABLE)

    def _open(self) -> None:
        if self._container is not None:
            self._container.close()
        try:
            self._container = av.open(self.path, "r")
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as e:
            raise MediaError(f"{self.path}: cannot open as media ({e})", UNREADABLE) from e
        if not self._container.streams.video:
            self._container.close()
            self._container = None
            raise MediaError(f"{self.path}: no video stream", UNREADABLE)
        self._stream = self._container.streams.video[0]
        self._fresh = True

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the stream, from the header."""
        return self._height, self._width

    @property
    def info(self) -> VideoInfo:
        """Header frame count when present, else the number of demuxed packets (no decoding)."""
        if self._num_frames is None:
            if self._header_frames > 0:
                self._num_frames = self._header_frames
            else:
                self._num_frames = self._count_packets()
        return VideoInfo(self._num_frames, self._fps, self._height, self._width)

    def _count_packets(self) -> int:
        if not self._fresh:
            self._open()
        self._fresh = False
        try:
            return sum(1 for packet in self._container.demux(self._stream) if packet.size > 0)
        except av.FFmpegError as e:
            raise MediaError(f"{self.path}: demuxing failed ({e})", DECODE_ERROR) from e

    def read(self, indices: Sequence[int] | None = None, size: tuple[int, int] | None = None) -> np.ndarray:
        """Frames ``indices`` (any order, repeats allowed; None = all) as uint8 ``[T, H, W, 3]`` RGB.

        ``size=(height, width)`` resizes each frame in swscale (area filter when shrinking) before RGB conversion.
        """
        height, width = size if size is not None else (self._height, self._width)
        if height <= 0 or width <= 0:
            raise ValueError(f"size: must be positive, got {size}")
        convert = dict(width=width, height=height,
                       interpolation="AREA" if height <= self._height and width <= self._width else "BILINEAR")
        if indices is None:
            decoded, _ = self._decode_from_zero(None, convert)
            if not decoded:
                raise MediaError(f"{self.path}: no decodable frames", DECODE_ERROR)
            return np.stack([decoded[i] for i in sorted(decoded)])
        order = np.asarray(indices, dtype=np.int64).reshape(-1)
        if order.size == 0:
            return np.zeros((0, height, width, 3), np.uint8)
        if order.min() < 0:
            raise MediaError(f"{self.path}: negative frame index {int(order.min())}", OUT_OF_RANGE)
        known = self._num_frames or self._header_frames or None  # never counts packets just to check
        if known is not None and order.max() >= known:
            raise MediaError(f"{self.path}: frame {int(order.max())} requested, video has {known}", OUT_OF_RANGE)
        wanted = np.unique(order)
        result = None
        if wanted[0] >= SEEK_MIN_FRAME:
            result = self._decode_after_seek(wanted, convert)
        if result is None:
            result = self._decode_from_zero(wanted, convert)
        decoded, error = result
        missing = [int(i) for i in wanted if int(i) not in decoded]
        if missing:
            # A stream that just ends early is a short video; one that breaks, or ends before its header's frame
            # count, is damaged.
            reason = DECODE_ERROR if error or known is not None else OUT_OF_RANGE
            raise MediaError(f"{self.path}: no frame {missing[0]} (decoded {len(decoded)} of {len(wanted)} "
                             f"requested{'; ' + error if error else ''})", reason)
        return np.stack([decoded[int(i)] for i in order])

    def _decode_from_zero(self, wanted: np.ndarray | None, convert: dict):
        """Decodes from the first frame, converting the wanted ones, stopping after the last wanted one."""
        if not self._fresh:
            self._open()
        self._fresh = False
        return self._collect(enumerate(self._container.decode(self._stream)), wanted, convert)

    def _decode_after_seek(self, wanted: np.ndarray, convert: dict):
        """Seeks to the keyframe before ``wanted[0]``; None when the stream cannot be seeked reliably.

        The keyframe's index comes from its timestamp (start time, time base, average rate), and is accepted only
        when it is within a quarter frame of an integer and not past the first wanted frame; every later frame's
        timestamp must agree with its count (within half a frame), else the stream is decoded from the start.
        """
        stream = self._stream
        first = int(wanted[0])
        if self._container.format.name == "gif" or not self._fps or stream.time_base is None:
            return None
        start_pts = stream.start_time or 0
        time_base = float(stream.time_base)
        try:
            self._container.seek(start_pts + int(first / self._fps / time_base), stream=stream,
                                 backward=True, any_frame=False)
        except av.FFmpegError:
            return None
        self._fresh = False
        frames = self._container.decode(stream)
        try:
            keyframe = next(frames)
        except (StopIteration, av.FFmpegError):
            return None
        if keyframe.pts is None:
            return None
        def index_of(frame: av.VideoFrame) -> float | None:
            return None if frame.pts is None else (frame.pts - start_pts) * time_base * self._fps

        exact = index_of(keyframe)
        if exact is None or abs(exact - round(exact)) > 0.25 or round(exact) > first:
            return None
        position = int(round(exact))

        def numbered():  # counts frames from the keyframe; stops on a timestamp that disagrees with the count
            yield position, keyframe
            for offset, frame in enumerate(frames, start=position + 1):
                exact = index_of(frame)
                if exact is not None and abs(exact - offset) > 0.5:
                    raise _SeekMismatch
                yield offset, frame

        try:
            return self._collect(numbered(), wanted, convert)
        except _SeekMismatch:  # variable frame rate or reordered leading frames: decode from the start instead
            return None

    def _collect(self, numbered_frames, wanted: np.ndarray | None,
                 convert: dict) -> tuple[dict[int, np.ndarray], str | None]:
        """Converts wanted frames from ``(index, frame)`` pairs; returns them and the decode error that ended the
        stream, if any. With ``wanted=None`` (read everything) a decode error raises: no partial video."""
        out: dict[int, np.ndarray] = {}
        last = None if wanted is None else int(wanted[-1])
        wanted_set = None if wanted is None else set(wanted.tolist())
        try:
            for position, frame in numbered_frames:
                if wanted_set is None or position in wanted_set:
                    out[position] = _to_rgb(frame, **convert)
                if last is not None and position >= last:
                    break
        except (av.FFmpegError, ValueError) as e:
            if wanted is None:
                raise MediaError(f"{self.path}: decoding failed ({e})", DECODE_ERROR) from e
            return out, str(e)
        return out, None


def _to_rgb(frame: av.VideoFrame, width: int, height: int, interpolation: str) -> np.ndarray:
    """uint8 ``[height, width, 3]``: resized in the decoder's pixel format first, then converted to RGB (resizing
    inside the RGB conversion shifts saturated colours by several levels in swscale)."""
    if (frame.width, frame.height) != (width, height):
        frame = frame.reformat(width=width, height=height, interpolation=interpolation)
    return frame.to_ndarray(format="rgb24")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and size of a video (GIF included) without decoding frames."""
    with VideoReader(path) as reader:
        return reader.info


def read_video(path: str | os.PathLike, indices: Sequence[int] | None = None, *,
               size: tuple[int, int] | None = None) -> np.ndarray:
    """Decodes frames ``indices`` (None = all) of a video as uint8 ``[T, H, W, 3]`` RGB; see ``VideoReader.read``."""
    with VideoReader(path) as reader:
        return reader.read(indices, size=size)


def _check_frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames


def _palette_frame(frame: np.ndarray) -> av.VideoFrame:
    """RGB frame -> 256-colour pal8 frame (median-cut palette of this frame)."""
    quantized = Image.fromarray(frame).quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = np.asarray(quantized.getpalette()[: 256 * 3], np.uint8).reshape(-1, 3)
    argb = np.zeros((256, 4), np.uint8)
    argb[:, 0] = 255
    argb[: len(palette), 1:] = palette
    return av.VideoFrame.from_ndarray((np.asarray(quantized, np.uint8), argb), format="pal8")


class VideoWriter:
    """Streaming video writer: ``with VideoWriter("a.mp4", fps=8) as w: w.write(frames)`` (codec by extension)."""

    def __init__(self, path: str | os.PathLike, fps: float = 8.0):
        self.path = os.fspath(path)
        self.ext = os.path.splitext(self.path)[1].lower()
        if self.ext not in _WRITE_CODECS:
            raise ValueError(f"path: unsupported extension {self.ext!r} (use one of {sorted(_WRITE_CODECS)})")
        if not fps > 0:
            raise ValueError(f"fps: must be > 0, got {fps}")
        self.fps = fractions.Fraction(fps).limit_denominator(1001)
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        elif self._container is not None:  # an error is propagating: release the file, keep the error
            self._container.close()
            self._container = None

    def _start(self, height: int, width: int) -> None:
        codec, pix_fmt = _WRITE_CODECS[self.ext]
        if self.ext == ".mp4" and (height % 2 or width % 2):
            raise ValueError(f"frames: H.264 (.mp4) needs even height and width, got {height}x{width}")
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        self._container = av.open(self.path, "w")
        self._stream = self._container.add_stream(codec, rate=self.fps, options=_WRITE_OPTIONS[self.ext])
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        self._size = (height, width)

    def write(self, frames: np.ndarray) -> None:
        """Encodes uint8 ``[T, H, W, 3]`` (or one ``[H, W, 3]``) frames; all writes must share one frame size."""
        frames = _check_frames(frames)
        if self._size is None:
            self._start(*frames.shape[1:3])
        elif frames.shape[1:3] != self._size:
            raise ValueError(f"frames: size {frames.shape[1:3]} differs from the first write's {self._size}")
        for frame in frames:
            if self.ext == ".gif":
                video_frame = _palette_frame(frame)
            else:
                video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)

    def close(self) -> None:
        """Flushes the encoder and closes the file (idempotent). Raises if nothing was written."""
        if self._container is None:
            if self._size is None:
                raise ValueError(f"{self.path}: no frames were written")
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 8.0) -> None:
    """Writes uint8 ``[T, H, W, 3]`` frames to ``.mp4`` (H.264), ``.webm`` (VP9) or ``.gif``."""
    with VideoWriter(path, fps) as writer:
        writer.write(frames)


def write_contact_sheet(path_png: str | os.PathLike, frames: np.ndarray, columns: int = 8) -> None:
    """Saves frames as one PNG grid, ``columns`` frames per row, row-major, 2-pixel black gutters."""
    frames = _check_frames(frames)
    if columns < 1:
        raise ValueError(f"columns: must be >= 1, got {columns}")
    count, height, width, _ = frames.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    gutter = 2
    sheet = np.zeros((rows * height + (rows - 1) * gutter, columns * width + (columns - 1) * gutter, 3), np.uint8)
    for i, frame in enumerate(frames):
        r, c = divmod(i, columns)
        y, x = r * (height + gutter), c * (width + gutter)
        sheet[y:y + height, x:x + width] = frame
    path_png = os.fspath(path_png)
    directory = os.path.dirname(path_png)
    if directory:
        os.makedirs(directory, exist_ok=True)
    Image.fromarray(sheet).save(path_png, format="PNG")
