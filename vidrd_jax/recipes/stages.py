"""Staged runs: one config chains training stages, each starting from an earlier stage's export, then evaluation.

A staged config (e.g. ``configs/demo.py``) has ``stages``, an ordered tuple of names, and one sub-config per name:

* ``kind = "train"``: ``config`` is a complete trainer config (``train_config.base_config``), trained in
  ``WORKDIR/<name>`` by :func:`vidrd_jax.train.train_and_evaluate`, then exported (``export.ema``, ``export.dtype``)
  to the inference checkpoint ``WORKDIR/<name>/export``.
* ``kind = "generate"``: ``config`` is a ``configs/generate_default.py`` config plus ``checkpoint``, ``out`` and
  ``prompts`` (one ``|``-separated line per video), run by :func:`vidrd_jax.generate.run`.
* ``kind = "evaluate_demo"``: ``config`` is a :mod:`vidrd_jax.recipes.demo_evaluation` config.

Any string in a stage config may name an earlier stage's export as ``{export:NAME}`` and the run's directory as
``{workdir}`` (:mod:`vidrd_jax.recipes.placeholders`); they are substituted when the stage starts. Every stage config
is validated before anything runs (a training config's fields that name an export not written yet are checked when
their stage starts). Stages resume: a training stage continues from its latest checkpoint, a finished one (its export
complete) is skipped, generation and evaluation rerun (they are cheap and deterministic). ``WORKDIR/summary.json``
records where everything is.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import ml_collections
from absl import logging
from etils import epath

from vidrd_jax import checkpoints, export, generate, train
from vidrd_jax import metric_writer as metrics_lib
from vidrd_jax.recipes import demo_evaluation
from vidrd_jax.recipes.placeholders import EXPORT_DIR, export_dir, map_leaves, resolve
from vidrd_jax.train_config import validate_config

KINDS = ("train", "generate", "evaluate_demo")
SUMMARY_FILE = "summary.json"


def is_staged(config: ml_collections.ConfigDict) -> bool:
    """Whether ``config`` is a staged config (it has ``stages``) rather than one training job's."""
    return "stages" in config


def _without_pending_exports(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
    """A copy of a (resolved) training config whose fields naming a not-yet-written export are emptied, so that
    everything else can be checked before the earlier stages run."""
    prefix = os.path.join(workdir, "")

    def pending(value: Any) -> bool:
        return (isinstance(value, str) and value.startswith(prefix) and value.endswith(os.sep + EXPORT_DIR)
                and not (epath.Path(value) / checkpoints.MODEL_CONFIG_FILE).exists())

    return map_leaves(config, lambda value, _: "" if pending(value) else value, "config")


def _validate_stage(kind: str, config: ml_collections.ConfigDict, where: str) -> None:
    try:
        if kind == "train":
            validate_config(config)
        elif kind == "generate":
            fields = {"sampling", "checkpoint", "prompts", "out"}
            if set(config.keys()) != fields:
                raise ValueError(f"a generate stage has exactly the fields {sorted(fields)}, "
                                 f"got {sorted(config.keys())}")
            if not config.prompts:
                raise ValueError("prompts: give at least one line")
            generate.validate_config(config.sampling)
        else:
            demo_evaluation.validate_config(config)
    except (ValueError, generate.UsageError) as e:
        raise ValueError(f"{where}: {e}") from e


def validate_stages(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Checks every stage (names, kinds, placeholders, the stage's own config); errors name the field."""
    names = tuple(config.stages)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"config.stages must be a non-empty tuple of distinct names, got {names!r}")
    trained: tuple[str, ...] = ()
    for name in names:
        if name not in config:
            raise ValueError(f"config.stages names {name!r} but config.{name} does not exist")
        stage = config[name]
        if stage.kind not in KINDS:
            raise ValueError(f"config.{name}.kind must be one of {KINDS}, got {stage.kind!r}")
        resolved = resolve(stage.config, workdir, trained, f"{name}.config")
        if stage.kind == "train":
            resolved = _without_pending_exports(resolved, workdir)
        _validate_stage(stage.kind, resolved, f"config.{name}.config")
        if stage.kind == "train":
            trained += (name,)


def run_stages(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) every stage of ``config`` in ``workdir``; returns and writes the summary."""
    workdir = checkpoints.absolute(workdir)
    validate_stages(config, workdir)
    summary_path = epath.Path(workdir) / SUMMARY_FILE
    summary: dict[str, Any] = {"workdir": workdir, "stages": {}}
    trained: tuple[str, ...] = ()
    for name in config.stages:
        stage = config[name]
        stage_dir = os.path.join(workdir, name)
        resolved = resolve(stage.config, workdir, trained, f"{name}.config")
        _validate_stage(stage.kind, resolved, f"config.{name}.config")
        start = time.perf_counter()
        logging.info("stage %s (%s) in %s", name, stage.kind, stage_dir)
        record: dict[str, Any] = {"kind": stage.kind, "dir": stage_dir}
        if stage.kind == "train":
            out = export_dir(workdir, name)
            if (epath.Path(out) / checkpoints.MODEL_CONFIG_FILE).exists():
                logging.info("stage %s: export %s exists, skipping", name, out)
                record["skipped"] = True
            else:
                train.train_and_evaluate(resolved, stage_dir)
                export.export(stage_dir, out, use_ema=stage.export.ema, dtype=stage.export.dtype)
            record.update(export=out, metrics=os.path.join(stage_dir, metrics_lib.JSONL_FILE),
                          evaluation=_last_evaluation(stage_dir))
            trained += (name,)
        elif stage.kind == "generate":
            rows = [tuple(p.strip() for p in line.split(generate.PROMPT_SEPARATOR)) for line in resolved.prompts]
            out = os.path.join(stage_dir, resolved.out)
            result = generate.run(resolved.sampling, resolved.checkpoint, rows, out, batched=len(rows) > 1)
            record.update(videos=[video["files"] for video in result["videos"]],
                          record=os.path.splitext(out)[0] + ".json")
        else:
            record.update(demo_evaluation.run(resolved, stage_dir))
        record["seconds"] = round(time.perf_counter() - start, 1)
        summary["stages"][name] = record
        summary_path.parent.mkdir(parents=True, exist_ok=True)
        summary_path.write_text(json.dumps(summary, indent=2))
    summary["seconds"] = round(sum(r["seconds"] for r in summary["stages"].values()), 1)
    summary_path.write_text(json.dumps(summary, indent=2))
    print(f"all {len(summary['stages'])} stages done in {summary['seconds']:.0f} s; summary: {summary_path}")
    for name, record in summary["stages"].items():
        for video in record.get("videos", ()):
            print(f"  {name}: {video['video']} (+ .gif, .png contact sheet)")
    return summary


def _last_evaluation(stage_dir: str) -> dict[str, float]:
    """The last ``eval/…`` record a training stage logged (empty if none)."""
    last: dict[str, float] = {}
    if not (epath.Path(stage_dir) / metrics_lib.JSONL_FILE).exists():  # an export made elsewhere
        return last
    for record in metrics_lib.read_jsonl(stage_dir):
        evaluation = {k[len("eval/"):]: v for k, v in record.items() if k.startswith("eval/")}
        if evaluation:
            last = {"step": record["step"], **evaluation}
    return last
