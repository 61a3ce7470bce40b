"""Offline captioning of action-recognition videos into a captioned-video index (paper §4.2, Figure 4).

    python -m data_pipelines.caption short --input kinetics.csv --out kinetics_captions.jsonl --blip2 /models/blip2
    python -m data_pipelines.caption long --input videolt.jsonl --out videolt_segments.jsonl \
        --blip2 /models/blip2 --clip /models/clip-vit-l14 --threshold 0.25 --min-frames 48 --frame-stride 8

Input: JSONL (``.jsonl`` or ``.json``, one object per line) or CSV (``.csv`` with a header) rows with ``path`` and
``label``; relative paths are relative to the input file's directory. Output rows (JSONL, written atomically):

- ``short``: ``{"path", "caption", "label", "template"}`` — one random frame per video captioned with the label.
- ``long``:  ``{"path", "caption", "label", "start_frame", "end_frame"}`` — segment-then-caption; frames
  ``[start_frame, end_frame)`` (end exclusive, original frame indices; see
  ``data_pipelines.captioning.segments``).

Output paths: absolute input paths are kept; relative ones are rewritten relative to the output file's directory.
Videos that cannot be used are skipped and counted per reason: ``bad_row`` (no path/label, not JSON),
``no_frames``, the ``vidrd_jax.media.MediaError`` reasons (``missing_file``, ``empty_file``, ``unreadable``,
``decode_error``, ``out_of_range``), ``empty_caption`` (the VLM answered nothing; counted per segment for
``long``) and, for ``long``, ``no_segments`` (no relevant segment of ``--min-frames``).
Counts are logged at the end and written with the run settings to ``OUT`` with its extension replaced by
``.stats.json``. Models load from local ``save_pretrained`` folders only.
"""
from __future__ import annotations

import argparse
import collections
import csv
import json
import logging
import os
import sys
from typing import IO, Any, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from data_pipelines.captioning.captioners import (
    PROMPT_TEMPLATES,
    TORCH_DTYPES,
    Captioner,
    check_model_folder,
    format_prompt,
    pick_frame_and_template,
    validate_templates,
    video_rng,
)
from data_pipelines.captioning.segments import SegmentConfig
from vidrd_jax import cli

log = logging.getLogger("data_pipelines.caption")


class _Skip(Exception):
    """A video that is skipped, with the reason it is counted under."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def check_index(path: str) -> str:
    """The index format (``"jsonl"`` or ``"csv"``) of ``path``; a clear error for other extensions or a CSV header
    without ``path`` and ``label`` columns."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".jsonl", ".json", ".csv"):
        raise ValueError(f"--input: {path!r} must end in .jsonl, .json (both JSON lines) or .csv")
    if ext == ".csv":
        with open(path, newline="") as f:
            header = next(csv.reader(f), None)
        if header is None or not {"path", "label"} <= set(header):
            raise ValueError(f"--input: CSV {path!r} needs a header with columns 'path' and 'label', got {header}")
    return "csv" if ext == ".csv" else "jsonl"


def read_index(path: str) -> Iterator[dict[str, Any] | _Skip]:
    """Rows ``{"path", "label"}`` of a JSONL or CSV index; a malformed row yields a ``_Skip("bad_row")``."""
    fmt = check_index(path)
    with open(path, newline="") as f:
        if fmt == "csv":
            records: Iterator[Any] = ((n + 2, r) for n, r in enumerate(csv.DictReader(f)))
        else:
            records = ((n + 1, line) for n, line in enumerate(f) if line.strip())
        for line_no, record in records:
            if fmt == "jsonl":
                try:
                    record = json.loads(record)
                except json.JSONDecodeError as e:
                    yield _Skip("bad_row", f"{path}:{line_no}: not JSON ({e})")
                    continue
            if not isinstance(record, dict) or not record.get("path") or record.get("label") in (None, ""):
                yield _Skip("bad_row", f"{path}:{line_no}: needs non-empty 'path' and 'label'")
                continue
            yield {"path": str(record["path"]), "label": str(record["label"])}


def _stats_path(out: str) -> str:
    return os.path.splitext(out)[0] + ".stats.json"


def _load_templates(path: str | None) -> tuple[str, ...]:
    if path is None:
        return PROMPT_TEMPLATES
    with open(path) as f:
        return validate_templates([line.strip() for line in f if line.strip()])


class _Runner:
    """Walks the index, counts skips, streams the output rows."""

    def __init__(self, args: argparse.Namespace, out: IO[str]):
        self.args = args
        self.out = out
        self.index_dir = os.path.dirname(os.path.abspath(args.input))
        self.out_dir = os.path.dirname(os.path.abspath(args.out))
        self.skipped: collections.Counter[str] = collections.Counter()
        self.videos = 0
        self.captioned = 0
        self.rows_written = 0

    def output_path(self, path: str) -> str:
        if os.path.isabs(path):
            return path
        return os.path.relpath(os.path.join(self.index_dir, path), self.out_dir)

    def emit(self, row: dict[str, Any]) -> None:
        self.out.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.rows_written += 1

    def open_video(self, row: dict[str, Any]) -> tuple[str, int]:
        """Absolute path and frame count, or ``_Skip``."""
        from vidrd_jax.media import MediaError, probe_video

        path = row["path"] if os.path.isabs(row["path"]) else os.path.join(self.index_dir, row["path"])
        try:
            info = probe_video(path)
        except MediaError as e:
            raise _Skip(e.reason, str(e)) from None
        if info.num_frames < 1:
            raise _Skip("no_frames", path)
        return path, int(info.num_frames)

    def skip(self, skip: _Skip) -> None:
        self.skipped[skip.reason] += 1
        log.warning("skipped (%s)", skip)

    def items(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(row_index, row)`` of the well-formed rows, with a progress bar; bad rows are counted."""
        for i, row in enumerate(tqdm(read_index(self.args.input), desc=f"caption {self.args.mode}", unit="video")):
            self.videos += 1
            if isinstance(row, _Skip):
                self.skip(row)
            else:
                yield i, row


def run_short(args: argparse.Namespace, runner: _Runner, captioner: Any, templates: Sequence[str]) -> None:
    """One random frame + label + random template per video, batched ``--batch-size`` videos per VLM call."""
    from vidrd_jax.media import MediaError, read_video

    pending: list[tuple[dict[str, Any], np.ndarray, str]] = []

    def flush() -> None:
        captions = captioner.caption([f for _, f, _ in pending], [format_prompt(t, r["label"]) for r, _, t in pending])
        for (row, _, template), text in zip(pending, captions):
            if not text:
                runner.skip(_Skip("empty_caption", f"{row['path']}: the VLM returned an empty caption"))
                continue
            runner.emit({"path": runner.output_path(row["path"]), "caption": text, "label": row["label"],
                         "template": template})
            runner.captioned += 1
        pending.clear()

    for i, row in runner.items():
        try:
            path, num_frames = runner.open_video(row)
            frame_index, template = pick_frame_and_template(num_frames, video_rng(args.seed, i), templates)
            try:
                frames = read_video(path, [frame_index])
            except MediaError as e:
                raise _Skip(e.reason, str(e)) from None
        except _Skip as s:
            runner.skip(s)
            continue
        pending.append((row, frames[0], template))
        if len(pending) == args.batch_size:
            flush()
    if pending:
        flush()


def run_long(args: argparse.Namespace, runner: _Runner, captioner: Any, templates: Sequence[str],
             config: SegmentConfig) -> None:
    """Segment-then-caption per video (``data_pipelines.captioning.segments``)."""
    from data_pipelines.captioning.segments import ClipFrameScorer, VlmRelevanceJudge, segment_then_caption
    from vidrd_jax.media import MediaError

    scorer = ClipFrameScorer.from_pretrained(args.clip, device=args.device, dtype=args.dtype,
                                             batch_size=args.batch_size)
    judge = VlmRelevanceJudge(captioner) if args.vlm_check else None
    for i, row in runner.items():
        try:
            path, num_frames = runner.open_video(row)
            try:
                rows = segment_then_caption(path, num_frames, row["label"], scorer, captioner, config,
                                            video_rng(args.seed, i), judge=judge, templates=templates)
            except MediaError as e:
                raise _Skip(e.reason, str(e)) from None
            if not rows:
                raise _Skip("no_segments", f"{path}: no relevant segment of >= {config.min_frames} frames")
        except _Skip as s:
            runner.skip(s)
            continue
        for r in rows:
            if r["caption"]:
                runner.emit(dict(r, path=runner.output_path(row["path"])))
            else:
                runner.skip(_Skip("empty_caption", f"{path} [{r['start_frame']}, {r['end_frame']}): empty caption"))
        runner.captioned += any(r["caption"] for r in rows)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--input", required=True, help="JSONL/CSV index with 'path' and 'label' per row")
    common.add_argument("--out", required=True, help="output JSONL (written atomically)")
    common.add_argument("--blip2", help="local BLIP-2 save_pretrained folder (required)")
    common.add_argument("--seed", type=int, default=0, help="seed of the frame/template draws (per row index)")
    common.add_argument("--templates", default=None, help="text file of prompt templates, one per line, with {label}")
    common.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda:0")
    common.add_argument("--dtype", default="float32", choices=TORCH_DTYPES)
    common.add_argument("--max-new-tokens", type=int, default=30)
    common.add_argument("--batch-size", type=int, default=8, help="images per model call")
    p = argparse.ArgumentParser(prog="python -m data_pipelines.caption", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    sub.add_parser("short", parents=[common], help="short videos: caption one random frame with the label")
    long = sub.add_parser("long", parents=[common], help="long videos: segment-then-caption")
    d = SegmentConfig()
    long.add_argument("--clip", required=True, help="local CLIP save_pretrained folder (frame relevance scores)")
    long.add_argument("--threshold", type=float, default=d.threshold, help="min CLIP cosine similarity of a kept frame")
    long.add_argument("--min-frames", type=int, default=d.min_frames, help="min segment length in original frames")
    long.add_argument("--frame-stride", type=int, default=d.frame_stride, help="score every k-th frame")
    long.add_argument("--read-chunk", type=int, default=d.read_chunk, help="sampled frames decoded at a time")
    long.add_argument("--vlm-check", action="store_true", help="also ask BLIP-2 a yes/no relevance question per frame")
    return p


def main(argv: Sequence[str] | None = None, captioner: Captioner | None = None) -> dict[str, Any]:
    """Runs the CLI; returns the stats that are also written next to ``--out``.

    ``captioner`` replaces the BLIP-2 of ``--blip2`` (any ``Captioner``, e.g. another VLM, used from Python).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # Validate everything before loading models (a real BLIP-2 takes minutes to load).
    if args.batch_size < 1:
        raise cli.UsageError(f"--batch-size: must be >= 1, got {args.batch_size}")
    if not os.path.isfile(args.input):
        raise cli.UsageError(f"--input: {args.input!r} does not exist")
    check_index(args.input)
    for path in (args.out, _stats_path(args.out)):
        cli.check_output_file(path, "--out")
    templates = _load_templates(args.templates)
    if captioner is None:
        if args.blip2 is None:
            raise cli.UsageError("--blip2: required (a local BLIP-2 save_pretrained folder)")
        check_model_folder(args.blip2, "--blip2")
    config = None
    if args.mode == "long":
        check_model_folder(args.clip, "--clip")
        config = SegmentConfig(frame_stride=args.frame_stride, threshold=args.threshold,
                               min_frames=args.min_frames, read_chunk=args.read_chunk)
    if captioner is None:
        from data_pipelines.captioning.captioners import Blip2Captioner

        captioner = Blip2Captioner.from_pretrained(args.blip2, device=args.device, dtype=args.dtype,
                                                   max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    with cli.atomic_write(args.out) as out:
        runner = _Runner(args, out)
        if config is None:
            run_short(args, runner, captioner, templates)
        else:
            run_long(args, runner, captioner, templates, config)
    stats = {
        "mode": args.mode,
        "input": os.path.abspath(args.input),
        "output": os.path.abspath(args.out),
        "videos": runner.videos,
        "videos_captioned": runner.captioned,
        "rows_written": runner.rows_written,
        "skipped": dict(sorted(runner.skipped.items())),
        "settings": {k: v for k, v in sorted(vars(args).items()) if k not in ("input", "out", "mode")},
        "templates": list(templates),
    }
    with cli.atomic_write(_stats_path(args.out)) as f:
        f.write(json.dumps(stats, indent=2) + "\n")
    log.info("%s: %d of %d videos captioned, %d rows -> %s; skipped %s", args.mode, runner.captioned,
             runner.videos, runner.rows_written, args.out, stats["skipped"] or "none")
    return stats


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
