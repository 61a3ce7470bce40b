"""vidrd_jax.media: PyAV readers/writers on real mp4 / webm / gif files."""
import fractions
import os

import av
import numpy as np
import pytest
from PIL import Image

from vidrd_jax import media

T, H, W = 40, 32, 48


def _frames(num_frames: int = T, height: int = H, width: int = W) -> np.ndarray:
    """Smooth frames whose top-left block encodes the frame index (value 6 * t), robust to lossy codecs."""
    y = np.linspace(0, 255, height)[:, None]
    x = np.linspace(0, 255, width)[None, :]
    frames = np.zeros((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = (y * 0.5 + 2 * t) % 256
        frames[t, ..., 1] = x * 0.6
        frames[t, ..., 2] = 128
        frames[t, :16, :16] = 6 * t % 256
    return frames


def _index_of(frame: np.ndarray, scale: int = 1) -> int:
    return int(round(frame[4 // scale:12 // scale, 4 // scale:12 // scale].mean() / 6))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    frames = _frames()
    paths = {}
    for ext in (".mp4", ".webm", ".gif"):
        paths[ext] = str(root / f"clip{ext}")
        media.write_video(paths[ext], frames, fps=8)
    return frames, paths


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".gif"])
def test_write_read_roundtrip(videos, ext):
    frames, paths = videos
    info = media.probe_video(paths[ext])
    assert (info.num_frames, info.height, info.width) == (T, H, W)
    assert info.fps == pytest.approx(8.0, rel=0.05)
    decoded = media.read_video(paths[ext])
    assert decoded.shape == (T, H, W, 3) and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - frames).mean() < 6
    assert [_index_of(f) for f in decoded] == list(range(T))


@pytest.mark.parametrize("ext", [".mp4", ".webm", ".gif"])
def test_read_indices_order_repeats_and_resize(videos, ext):
    _, paths = videos
    full = media.read_video(paths[ext])
    idx = [7, 3, 7, 39]
    part = media.read_video(paths[ext], idx)
    np.testing.assert_array_equal(part, full[idx])
    small = media.read_video(paths[ext], [0, 5], size=(16, 24))
    assert small.shape == (2, 16, 24, 3)
    assert [_index_of(f, scale=2) for f in small] == [0, 5]
    with pytest.raises(media.MediaError) as e:
        media.read_video(paths[ext], [T])
    assert e.value.reason == media.OUT_OF_RANGE


@pytest.mark.parametrize("codec,ext", [("libx264", ".mp4"), ("libvpx-vp9", ".webm")])
def test_seek_matches_sequential_decode(tmp_path, codec, ext):
    """Frames deep into a stream with frequent keyframes are read by seeking; they equal a full decode."""
    frames = _frames(num_frames=120)
    path = str(tmp_path / f"long{ext}")
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=24, options={"g": "10"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    wanted = np.array([90, 94, 98, 102])
    with media.VideoReader(path) as reader:
        decoded, _ = reader._decode_after_seek(wanted, dict(width=W, height=H, interpolation="AREA"))
        assert min(decoded) == 90  # the seek path was taken and positioned exactly
        sought = reader.read(wanted)
    np.testing.assert_array_equal(sought, media.read_video(path)[wanted])
    assert np.abs(sought.astype(int) - frames[wanted]).mean() < 6


def test_streaming_writer_appends(tmp_path):
    frames = _frames()
    path = str(tmp_path / "stream.mp4")
    with media.VideoWriter(path, fps=8) as writer:
        writer.write(frames[:10])
        writer.write(frames[10])  # one [H, W, 3] frame
        writer.write(frames[11:])
        with pytest.raises(ValueError, match="size"):
            writer.write(np.zeros((1, H + 2, W, 3), np.uint8))
    assert [_index_of(f) for f in media.read_video(path)] == list(range(T))


def test_writer_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="extension"):
        media.VideoWriter(str(tmp_path / "a.avi"))
    with pytest.raises(ValueError, match="fps"):
        media.VideoWriter(str(tmp_path / "a.mp4"), fps=0)
    with pytest.raises(ValueError, match="frames"):
        media.write_video(str(tmp_path / "a.mp4"), np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="even"):
        media.write_video(str(tmp_path / "a.mp4"), np.zeros((2, 9, 8, 3), np.uint8))


def test_contact_sheet(tmp_path):
    frames = _frames(num_frames=5)
    path = str(tmp_path / "sheet.png")
    media.write_contact_sheet(path, frames, columns=3)
    sheet = np.asarray(Image.open(path))
    assert sheet.shape == (2 * H + 2, 3 * W + 2 * 2, 3)
    np.testing.assert_array_equal(sheet[:H, :W], frames[0])
    np.testing.assert_array_equal(sheet[H + 2:, W + 2:2 * W + 2], frames[4])
    assert (sheet[H + 2:, 2 * W + 4:] == 0).all()  # empty sixth cell


def test_bad_files_raise_media_error_with_reason(tmp_path, videos):
    _, paths = videos
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 20)
    data = open(paths[".mp4"], "rb").read()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    cases = {str(tmp_path / "missing.mp4"): media.MISSING_FILE, str(empty): media.EMPTY_FILE,
             str(text): media.UNREADABLE, str(truncated): media.UNREADABLE}
    for path, reason in cases.items():
        with pytest.raises(media.MediaError) as e:
            media.read_video(path, [0])
        assert e.value.reason == reason, path
        assert os.path.basename(path) in str(e.value)


def test_variable_frame_rate_falls_back_to_sequential_decode(tmp_path):
    """Frame timestamps that disagree with the average rate: the seek is refused, frames still come out right."""
    frames = _frames(num_frames=90)
    path = str(tmp_path / "vfr.mp4")
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=24, options={"g": "10"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = fractions.Fraction(1, 1000)
        pts = 0
        for t, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts, frame.time_base = pts, fractions.Fraction(1, 1000)
            pts += 20 if t % 3 else 80  # uneven frame durations
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    wanted = np.array([60, 70, 80])
    with media.VideoReader(path) as reader:
        assert reader._decode_after_seek(wanted, dict(width=W, height=H, interpolation="AREA")) is None
        decoded = reader.read(wanted)
    np.testing.assert_array_equal(decoded, media.read_video(path)[wanted])
    assert np.abs(decoded.astype(int) - frames[wanted]).mean() < 6
