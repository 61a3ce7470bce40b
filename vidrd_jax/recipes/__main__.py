"""Runs a staged config: ``python -m vidrd_jax.recipes --config configs/X.py[:arg] --workdir DIR [--config.a.b=v ...]``.

Every stage of the config runs in turn (:mod:`vidrd_jax.recipes.stages`), each resuming from its checkpoints; a
finished training stage is skipped on a rerun. Flags, logging and exit statuses are the trainer's
(:mod:`vidrd_jax.train`): 0 when every stage is done, 75 after a SIGTERM (rerun the same command to resume), 2 with
one ``error: ...`` line for a bad flag, config field, config file or workdir, 1 with a traceback for anything else.
"""
from __future__ import annotations

import sys
from typing import Sequence

from absl import logging

from vidrd_jax import cli, train
from vidrd_jax.recipes import stages


def _run(argv: Sequence[str]) -> int:
    config, workdir = train.parse_args(argv)
    if not stages.is_staged(config):
        raise cli.UsageError(f"--config has no 'stages' (one training job): run it with "
                             f"python -m vidrd_jax.train {' '.join(argv[1:])}")
    train.setup_logging()
    try:
        stages.run_stages(config, workdir)
    except train.Preempted as e:
        logging.warning("%s (exit status %d)", e, train.EXIT_PREEMPTED)
        return train.EXIT_PREEMPTED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the staged config named by ``argv`` (``argv[0]`` is the program name; default ``sys.argv``); returns the
    exit status (module docstring)."""
    return cli.run_command(_run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
