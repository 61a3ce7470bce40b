"""Turn any source into ArrayRecord shards of pre-decoded clips for random-access training.

    python -m data_pipelines.prepare --source-config webvid.json --out /data/webvid_256 \
        --resolution 256 --num-frames 8 --stride 4 --keyframes 16 --workers 8

``--source-config`` is one source entry ``{"name", "kind", "params"}`` as a JSON file or inline JSON, or a Python
data-config file exposing ``get_config()`` (then ``--source NAME`` picks the entry and the config's num_frames,
stride and resolution are used unless given on the command line). Each item is decoded once (``Source.load_raw``:
``--keyframes`` keyframes every ``stride`` frames from a start drawn from ``(--seed, index)``, resized to cover the
target, uncropped; images fitted for zooming) and written as one record (see ``array_record_source``). Bad items are
skipped and counted in ``dataset_info.json``. Read the shards back with a source of kind ``array_record``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping, Sequence

import grain
import numpy as np
from absl import flags, logging

from data_pipelines import array_record_source, config as config_lib, registry, stats, transforms
from vidrd_jax import cli
from vidrd_jax.config_loading import load_config


class _EncodeItem:
    """index -> (kind, encoded record bytes), or the skip reason (str)."""

    def __init__(self, source, keyframes: int, seed: int):
        self.source = source
        self.keyframes = keyframes
        self.seed = seed
        self._log = stats.SkipLogger()

    def __call__(self, index: int) -> tuple[str, bytes] | str:
        try:
            raw = self.source.load_raw(int(index), np.random.default_rng([self.seed, int(index)]), self.keyframes)
        except stats.SkipError as e:
            self._log(self.source.name, e.reason, str(e))
            return e.reason
        if not raw.captions:
            self._log(self.source.name, stats.EMPTY_CAPTION, f"{raw.key}: no caption")
            return stats.EMPTY_CAPTION
        return raw.kind, array_record_source.encode_record(raw)


def prepare(spec: Mapping[str, Any], sampling: transforms.Sampling, out_dir: str, *, keyframes: int | None = None,
            records_per_shard: int = 1000, workers: int = 0, threads: int = 4, seed: int = 0,
            limit: int | None = None) -> dict:
    """Writes ``{out_dir}/{name}-{k:05d}.array_record`` + ``dataset_info.json``; returns the info dict."""
    keyframes = sampling.num_frames if keyframes is None else keyframes
    if keyframes < sampling.num_frames:
        raise ValueError(f"keyframes: must be >= num_frames ({sampling.num_frames}), got {keyframes}")
    if workers < 0 or threads < 1:
        raise ValueError(f"workers/threads: need workers >= 0 and threads >= 1, got {workers}, {threads}")
    source = registry.make_source(spec, sampling, where="source-config")
    count = len(source) if limit is None else min(limit, len(source))
    ds = grain.MapDataset.range(count).map(_EncodeItem(source, keyframes, seed))
    ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=threads, prefetch_buffer_size=2 * threads))
    if workers > 0:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=4))
    writer = array_record_source.ShardWriter(out_dir, source.name, records_per_shard)
    skipped = dict(source.index_skips)
    kinds = set()
    for item in ds:
        if isinstance(item, str):
            skipped[item] = skipped.get(item, 0) + 1
        else:
            kind, record = item
            kinds.add(kind)
            writer.write(record)
    written = sum(s["num_records"] for s in writer.shards)
    info = writer.close({
        "source": {"name": source.name, "kind": spec["kind"], "params": registry.plain_params(spec)},
        "num_frames": sampling.num_frames, "stride": sampling.stride, "keyframes": keyframes,
        "resolution": [sampling.height, sampling.width], "seed": seed, "kinds": sorted(kinds), "skipped": skipped,
    })
    logging.info("prepared %d records of %r in %s (skipped: %s)", written, source.name, out_dir, skipped or "none")
    if written == 0:
        raise stats.SourceFailedError(f"data source {source.name!r}: none of its {count} items could be decoded "
                                      f"(skipped: {skipped}); nothing written to {out_dir}")
    return info


def resolve_source_config(text: str, source_name: str | None) -> tuple[dict, Any]:
    """(source entry, data config or None) from a JSON file / inline JSON / Python config file."""
    if text.endswith(".py"):
        cfg = load_config(text)
        cfg = cfg.data if "data" in cfg and "sources" not in cfg else cfg
        names = [s["name"] for s in cfg.sources]
        if source_name is None and len(names) != 1:
            raise ValueError(f"source: {text!r} has sources {names}; pick one with --source")
        chosen = [s for s in cfg.sources if source_name in (None, s["name"])]
        if not chosen:
            raise ValueError(f"source: {source_name!r} is not one of {names}")
        entry = chosen[0]
        return {"name": entry["name"], "kind": entry["kind"], "params": registry.plain_params(entry)}, cfg
    if os.path.isfile(text):
        with open(text) as f:
            entry = json.load(f)
    else:
        try:
            entry = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"source-config: {text!r} is neither a file nor inline JSON ({e})") from e
    if not isinstance(entry, dict) or "name" not in entry or "kind" not in entry:
        raise ValueError(f"source-config: need a JSON object with 'name', 'kind' and 'params', got {entry!r}")
    return entry, None


def _resolution(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"resolution: {text!r} is not N or HxW") from e
    if len(values) not in (1, 2) or min(values) < 1:
        raise argparse.ArgumentTypeError(f"resolution: {text!r} is not N or HxW")
    return (values[0], values[-1])


def main(argv: Sequence[str] | None = None) -> dict:
    """Runs the CLI; returns the info dict. Bad input raises (``python -m`` reports it as one ``error: ...`` line)."""
    parser = argparse.ArgumentParser(prog="python -m data_pipelines.prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--source-config", required=True, help="source entry (JSON file / inline JSON) or .py config")
    parser.add_argument("--source", default=None, help="source name inside a .py config")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--num-frames", type=int, default=None, help="keyframes per training clip (default 8)")
    parser.add_argument("--stride", type=int, default=None, help="frames between keyframes (default 4)")
    parser.add_argument("--resolution", type=_resolution, default=None, help="N or HxW target (default 256)")
    parser.add_argument("--keyframes", type=int, default=None, help="keyframes stored per clip (>= num-frames)")
    parser.add_argument("--records-per-shard", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=0, help="decoding processes")
    parser.add_argument("--threads", type=int, default=4, help="decoding threads per process")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None, help="only the first N items")
    args = parser.parse_args(argv)
    spec, cfg = resolve_source_config(args.source_config, args.source)
    defaults = cfg if cfg is not None else config_lib.get_default_config()
    height, width = args.resolution or config_lib.resolution_hw(defaults.resolution)
    sampling = transforms.Sampling(num_frames=args.num_frames or defaults.num_frames,
                                   stride=args.stride or defaults.stride, height=height, width=width)
    info = prepare(spec, sampling, args.out, keyframes=args.keyframes, records_per_shard=args.records_per_shard,
                   workers=args.workers, threads=args.threads, seed=args.seed, limit=args.limit)
    print(json.dumps({k: info[k] for k in ("num_records", "skipped")}, indent=1))
    return info


if __name__ == "__main__":
    logging.set_verbosity(logging.INFO)
    sys.exit(cli.run_cli(main, errors=(stats.SourceFailedError,)))
