"""Training checkpoint -> inference checkpoint (the format ``vidrd_jax.generate`` loads).

    python -m vidrd_jax.export --workdir DIR --out OUT [--ema] [--dtype bfloat16] [--step N]

Reads only the parameters (trainable or their EMA, plus the frozen ones) of step ``N`` (default: the latest complete
checkpoint) as host arrays, rebuilds the task from the config stored with the checkpoint, and writes
``checkpoints.save_inference_checkpoint(OUT, params, model_config)`` with the parameters cast to ``--dtype`` (model
configs say so too). A tokenizer folder used in training is copied to ``OUT/tokenizer``.

An existing non-empty ``OUT`` is refused (before anything is read) unless ``--overwrite``. A single process writes
into a temporary directory beside ``OUT`` that replaces it on success, so an interrupted export leaves no partial
checkpoint; several processes write ``OUT`` in place (Orbax coordinates them).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Sequence

import jax
import ml_collections

from vidrd_jax import checkpoints, cli
from vidrd_jax import train_state as ts
from vidrd_jax.tasks import get_task_class

DTYPES = {"fp32": "float32", "float32": "float32", "bf16": "bfloat16", "bfloat16": "bfloat16"}


def export(workdir: str, out: str, *, use_ema: bool = False, dtype: str = "float32", step: int | None = None) -> str:
    """Writes the inference checkpoint of ``workdir`` 's checkpoint ``step`` to ``out``; returns ``out``."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    ckpt = checkpoints.TrainCheckpointer(os.path.join(workdir, checkpoints.TRAIN_CHECKPOINT_DIR), read_only=True)
    try:
        steps = ckpt.all_steps()
        if not steps:
            raise FileNotFoundError(f"--workdir {workdir!r} has no complete training checkpoint")
        step = max(steps) if step is None else step
        if step not in steps:
            raise ValueError(f"--step {step} is not a complete checkpoint in {workdir!r}; available: {sorted(steps)}")
        config = ml_collections.ConfigDict(ckpt.read_config(step))
        if use_ema and not config.ema.decay > 0:
            raise ValueError(f"--ema: the run in {workdir!r} kept no EMA (config.ema.decay = 0)")
        task = get_task_class(config.task)(config)
        shapes, _ = task.abstract_params()
        trainable, frozen = ts.partition(shapes, task.param_labels(shapes))
        target = {"frozen": frozen, ("ema" if use_ema else "trainable"): trainable}
        restored = ckpt.restore_params(step, target)
    finally:
        ckpt.close()
    params = ts.merge(restored["ema" if use_ema else "trainable"], restored["frozen"])
    params, model_config = task.export(params, DTYPES[dtype])
    model_config["source"] = f"vidrd_jax.export {checkpoints.absolute(workdir)} step {step}{' ema' if use_ema else ''}"
    single = jax.process_count() == 1
    with cli.atomic_directory(out) if single else contextlib.nullcontext(out) as target:
        model_config = checkpoints.copy_tokenizer(model_config, target)  # self-contained, like the converter's
        checkpoints.save_inference_checkpoint(target, params, model_config)
    return checkpoints.absolute(out)


def main(argv: Sequence[str] | None = None) -> str:
    """Runs the export (raises on bad input; ``python -m`` reports it as one ``error: ...`` line, status 2)."""
    import data_pipelines  # noqa: F401  (the entry point wires the data in: an autoencoder's export reads clips)

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="training workdir (holds checkpoints/)")
    parser.add_argument("--out", required=True, help="output inference checkpoint directory")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    parser.add_argument("--ema", action="store_true", help="export the EMA of the trainable weights")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="parameter dtype on disk")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    args = parser.parse_args(argv)
    cli.check_output_dir(args.out, "--out", overwrite=args.overwrite)
    out = export(args.workdir, args.out, use_ema=args.ema, dtype=args.dtype, step=args.step)
    print(f"wrote inference checkpoint {out} ({jax.process_count()} process(es))")
    return out


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
