"""prepare -> ArrayRecord shards -> array_record source; the TFDS source's guarded code path."""
import json
import logging
import os
import runpy
import sys
import types

import numpy as np
import pytest

import data_pipelines
from data_pipelines import (array_record_source, base, builtin, config as config_lib, prepare, registry, stats,
                            transforms)
from test_data_fixtures import frame_indices, make_corrupt_set, make_video, write_jsonl
from vidrd_jax import media

SAMPLING = transforms.Sampling(num_frames=2, stride=3, height=16, width=16)


def test_shapes_roundtrip_equals_source(tmp_path):
    spec = {"name": "shapes", "kind": "shapes", "params": {"num_items": 7, "seed": 3}}
    info = prepare.prepare(spec, SAMPLING, str(tmp_path), records_per_shard=3)
    assert info["num_records"] == 7 and [s["num_records"] for s in info["shards"]] == [3, 3, 1]
    assert json.load(open(tmp_path / "dataset_info.json"))["shards"] == info["shards"]
    source = builtin.ShapesSource("shapes", SAMPLING, num_items=7, seed=3)
    shards = array_record_source.ArrayRecordSource("shards", SAMPLING, path=str(tmp_path))
    assert len(shards) == 7
    for i in range(7):
        frames, caption = source.load(i, None)
        again, again_caption = shards.load(i, np.random.default_rng(i))
        np.testing.assert_array_equal(again, frames)  # same size + window: identity augment
        assert again_caption == caption


def test_video_index_roundtrip_with_skips_and_cli(tmp_path):
    root = str(tmp_path)
    good = [make_video(os.path.join(root, f"v{i}.mp4"), 12 + 4 * i, height=24, width=32) for i in range(3)]
    bad = make_corrupt_set(root, good[0])
    rows = [{"path": p, "captions": [f"video {i}", f"clip {i}"]} for i, p in enumerate(good)]
    rows += [{"path": p, "caption": name} for name, p in bad.items()] + [{"path": good[0], "caption": ""}]
    index = write_jsonl(os.path.join(root, "index.jsonl"), rows)
    spec_path = os.path.join(root, "source.json")
    json.dump({"name": "vids", "kind": "video_index", "params": {"index": index}}, open(spec_path, "w"))
    out = os.path.join(root, "shards")
    info = prepare.main(["--source-config", spec_path, "--out", out, "--num-frames", "2", "--stride", "3",
                         "--resolution", "16", "--keyframes", "3", "--seed", "5"])
    assert info["num_records"] == 3 and info["keyframes"] == 3
    assert info["skipped"] == {media.UNREADABLE: 2, media.EMPTY_FILE: 1, stats.TOO_SHORT: 1,
                               stats.EMPTY_CAPTION: 1}
    source = registry.make_source({"name": "vids", "kind": "video_index", "params": {"index": index}}, SAMPLING)
    shards = array_record_source.ArrayRecordSource("shards", SAMPLING, path=out)
    for i in range(3):
        stored = array_record_source.decode_record(shards._records[i])
        expected = source.load_raw(i, np.random.default_rng([5, i]), 3)
        np.testing.assert_array_equal(stored.frames, expected.frames)  # pre-decoded bytes equal the source
        assert stored.frames.shape == (3, 16, 21, 3)  # shorter side resized, uncropped
        assert stored.captions == expected.captions and stored.key == good[i]
        idx = frame_indices(stored.frames)
        assert np.diff(idx).tolist() == [3, 3]
        window = frame_indices(shards.load(i, np.random.default_rng(0))[0])
        assert window in (idx[:2], idx[1:])  # two consecutive stored keyframes
    cfg = config_lib.get_default_config()
    cfg.sources = [config_lib.source("vids", "array_record", path=out)]
    cfg.num_frames, cfg.stride, cfg.resolution, cfg.caption_dropout = 2, 3, (16, 16), 0.0
    with data_pipelines.make_iterator(cfg, batch_size=3) as it:
        batch = next(it)
    assert batch["video"].shape == (3, 2, 16, 16, 3)
    assert set(batch["caption"].tolist()) <= {f"{w} {i}" for w in ("video", "clip") for i in range(3)}
    cfg.stride = 4
    with pytest.raises(ValueError, match="stride"):
        data_pipelines.make_iterator(cfg, batch_size=1)


def test_images_and_python_config_source(tmp_path):
    config_file = tmp_path / "data_config.py"
    config_file.write_text(
        "from data_pipelines import config\n"
        "def get_config():\n"
        "    cfg = config.get_default_config()\n"
        "    cfg.resolution = (16, 16)\n"
        "    cfg.num_frames = 2\n"
        "    cfg.sources = [config.source('photos', 'photos', num_items=3), config.source('s', 'shapes')]\n"
        "    return cfg\n")
    out = str(tmp_path / "photos")
    info = prepare.main(["--source-config", str(config_file), "--source", "photos", "--out", out])
    assert info["num_records"] == 3 and info["resolution"] == [16, 16]
    shards = array_record_source.ArrayRecordSource("p", SAMPLING, path=out)
    frames, caption = shards.load(0, np.random.default_rng(0))
    assert frames.shape == (2, 16, 16, 3) and caption in builtin.PHOTOS.values()
    assert array_record_source.decode_record(shards._records[0]).kind == "image"
    with pytest.raises(ValueError, match="--source"):
        prepare.main(["--source-config", str(config_file), "--out", out])


def test_all_bad_source_raises_and_damaged_record_is_skipped(tmp_path):
    index = write_jsonl(str(tmp_path / "bad.jsonl"), [{"path": "missing.mp4", "caption": "x"}])
    with pytest.raises(stats.SourceFailedError, match="nothing_good"):
        prepare.prepare({"name": "nothing_good", "kind": "video_index", "params": {"index": index}}, SAMPLING,
                        str(tmp_path / "out"))
    with pytest.raises(stats.SkipError) as e:
        array_record_source.decode_record(b"\x93garbage")
    assert e.value.reason == media.DECODE_ERROR


def test_tfds_source_guarded_and_working(monkeypatch):
    spec = {"name": "tfds_vids", "kind": "tfds", "params": {"dataset": "my_videos", "split": "train"}}
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(ImportError, match="tfds_vids.*tensorflow_datasets.*vidrd_jax\\[tfds\\]"):
        registry.make_source(spec, SAMPLING)
    video = np.zeros((12, 20, 24, 3), np.uint8)
    video[..., 0] = (10 * np.arange(12))[:, None, None]
    examples = [{"video": video, "caption": b"a fake tfds video"},
                {"video": video[:3], "caption": b"too short"},
                {"video": np.full((20, 20, 3), 90, np.uint8), "caption": np.array([b"an image", b"a picture"])}]
    calls = []

    def data_source(name, split, data_dir):
        calls.append((name, split, data_dir))
        return examples

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(data_source=data_source))
    source = registry.make_source(spec, SAMPLING)
    assert calls == [("my_videos", "train", None)] and len(source) == 3
    frames, caption = source.load(0, np.random.default_rng(0))
    assert frames.shape == (2, 16, 16, 3) and caption == "a fake tfds video"
    assert np.diff(frame_indices(frames)).tolist() == [3]
    with pytest.raises(stats.SkipError) as e:
        source.load(1, np.random.default_rng(0))
    assert e.value.reason == stats.TOO_SHORT and str(e.value).startswith("my_videos/train/1: 3 frames")
    frames, caption = source.load(2, np.random.default_rng(0))
    assert frames.shape == (2, 16, 16, 3) and caption in ("an image", "a picture")


def test_too_short_skips_name_the_file(tmp_path, caplog):
    good = make_video(str(tmp_path / "good.mp4"), 12, height=24, width=32)
    short = make_corrupt_set(str(tmp_path), good)["short.gif"]  # 2 frames; a clip here spans 4
    index = write_jsonl(str(tmp_path / "index.jsonl"), [{"path": p, "caption": "c"} for p in (good, short)])
    spec = {"name": "vids", "kind": "video_index", "params": {"index": index}}
    with caplog.at_level(logging.WARNING):
        info = prepare.prepare(spec, SAMPLING, str(tmp_path / "out"))
    assert info["skipped"] == {stats.TOO_SHORT: 1}
    logged = [r.getMessage() for r in caplog.records if stats.TOO_SHORT in r.getMessage()]
    assert len(logged) == 1 and f"{short}: 2 frames in [0, 2), need 4" in logged[0], logged
    raw = base.Raw(np.zeros((1, 16, 16, 3), np.uint8), ["c"], base.CLIP, "shard-00001/item 7")  # 1 stored keyframe
    with pytest.raises(stats.SkipError, match="^shard-00001/item 7: 1 stored keyframes, need 2$"):
        registry.make_source(spec, SAMPLING).augment(raw, np.random.default_rng(0))


def _run_prepare(monkeypatch, *args: str) -> int:
    """``python -m data_pipelines.prepare args`` in this process; returns the exit status."""
    monkeypatch.setattr(sys, "argv", ["prepare", *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("data_pipelines.prepare", run_name="__main__")
    return exit_info.value.code


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
def test_cli_errors_are_one_line_with_status_2(tmp_path, monkeypatch, capsys):
    index = write_jsonl(str(tmp_path / "bad.jsonl"), [{"path": "missing.mp4", "caption": "x"}])
    spec = json.dumps({"name": "nothing_good", "kind": "video_index", "params": {"index": index}})
    for source_config, message in (("{not json", "neither a file nor inline JSON"),
                                   (json.dumps({"name": "x", "kind": "no_such_kind"}), "no_such_kind"),
                                   (spec, "'nothing_good': none of its 1 items could be decoded")):
        assert _run_prepare(monkeypatch, "--source-config", source_config, "--out", str(tmp_path / "out")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
