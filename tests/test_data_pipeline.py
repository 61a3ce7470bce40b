"""make_iterator: batches, mixture weights, caption dropout, per-host sharding, exact resume, config validation."""
import json

import grain
import numpy as np
import pytest

import data_pipelines
from data_pipelines import builtin, config as config_lib, transforms


def _cfg(**overrides):
    cfg = config_lib.get_default_config()
    cfg.num_frames, cfg.stride, cfg.resolution = 2, 4, (16, 16)
    cfg.read_threads = 2
    for k, v in overrides.items():
        cfg[k] = v
    return cfg


def _is_shapes(caption: str) -> bool:
    return "moving" in caption


def test_default_config_batches():
    cfg = _cfg(caption_dropout=0.0)
    with data_pipelines.make_iterator(cfg, batch_size=3) as it:
        batch = next(it)
    assert set(batch) == {"video", "caption"}
    assert batch["video"].shape == (3, 2, 16, 16, 3) and batch["video"].dtype == np.float32
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
    assert batch["video"].min() < -0.5 and batch["video"].max() > 0.5  # uses the range
    assert batch["caption"].shape == (3,) and batch["caption"].dtype.kind == "U"
    assert all(batch["caption"])


def test_mixture_proportions_and_caption_dropout():
    cfg = _cfg(caption_dropout=0.25)
    cfg.sources = [config_lib.source("shapes", "shapes", 3.0, num_items=500),
                   config_lib.source("photos", "photos", 1.0, num_items=500)]
    captions = []
    with data_pipelines.make_iterator(cfg, batch_size=8) as it:
        for _ in range(40):
            captions.extend(next(it)["caption"].tolist())
        report = it.stats()
    assert report["decoded"]["shapes"] + report["decoded"]["photos"] >= 320
    kept = [c for c in captions if c]
    assert 0.18 < 1 - len(kept) / len(captions) < 0.32  # dropout ~ 0.25
    shapes_share = sum(map(_is_shapes, kept)) / len(kept)
    assert abs(shapes_share - 0.75) < 0.06
    assert abs(report["decoded"]["shapes"] / sum(report["decoded"].values()) - 0.75) < 0.03


def test_per_host_shards_are_disjoint_and_complete():
    sampling = transforms.Sampling(num_frames=2, stride=4, height=16, width=16)
    source = builtin.ShapesSource("shapes", sampling, num_items=20, seed=0)
    key_of = {transforms.to_model_range(source.load(i, None)[0]).tobytes(): i for i in range(20)}
    assert len(key_of) == 20
    cfg = _cfg(caption_dropout=0.0, num_epochs=1, drop_remainder=False)
    cfg.sources = [config_lib.source("shapes", "shapes", num_items=20, seed=0)]
    seen = []
    for host in range(3):
        with data_pipelines.make_iterator(cfg, batch_size=4, process_index=host, process_count=3) as it:
            items = [key_of[v.tobytes()] for b in it for v in b["video"]]
        assert len(items) in (6, 7)
        seen.append(items)
    flat = [i for items in seen for i in items]
    assert sorted(flat) == list(range(20))  # complete, and disjoint (no repeats)


def _take(it, n):
    return [next(it) for _ in range(n)]


def _assert_same(batches_a, batches_b):
    for a, b in zip(batches_a, batches_b, strict=True):
        np.testing.assert_array_equal(a["video"], b["video"])
        assert a["caption"].tolist() == b["caption"].tolist()


def test_exact_resume_single_process():
    cfg = _cfg()
    with data_pipelines.make_iterator(cfg, batch_size=4, seed=7) as it:
        _take(it, 3)
        state = json.loads(json.dumps(it.get_state()))  # JSON round trip, as in Grain/Orbax checkpoints
        stats_at_save = it.stats()
        expected = _take(it, 3)
    with data_pipelines.make_iterator(cfg, batch_size=4, seed=7) as resumed:
        resumed.set_state(state)
        assert resumed.stats() == stats_at_save
        _assert_same(_take(resumed, 3), expected)
    with data_pipelines.make_iterator(cfg, batch_size=4, seed=8) as other:
        assert not np.array_equal(next(other)["video"], expected[0]["video"])


def test_exact_resume_with_worker_processes_and_grain_checkpoint(tmp_path):
    """Two spawned Grain workers; state saved/restored through grain.checkpoint.CheckpointHandler (Orbax's)."""
    cfg = _cfg(worker_count=2, read_threads=1)
    handler = grain.checkpoint.CheckpointHandler()
    with data_pipelines.make_iterator(cfg, batch_size=2) as it:
        first = _take(it, 3)
        handler.save(tmp_path, it)
        expected = _take(it, 3)
        report = it.stats()
    assert sum(report["decoded"].values()) >= 12  # counts reach the main process from the workers
    with data_pipelines.make_iterator(_cfg(worker_count=0), batch_size=2) as single:
        assert not all(np.array_equal(a["video"], b["video"]) for a, b in zip(first, _take(single, 3)))
    with data_pipelines.make_iterator(cfg, batch_size=2) as resumed:
        handler.restore(tmp_path, resumed)
        _assert_same(_take(resumed, 3), expected)


def test_config_validation_names_fields():
    cases = [
        ({"caption_dropout": 1.5}, "caption_dropout"),
        ({"resolution": (16, 0)}, "resolution"),
        ({"num_frames": 0}, "num_frames"),
        ({"worker_count": -1}, "worker_count"),
        ({"num_epochs": 0}, "num_epochs"),
    ]
    for overrides, field in cases:
        with pytest.raises(ValueError, match=field):
            config_lib.validate_config(_cfg(**overrides))
    cfg = _cfg()
    cfg.sources[0].weight = -1.0
    with pytest.raises(ValueError, match=r"sources\[0\]\.weight"):
        config_lib.validate_config(cfg)
    cfg = _cfg()
    cfg.sources[1].params.sparkle = 3
    with pytest.raises(ValueError, match=r"sources\[1\]\.params\.sparkle"):
        config_lib.validate_config(cfg)
    cfg = _cfg()
    cfg.sources = [config_lib.source("v", "video_index")]
    with pytest.raises(ValueError, match=r"sources\[0\]\.params\.index: required"):
        config_lib.validate_config(cfg)
    cfg = _cfg()
    cfg.sources = [config_lib.source("a", "shapes"), config_lib.source("a", "photos")]
    with pytest.raises(ValueError, match=r"sources\[1\]\.name"):
        config_lib.validate_config(cfg)
    cfg = _cfg()
    cfg.sources = [config_lib.source("a", "youtube")]
    with pytest.raises(ValueError, match=r"sources\[0\]\.kind"):
        config_lib.validate_config(cfg)
    cfg = _cfg()
    cfg.sources[0].params.split = "nonsense"
    with pytest.raises(ValueError, match=r"sources\[0\] \('shapes'\): split"):
        data_pipelines.make_iterator(cfg, batch_size=1)
    with pytest.raises(ValueError, match="process_index"):
        data_pipelines.make_iterator(_cfg(), batch_size=1, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="batch_size"):
        data_pipelines.make_iterator(_cfg(), batch_size=0)


def test_paper_config_weights_follow_table1(tmp_path):
    cfg = config_lib.get_paper_config({"webvid2m": "/data/webvid.jsonl", "laion5b": "/data/laion.jsonl"})
    config_lib.validate_config(cfg)
    assert [(s.name, s.kind, s.weight) for s in cfg.sources] == [
        ("webvid2m", "video_index", 1700.0), ("laion5b", "image_index", 640.0)]
    assert (cfg.num_frames, cfg.stride, cfg.resolution, cfg.caption_dropout) == (8, 4, (256, 256), 0.1)
    with pytest.raises(ValueError, match="index_paths"):
        config_lib.get_paper_config({"youtube8m": "x"})
