"""Skip reasons, the skip exception, and the per-source skip-count table.

Bad input never crashes the pipeline and never becomes a silently wrong sample: the item is skipped and counted
under one reason. Counts travel with the data as an int64 table ``[num_sources, 1 + len(REASONS)]`` (column 0 =
items decoded successfully, column 1 + r = items skipped for ``REASONS[r]``), so worker processes' counts reach the
training process inside the batches and survive checkpoint/resume.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from absl import logging

from vidrd_jax import media

TOO_SHORT = "too_short"  # fewer frames than (num_frames - 1) * stride + 1 (inside the row's segment)
TOO_SMALL = "too_small"  # shorter side below the source's min_side
BAD_ROW = "bad_row"  # index row that cannot be parsed, has no path, or has an invalid segment
EMPTY_CAPTION = "empty_caption"  # index row / record without a non-empty caption

REASONS: tuple[str, ...] = (
    media.MISSING_FILE,
    media.EMPTY_FILE,
    media.UNREADABLE,
    media.DECODE_ERROR,
    media.OUT_OF_RANGE,
    TOO_SHORT,
    TOO_SMALL,
    BAD_ROW,
    EMPTY_CAPTION,
)
_REASON_COLUMN = {reason: 1 + i for i, reason in enumerate(REASONS)}
_LOG_FIRST = 20  # per process and reason: log every skip up to this count, then every _LOG_EVERY-th
_LOG_EVERY = 1000


class SkipError(Exception):
    """An item that cannot become a training sample; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str):
        if reason not in _REASON_COLUMN:
            raise ValueError(f"reason: {reason!r} is not one of {REASONS}")
        super().__init__(message)
        self.reason = reason


class SourceFailedError(RuntimeError):
    """A source whose items all fail (message names the source and the reasons)."""


def reason_column(reason: str) -> int:
    """Column of ``reason`` in a counts table."""
    return _REASON_COLUMN[reason]


def empty_counts(num_sources: int) -> np.ndarray:
    return np.zeros((num_sources, 1 + len(REASONS)), np.int64)


def counts_to_dict(counts: np.ndarray, source_names: Sequence[str]) -> dict:
    """``{"decoded": {source: n}, "skipped": {source: {reason: n}}, "total_skipped": n}`` (zero reasons left out)."""
    counts = np.asarray(counts)
    skipped = {}
    for s, name in enumerate(source_names):
        skipped[name] = {reason: int(counts[s, col]) for reason, col in _REASON_COLUMN.items() if counts[s, col]}
    return {
        "decoded": {name: int(counts[s, 0]) for s, name in enumerate(source_names)},
        "skipped": skipped,
        "total_skipped": int(counts[:, 1:].sum()),
    }


def describe_reasons(row: np.ndarray) -> str:
    """``"unreadable: 3, too_short: 1"`` for one source's counts row."""
    parts = [f"{reason}: {int(row[col])}" for reason, col in _REASON_COLUMN.items() if row[col]]
    return ", ".join(parts) or "none"


class SkipLogger:
    """absl-logs skips: every one of the first few per reason, then every ``_LOG_EVERY``-th (per process)."""

    def __init__(self):
        self._seen: dict[str, int] = {}

    def __call__(self, source: str, reason: str, detail: str) -> None:
        n = self._seen.get(reason, 0) + 1
        self._seen[reason] = n
        if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
            logging.warning("data source %r: skipped an item (%s; %d so far in this process): %s",
                            source, reason, n, detail)

