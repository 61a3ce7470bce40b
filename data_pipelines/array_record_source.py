"""ArrayRecord shards of pre-decoded clips: the record format, the shard writer, and the reading source.

A record is msgpack ``{"format": 1, "kind": "clip" | "image", "key": str, "captions": [str], "shape": [T, h, w, 3],
"frames": bytes}`` with raw uint8 frames: clips hold ``keyframes`` frames already ``stride`` apart, resized so they
just cover the target (shorter side = target side for square targets) but not cropped; images hold one frame fitted
for zooming. Reading applies the same ``augment`` as the original source (random keyframe window, random crop,
caption choice; zoom/pan for images), so training from shards keeps the paper's augmentations.

A shard folder holds ``{name}-{k:05d}.array_record`` files (``group_size:1`` for random access) and
``dataset_info.json`` (format, shard files and record counts, sampling used, skip counts).
"""
from __future__ import annotations

import json
import os

import msgpack
import numpy as np

from data_pipelines import base, pseudo_video, stats, transforms
from vidrd_jax import media

FORMAT = 1
INFO_FILE = "dataset_info.json"
WRITER_OPTIONS = "group_size:1"


def encode_record(raw: base.Raw) -> bytes:
    frames = np.ascontiguousarray(raw.frames)
    return msgpack.packb({"format": FORMAT, "kind": raw.kind, "key": raw.key, "captions": list(raw.captions),
                          "shape": list(frames.shape), "frames": frames.tobytes()}, use_bin_type=True)


def decode_record(data: bytes) -> base.Raw:
    """Inverse of ``encode_record``; raises SkipError(decode_error) on a damaged record."""
    try:
        record = msgpack.unpackb(data, raw=False)
        if record.get("format") != FORMAT:
            raise ValueError(f"record format {record.get('format')!r} != {FORMAT}")
        shape = tuple(int(v) for v in record["shape"])
        frames = np.frombuffer(record["frames"], np.uint8).reshape(shape)
        return base.Raw(frames, base.clean_captions(record["captions"]), record["kind"], record["key"])
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as e:
        raise stats.SkipError(media.DECODE_ERROR, f"damaged record: {e}") from e


class ShardWriter:
    """Writes records into ``{out}/{name}-{k:05d}.array_record``, a new shard every ``records_per_shard``."""

    def __init__(self, out_dir: str, name: str, records_per_shard: int):
        from array_record.python import array_record_module  # pylint: disable=import-outside-toplevel

        if records_per_shard < 1:
            raise ValueError(f"records_per_shard: must be >= 1, got {records_per_shard}")
        self._module = array_record_module
        self.out_dir = out_dir
        self.name = name
        self.records_per_shard = records_per_shard
        self.shards: list[dict] = []
        self._writer = None
        os.makedirs(out_dir, exist_ok=True)

    def write(self, record: bytes) -> None:
        if self._writer is None or self.shards[-1]["num_records"] == self.records_per_shard:
            self._close_shard()
            file = f"{self.name}-{len(self.shards):05d}.array_record"
            self._writer = self._module.ArrayRecordWriter(os.path.join(self.out_dir, file), WRITER_OPTIONS)
            self.shards.append({"file": file, "num_records": 0})
        self._writer.write(record)
        self.shards[-1]["num_records"] += 1

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self, info: dict) -> dict:
        """Closes the last shard and writes ``dataset_info.json`` (``info`` plus format and shards); returns it."""
        self._close_shard()
        info = {"format": FORMAT, **info, "shards": self.shards,
                "num_records": sum(s["num_records"] for s in self.shards)}
        with open(os.path.join(self.out_dir, INFO_FILE), "w") as f:
            json.dump(info, f, indent=2)
        return info


def read_info(path: str) -> dict:
    """``dataset_info.json`` of a shard folder."""
    info_path = os.path.join(path, INFO_FILE)
    if not os.path.isfile(info_path):
        raise FileNotFoundError(f"path: {path!r} has no {INFO_FILE} (not a folder written by data_pipelines.prepare)")
    with open(info_path) as f:
        info = json.load(f)
    if info.get("format") != FORMAT:
        raise ValueError(f"path: {info_path} has format {info.get('format')!r}, expected {FORMAT}")
    return info


class ArrayRecordSource(base.Source):
    """Records of a folder written by ``python -m data_pipelines.prepare`` (random access, any worker count)."""

    kind = "array_record"

    def __init__(self, name: str, sampling: transforms.Sampling, *, path: str,
                 zoom_range: tuple[float, float] = pseudo_video.ZoomPan.zoom_range,
                 pan_range: tuple[float, float] = pseudo_video.ZoomPan.pan_range):
        import grain  # pylint: disable=import-outside-toplevel

        super().__init__(name, sampling, zoom_pan=pseudo_video.ZoomPan(tuple(zoom_range), tuple(pan_range)))
        self.path = path
        self.info = read_info(path)
        files = [os.path.join(path, s["file"]) for s in self.info["shards"] if s["num_records"] > 0]
        if not files:
            raise stats.SourceFailedError(f"data source {name!r}: {path!r} holds no records")
        if base.CLIP in self.info["kinds"]:  # image-only shards do not depend on stride or stored keyframes
            if self.info["stride"] != sampling.stride:
                raise ValueError(f"stride: shards in {path!r} hold keyframes every {self.info['stride']} frames, "
                                 f"but the config asks for stride {sampling.stride}")
            if self.info["keyframes"] < sampling.num_frames:
                raise ValueError(f"num_frames: shards in {path!r} hold {self.info['keyframes']} keyframes per "
                                 f"clip, fewer than num_frames={sampling.num_frames}")
        self._records = grain.sources.ArrayRecordDataSource(files)

    def __len__(self) -> int:
        return len(self._records)

    def load_raw(self, index: int, rng: np.random.Generator, keyframes: int) -> base.Raw:
        raw = decode_record(self._records[index])
        if raw.kind == base.CLIP and len(raw.frames) < keyframes:
            raise stats.SkipError(stats.TOO_SHORT, f"{raw.key}: {len(raw.frames)} stored keyframes, need {keyframes}")
        return raw
