"""Index sources on real mp4 / webm / gif / image files: sampling, captions, segments, bad input accounting."""
import os

import numpy as np
import pytest

import data_pipelines
from data_pipelines import config as config_lib
from data_pipelines import sources, stats, transforms
from test_data_fixtures import (frame_indices, make_corrupt_set, make_video, write_images, write_jsonl)
from vidrd_jax import media

SAMPLING = transforms.Sampling(num_frames=4, stride=3, height=32, width=32)  # span 10 frames


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("videos"))
    paths = {
        "a.mp4": make_video(os.path.join(root, "a.mp4"), 30),
        "b.webm": make_video(os.path.join(root, "b.webm"), 24, height=40, width=40),
        "c.gif": make_video(os.path.join(root, "c.gif"), 16, height=64, width=48),
        "long.mp4": make_video(os.path.join(root, "long.mp4"), 60),
    }
    paths.update(make_corrupt_set(root, paths["a.mp4"]))
    return root, paths


def _cfg(sources_, **overrides):
    cfg = config_lib.get_default_config()
    cfg.sources = sources_
    cfg.num_frames, cfg.stride, cfg.resolution = 4, 3, (32, 32)
    cfg.caption_dropout = 0.0
    cfg.read_threads = 2
    cfg.prefetch_batches = 0
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def test_video_sampling_keyframes_crop_and_range(media_dir):
    root, _ = media_dir
    index = write_jsonl(os.path.join(root, "videos.jsonl"), [
        {"path": "a.mp4", "caption": "clip a"},  # relative to the index folder
        {"path": os.path.join(root, "b.webm"), "captions": ["clip b one", "clip b two"]},
        {"path": "c.gif", "caption": "clip c", "label": "ignored"},
    ])
    src = sources.VideoIndexSource("videos", SAMPLING, index=index)
    assert len(src) == 3 and src.index_skips == {}
    lengths = {0: 30, 1: 24, 2: 16}
    b_captions = set()
    for seed in range(12):
        for i in range(3):
            frames, caption = src.load(i, np.random.default_rng(seed))
            assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
            idx = frame_indices(frames)
            assert np.diff(idx).tolist() == [3, 3, 3], (i, idx)
            assert 0 <= idx[0] and idx[-1] < lengths[i]
            if i == 1:
                b_captions.add(caption)
    assert b_captions == {"clip b one", "clip b two"}


def test_video_resize_shorter_side_then_crop(media_dir):
    root, paths = media_dir
    index = write_jsonl(os.path.join(root, "one.jsonl"), [{"path": "c.gif", "caption": "c"}])  # 64 x 48 gif
    src = sources.VideoIndexSource("one", SAMPLING, index=index)
    raw = src.load_raw(0, np.random.default_rng(0), keyframes=4)
    assert raw.frames.shape == (4, 43, 32, 3)  # shorter side 48 -> 32, aspect kept, uncropped
    full = media.read_video(paths["c.gif"], size=(43, 32))
    np.testing.assert_array_equal(raw.frames, full[frame_indices(raw.frames)])


def test_segments_from_the_captioning_index(media_dir):
    """Rows written by data_pipelines.captioning.segments: [start_frame, end_frame), end exclusive."""
    root, _ = media_dir
    index = write_jsonl(os.path.join(root, "segments.jsonl"), [
        {"path": "long.mp4", "caption": "first part", "label": "x", "start_frame": 5, "end_frame": 15},
        {"path": "long.mp4", "caption": "second part", "label": "x", "start_frame": 30, "end_frame": 60},
    ])
    src = sources.VideoIndexSource("segments", SAMPLING, index=index)
    first = {tuple(frame_indices(src.load(0, np.random.default_rng(s))[0])) for s in range(5)}
    assert first == {(5, 8, 11, 14)}  # exactly one admissible start: span 10 in a 10-frame segment
    starts = set()
    for s in range(30):
        idx = frame_indices(src.load(1, np.random.default_rng(s))[0])
        assert idx[0] >= 30 and idx[-1] <= 59
        starts.add(idx[0])
    assert len(starts) > 5


def test_index_rows_counted_and_csv(media_dir, tmp_path):
    root, _ = media_dir
    index = write_jsonl(str(tmp_path / "rows.jsonl"), [
        {"path": os.path.join(root, "a.mp4"), "caption": "ok"},
        {"path": os.path.join(root, "a.mp4"), "caption": "   "},  # empty caption
        {"path": os.path.join(root, "a.mp4"), "captions": []},  # empty caption
        {"caption": "no path"},  # bad row
        "{not json",  # bad row
        {"path": os.path.join(root, "a.mp4"), "caption": "x", "start_frame": 9, "end_frame": 3},  # bad segment
    ])
    src = sources.VideoIndexSource("rows", SAMPLING, index=index)
    assert len(src) == 1
    assert src.index_skips == {stats.EMPTY_CAPTION: 2, stats.BAD_ROW: 3}
    csv_path = tmp_path / "rows.csv"
    csv_path.write_text('path,caption,captions\n'
                        f'{os.path.join(root, "a.mp4")},one,\n'
                        f'{os.path.join(root, "b.webm")},,"[""two"", ""three""]"\n'
                        ',orphan,\n')
    src = sources.VideoIndexSource("csv", SAMPLING, index=str(csv_path))
    assert [r.captions for r in src.rows] == [("one",), ("two", "three")]
    assert src.index_skips == {stats.BAD_ROW: 1}


def test_corrupt_files_are_skipped_and_counted(media_dir):
    """truncated mp4, zero-byte file, text file named .mp4, 2-frame gif, missing file: counted, no crash."""
    root, paths = media_dir
    rows = [{"path": p, "caption": "good"} for p in (paths["a.mp4"], paths["b.webm"], paths["c.gif"])]
    rows += [{"path": paths[name], "caption": name} for name in ("truncated.mp4", "empty.mp4", "text.mp4",
                                                                  "short.gif")]
    rows += [{"path": os.path.join(root, "missing.mp4"), "caption": "gone"}, {"path": "a.mp4", "caption": ""}]
    index = write_jsonl(os.path.join(root, "mixed.jsonl"), rows)
    cfg = _cfg([config_lib.source("mixed", "video_index", index=index)], num_epochs=1, drop_remainder=False)
    with data_pipelines.make_iterator(cfg, batch_size=2) as it:
        batches = list(it)
        report = it.stats()
    assert sum(len(b["caption"]) for b in batches) == 3
    assert all(c == "good" for b in batches for c in b["caption"])
    assert report["decoded"] == {"mixed": 3}
    assert report["skipped"]["mixed"] == {media.UNREADABLE: 2, media.EMPTY_FILE: 1, stats.TOO_SHORT: 1,
                                          media.MISSING_FILE: 1, stats.EMPTY_CAPTION: 1}
    assert report["total_skipped"] == 6


def test_too_small_videos_are_skipped(media_dir):
    root, _ = media_dir
    index = write_jsonl(os.path.join(root, "small.jsonl"), [{"path": "b.webm", "caption": "40 x 40"}])
    src = sources.VideoIndexSource("small", SAMPLING, index=index, min_side=41)
    with pytest.raises(stats.SkipError) as e:
        src.load(0, np.random.default_rng(0))
    assert e.value.reason == stats.TOO_SMALL
    assert sources.VideoIndexSource("ok", SAMPLING, index=index).min_side == 16  # default: half the target


def test_all_bad_source_raises_naming_it(media_dir):
    root, paths = media_dir
    rows = [{"path": paths[n], "caption": n} for n in ("truncated.mp4", "empty.mp4", "text.mp4", "short.gif")]
    index = write_jsonl(os.path.join(root, "bad.jsonl"), rows)
    good = write_jsonl(os.path.join(root, "good.jsonl"), [{"path": "a.mp4", "caption": "good"}])
    finite = _cfg([config_lib.source("broken_set", "video_index", index=index)], num_epochs=1)
    with data_pipelines.make_iterator(finite, batch_size=1) as it:
        with pytest.raises(stats.SourceFailedError, match="broken_set"):
            list(it)
    forever = _cfg([config_lib.source("fine", "video_index", 1.0, index=good),
                    config_lib.source("broken_set", "video_index", 1.0, index=index)], max_consecutive_skips=8)
    with data_pipelines.make_iterator(forever, batch_size=1) as it:
        with pytest.raises(stats.SourceFailedError, match="broken_set.*unreadable"):
            for _ in range(20):
                next(it)
    empty = write_jsonl(os.path.join(root, "empty_captions.jsonl"), [{"path": "a.mp4", "caption": ""}])
    with pytest.raises(stats.SourceFailedError, match="captionless"):
        data_pipelines.make_iterator(_cfg([config_lib.source("captionless", "video_index", index=empty)]),
                                     batch_size=1)


def test_images_become_pseudo_videos_with_deliberate_conversions(tmp_path):
    paths = write_images(str(tmp_path))
    index = write_jsonl(str(tmp_path / "images.jsonl"),
                        [{"path": os.path.basename(p), "caption": name} for name, p in paths.items()])
    src = sources.ImageIndexSource("images", SAMPLING, index=index, zoom_range=(1.0, 1.2), pan_range=(0.0, 0.1))
    by_caption = {row.captions[0]: i for i, row in enumerate(src.rows)}
    frames, caption = src.load(by_caption["rgb.jpg"], np.random.default_rng(0))
    assert frames.shape == (4, 32, 32, 3) and caption == "rgb.jpg"
    raw = src.load_raw(by_caption["rgb.jpg"], np.random.default_rng(0), 4)
    assert raw.kind == "image" and raw.frames.shape == (1, 38, 38, 3)  # 512 -> round(32 * 1.2) (JPEG draft + fit)
    gray, _ = src.load(by_caption["gray.png"], np.random.default_rng(0))
    assert gray.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(gray[..., 0], gray[..., 1])  # grayscale replicated to RGB
    assert src.load_raw(by_caption["rgba.png"], np.random.default_rng(0), 4).frames.shape == (1, 38, 38, 3)
    rgba = sources.load_image(paths["rgba.png"], min_side=1)
    assert rgba.shape == (64, 64, 3)
    assert (rgba[:, :32] == 255).all()  # transparent half composited over white
    assert (rgba[:, 32:] == [200, 0, 0]).all()  # opaque half unchanged
    for name, reason in (("tiny.png", stats.TOO_SMALL), ("truncated.jpg", media.DECODE_ERROR)):
        with pytest.raises(stats.SkipError) as e:
            src.load(by_caption[name], np.random.default_rng(0))
        assert e.value.reason == reason, name


def test_index_errors_name_the_field(tmp_path):
    with pytest.raises(FileNotFoundError, match="index"):
        sources.VideoIndexSource("x", SAMPLING, index=str(tmp_path / "nope.jsonl"))
    bad = tmp_path / "index.txt"
    bad.write_text("path\n")
    with pytest.raises(ValueError, match="index"):
        sources.VideoIndexSource("x", SAMPLING, index=str(bad))
    segment = write_jsonl(str(tmp_path / "seg.jsonl"), [{"path": "a.png", "caption": "c", "start_frame": 3}])
    with pytest.raises(stats.SourceFailedError, match="bad_row"):  # images have no segments
        sources.ImageIndexSource("x", SAMPLING, index=segment)
