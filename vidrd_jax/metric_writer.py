"""Training metrics: TensorBoard event files (tensorboardX) and a JSON-lines file, written by process 0 only.

``WORKDIR/metrics.jsonl`` holds one object per logged step: ``{"step": int, "<name>": float, ...}`` (evaluations,
``eval/...``, are separate records at their step); the event files go to ``WORKDIR/tensorboard/``. ``WORKDIR`` may
be local or a bucket (``gs://``; tensorboardX then needs ``google-cloud-storage``).

Both continue across restarts. A run resumed from checkpoint step ``S`` (after a kill, the steps after ``S`` are
trained again) drops the JSONL records of steps after ``S`` when it starts, so every step keeps one record. Event
files cannot be rewritten: the old ones keep their later steps, and the restarted run's first event file starts with
a purge marker at step ``S + 1`` (tensorboardX ``purge_step``), which TensorBoard uses to hide them.
"""
from __future__ import annotations

import json
import math
from typing import Mapping

import numpy as np
from etils import epath

JSONL_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
    """Scalar metrics to TensorBoard + JSONL; a no-op unless ``enabled`` (process 0).

    The JSONL file is rewritten whole (temporary file + rename) at every :meth:`flush`, which works on object
    stores (no appends there) and never leaves a half-written line behind a killed run.
    """

    def __init__(self, workdir: str, enabled: bool = True, start_step: int = 0):
        """``start_step``: the step training continues from (the restored checkpoint's, 0 for a new run); records
        of later steps already in the workdir are dropped (module docstring)."""
        self.enabled = enabled
        self._tb = None
        self._lines: list[str] = []
        self._path = epath.Path(workdir) / JSONL_FILE
        if enabled:
            from tensorboardX import SummaryWriter  # deferred: heavy import, only process 0 needs it

            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(str(epath.Path(workdir) / TENSORBOARD_DIR), purge_step=start_step + 1)
            if self._path.exists():
                lines = [line for line in self._path.read_text().splitlines() if line.strip()]
                self._lines = [line for line in lines if json.loads(line)["step"] <= start_step]
                if len(self._lines) < len(lines):
                    self._write_jsonl()

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Writes ``scalars`` at ``step``; non-finite values are kept in JSONL as ``null`` (JSON has no NaN)."""
        if not self.enabled:
            return
        values = {name: float(np.asarray(value)) for name, value in scalars.items()}
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        record = {"step": int(step), **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        self._lines.append(json.dumps(record))

    def write_video_frames(self, step: int, tag: str, frames: np.ndarray) -> None:
        """Adds a uint8 ``[T, H, W, 3]`` clip to TensorBoard as an image strip (frames side by side)."""
        if not self.enabled:
            return
        self._tb.add_image(tag, np.concatenate(list(frames), axis=1), step, dataformats="HWC")

    def _write_jsonl(self) -> None:
        tmp = self._path.parent / f".{JSONL_FILE}.tmp"
        tmp.write_text("".join(line + "\n" for line in self._lines))
        tmp.replace(self._path)

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._write_jsonl()

    def close(self) -> None:
        if self.enabled:
            self.flush()
            self._tb.close()
            self.enabled = False


def read_jsonl(workdir: str) -> list[dict]:
    """All records of ``WORKDIR/metrics.jsonl`` in file order."""
    text = (epath.Path(workdir) / JSONL_FILE).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]
