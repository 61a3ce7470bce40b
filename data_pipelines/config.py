"""Data pipeline config: a weighted mixture of sources (Table 1 style) plus sampling and loader settings.

``get_default_config()`` is the built-in offline dataset (synthetic shapes + skimage photo pseudo-videos);
``get_paper_config(index_paths)`` weights index sources by the video counts of the paper's Table 1.
``validate_config(cfg)`` raises ValueError naming the offending field.

Source kinds and their ``params`` (``registry.kind_params(kind)`` lists them with defaults):

- ``video_index``: ``index`` (CSV/JSONL, see ``sources``), ``min_side``
- ``image_index``: ``index``, ``min_side``, ``zoom_range``, ``pan_range`` (pseudo-videos, paper §4.2)
- ``shapes``: ``num_items``, ``split`` (train/heldout/all), ``holdout_fraction``, ``holdout_seed``, ``holdout``,
  ``textured_prob``, ``seed`` (built-in synthetic clips, see ``builtin``)
- ``photos``: ``num_items``, ``photos``, ``seed``, ``zoom_range``, ``pan_range`` (skimage photo pseudo-videos)
- ``array_record``: ``path`` (folder written by ``python -m data_pipelines.prepare``), ``zoom_range``, ``pan_range``
- ``tfds``: ``dataset``, ``split``, ``data_dir``, ``video_key``, ``caption_key``, ``min_side``, ``zoom_range``,
  ``pan_range`` (needs the ``tfds`` extra)
"""
from __future__ import annotations

import math
from typing import Mapping

import ml_collections

from data_pipelines import registry, transforms

# Paper Table 1: thousands of videos per dataset (LAION-5B: pseudo-videos made from images).
TABLE1_VIDEOS_K: dict[str, int] = {
    "webvid2m": 1700, "tgif": 100, "vatex": 35, "pexels": 360,  # well-captioned video-text
    "moments_in_time": 1000, "kinetics700": 650,  # short classification videos, BLIP-2 captions
    "videolt": 800,  # long classification videos, segment-then-caption
    "laion5b": 640,  # images -> pseudo-videos
}
_IMAGE_DATASETS = ("laion5b",)


def source(name: str, kind: str, weight: float = 1.0, **params) -> ml_collections.ConfigDict:
    """One ``sources`` entry."""
    return ml_collections.ConfigDict({"name": name, "kind": kind, "weight": float(weight), "params": params})


def get_default_config() -> ml_collections.ConfigDict:
    """Built-in offline mixture at the paper's sampling (8 keyframes every 4 frames, 256 x 256)."""
    cfg = ml_collections.ConfigDict()
    cfg.sources = [
        source("shapes", "shapes", 0.8, num_items=10000, split="train", holdout_fraction=0.2, holdout_seed=0),
        source("photos", "photos", 0.2, num_items=1000),
    ]
    cfg.num_frames = 8  # keyframes per clip (paper §5.1)
    cfg.stride = 4  # frames between keyframes (paper §5.1)
    cfg.resolution = (256, 256)  # (height, width) after shorter-side resize + random crop
    cfg.caption_dropout = 0.1  # P(caption -> "") for classifier-free guidance
    cfg.seed = 0  # shuffling and per-sample randomness
    cfg.shuffle = True
    cfg.num_epochs = None  # None: repeat forever (training); n: each source n times, then StopIteration
    cfg.drop_remainder = True  # finite runs: drop the last partial batch of each worker
    cfg.worker_count = 0  # grain worker processes (0: decode in this process's threads)
    cfg.worker_buffer_size = 2  # batches buffered per worker process
    cfg.read_threads = 4  # decoding threads per process (worker or main)
    cfg.read_buffer_size = 16  # elements decoded ahead per process
    cfg.prefetch_batches = 2  # batches prefetched by a thread in the training process
    cfg.max_consecutive_skips = 100  # a source failing this many items in a row raises (names it)
    return cfg


def get_paper_config(index_paths: Mapping[str, str]) -> ml_collections.ConfigDict:
    """Default config whose sources are the given Table 1 datasets (name -> index file), weighted by size."""
    unknown = sorted(set(index_paths) - set(TABLE1_VIDEOS_K))
    if unknown or not index_paths:
        raise ValueError(f"index_paths: keys must be a non-empty subset of {sorted(TABLE1_VIDEOS_K)}, "
                         f"got unknown {unknown}")
    cfg = get_default_config()
    cfg.sources = [source(name, "image_index" if name in _IMAGE_DATASETS else "video_index",
                          TABLE1_VIDEOS_K[name], index=path) for name, path in index_paths.items()]
    return cfg


def with_shapes_split(cfg: ml_collections.ConfigDict, split: str) -> ml_collections.ConfigDict:
    """A copy of ``cfg`` whose only sources are its ``shapes`` sources, switched to ``split`` (e.g. "heldout":
    evaluation clips of combinations training never saw); raises if ``cfg`` has no ``shapes`` source."""
    shapes = [spec for spec in cfg.sources if spec["kind"] == "shapes"]
    if not shapes:
        raise ValueError(f"split={split!r}: the data config has no 'shapes' source to take that split from")
    out = ml_collections.ConfigDict(cfg.to_dict())
    out.sources = [source(spec["name"], "shapes", spec["weight"], **{**dict(spec["params"]), "split": split})
                   for spec in shapes]
    return out


def resolution_hw(resolution) -> tuple[int, int]:
    """``256`` or ``(256, 256)`` -> ``(256, 256)``; raises naming ``resolution``."""
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        resolution = (resolution, resolution)
    if (not isinstance(resolution, (tuple, list)) or len(resolution) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in resolution)):
        raise ValueError(f"resolution: must be a positive int or (height, width), got {resolution!r}")
    return int(resolution[0]), int(resolution[1])


def sampling_from_config(cfg: ml_collections.ConfigDict) -> transforms.Sampling:
    height, width = resolution_hw(cfg.resolution)
    return transforms.Sampling(num_frames=cfg.num_frames, stride=cfg.stride, height=height, width=width)


def _check_int(cfg, field: str, minimum: int) -> None:
    value = cfg[field]
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{field}: must be an int >= {minimum}, got {value!r}")


def validate_config(cfg: ml_collections.ConfigDict) -> None:
    """Checks every field (and each source's kind, weight, and parameter names); errors name the field."""
    required = ("sources", "num_frames", "stride", "resolution", "caption_dropout", "seed", "shuffle", "num_epochs",
                "drop_remainder", "worker_count", "worker_buffer_size", "read_threads", "read_buffer_size",
                "prefetch_batches", "max_consecutive_skips")
    for field in required:
        if field not in cfg:
            raise ValueError(f"{field}: missing from the data config")
    _check_int(cfg, "num_frames", 1)
    _check_int(cfg, "stride", 1)
    resolution_hw(cfg.resolution)
    p = cfg.caption_dropout
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0.0 <= p <= 1.0:
        raise ValueError(f"caption_dropout: must be a probability in [0, 1], got {p!r}")
    _check_int(cfg, "seed", 0)
    for field in ("shuffle", "drop_remainder"):
        if not isinstance(cfg[field], bool):
            raise ValueError(f"{field}: must be a bool, got {cfg[field]!r}")
    if cfg.num_epochs is not None:
        _check_int(cfg, "num_epochs", 1)
    _check_int(cfg, "worker_count", 0)
    _check_int(cfg, "worker_buffer_size", 1)
    _check_int(cfg, "read_threads", 1)
    _check_int(cfg, "read_buffer_size", 0)
    _check_int(cfg, "prefetch_batches", 0)
    _check_int(cfg, "max_consecutive_skips", 1)
    if not isinstance(cfg.sources, (list, tuple)) or not cfg.sources:
        raise ValueError(f"sources: must be a non-empty list of {{name, kind, weight, params}}, got {cfg.sources!r}")
    names = set()
    for i, spec in enumerate(cfg.sources):
        where = f"sources[{i}]"
        for field in ("name", "kind", "weight"):
            if field not in spec:
                raise ValueError(f"{where}.{field}: missing")
        if not isinstance(spec["name"], str) or not spec["name"]:
            raise ValueError(f"{where}.name: must be a non-empty string, got {spec['name']!r}")
        if spec["name"] in names:
            raise ValueError(f"{where}.name: {spec['name']!r} is used by two sources")
        names.add(spec["name"])
        weight = spec["weight"]
        if (not isinstance(weight, (int, float)) or isinstance(weight, bool) or not math.isfinite(weight)
                or weight <= 0):
            raise ValueError(f"{where}.weight: must be a finite number > 0, got {weight!r}")
        if spec["kind"] not in registry.SOURCE_KINDS:
            raise ValueError(f"{where}.kind: {spec['kind']!r} is not one of {sorted(registry.SOURCE_KINDS)}")
        registry.check_params(spec["kind"], registry.plain_params(spec), where)
