"""Training metrics: TensorBoard event files (tensorboardX) and a JSON-lines file, written by process 0 only.

``WORKDIR/metrics.jsonl`` gets one object per logged step: ``{"step": int, "<name>": float, ...}``; the event files go
to ``WORKDIR/tensorboard/``. Both are appended to across restarts (steps after the restored checkpoint are logged
again by the restarted run).
"""
from __future__ import annotations

import json
import math
import os
from typing import Mapping

import numpy as np

JSONL_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
    """Scalar metrics to TensorBoard + JSONL; a no-op on processes other than ``enabled=True``."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter  # deferred: heavy import, only process 0 needs it
            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(os.path.join(workdir, TENSORBOARD_DIR))
            path = os.path.join(workdir, JSONL_FILE)
            self._jsonl = open(path, "a")
            if self._jsonl.tell() and not _ends_with_newline(path):  # a killed run left half a line
                self._jsonl.write("\n")

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Writes ``scalars`` at ``step``; non-finite values are kept in JSONL as ``null`` (JSON has no NaN)."""
        if not self.enabled:
            return
        values = {name: float(np.asarray(value)) for name, value in scalars.items()}
        for name, value in values.items():
            self._tb.add_scalar(name, value, step)
        record = {"step": int(step), **{k: (v if math.isfinite(v) else None) for k, v in values.items()}}
        self._jsonl.write(json.dumps(record) + "\n")

    def write_video_frames(self, step: int, tag: str, frames: np.ndarray) -> None:
        """Adds a uint8 ``[T, H, W, 3]`` clip to TensorBoard as an image strip (frames side by side)."""
        if not self.enabled:
            return
        strip = np.concatenate(list(frames), axis=1)
        self._tb.add_image(tag, strip, step, dataformats="HWC")

    def flush(self) -> None:
        if self.enabled:
            self._tb.flush()
            self._jsonl.flush()

    def close(self) -> None:
        if self.enabled:
            self._tb.close()
            self._jsonl.close()
            self.enabled = False


def _ends_with_newline(path: str) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_jsonl(workdir: str) -> list[dict]:
    """All complete records of ``WORKDIR/metrics.jsonl`` in file order (a line cut short by a killed run is left
    out). After a restart, the steps since the restored checkpoint appear twice; the later record is the live one."""
    records = []
    with open(os.path.join(workdir, JSONL_FILE)) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
