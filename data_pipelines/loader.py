"""The Grain pipeline: sources -> per-host shards -> shuffle/repeat -> weighted mixture -> decode + augment ->
skip accounting -> batches -> worker processes -> prefetch -> ``DataIterator``.

Per source ``k``: ``range(len)[process_index::process_count]`` (hosts get disjoint shards that together cover the
source), shuffled per epoch with a seed derived from ``(seed, k)``, repeated ``num_epochs`` times (None = forever).
``MapDataset.mix`` interleaves the sources in proportion to their weights. Each element is decoded by a
``RandomMap`` whose RNG is derived from ``(seed, process_index)`` and the element index, so every sample (frame
window, crop, caption choice, caption dropout, zoom/pan) is a pure function of the config and the position.

Skipped items leave the stream in ``_CountSkips`` (before batching, in the worker), which attaches the pending
per-source/per-reason counts to the next good element; ``DataIterator`` sums them from every batch, so ``stats()``
covers worker processes too, and they are part of the checkpointed state. A source failing
``max_consecutive_skips`` items in a row raises ``SourceFailedError`` naming it; in a finite run, a source that
decoded nothing by the end raises as well.

Grain worker processes are spawned and read absl flags: ``make_iterator`` marks the flags parsed when they are not
(scripts that use workers still need an ``if __name__ == "__main__":`` guard).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import grain
import ml_collections
import numpy as np
from absl import flags

from data_pipelines import base, config as config_lib, registry, stats, transforms


def make_sources(cfg: ml_collections.ConfigDict) -> list[base.Source]:
    """Builds the configured sources (validates the config first)."""
    config_lib.validate_config(cfg)
    sampling = config_lib.sampling_from_config(cfg)
    return [registry.make_source(spec, sampling, where=f"sources[{i}]") for i, spec in enumerate(cfg.sources)]


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers (numpy SeedSequence)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@dataclasses.dataclass(frozen=True)
class _Skipped:
    source: int
    reason: str


class _Tag:
    """index -> (source id, index)."""

    def __init__(self, source: int):
        self.source = source

    def __call__(self, index: int) -> tuple[int, int]:
        return self.source, int(index)


class _LoadSample(grain.transforms.RandomMap):
    """(source id, index) -> {"video": float32 [F, H, W, 3] in [-1, 1], "caption", "_source"} or ``_Skipped``."""

    def __init__(self, sources: Sequence[base.Source], caption_dropout: float):
        self.sources = list(sources)
        self.caption_dropout = caption_dropout
        self._log = stats.SkipLogger()

    def random_map(self, element: tuple[int, int], rng: np.random.Generator):
        s, index = element
        source = self.sources[s]
        try:
            frames, caption = source.load(index, rng)
        except stats.SkipError as e:
            self._log(source.name, e.reason, str(e))
            return _Skipped(s, e.reason)
        caption = transforms.drop_caption(rng, caption, self.caption_dropout)
        return {"video": transforms.to_model_range(frames), "caption": np.str_(caption), "_source": s}


class _CountSkips(grain.IterDataset):
    """Drops ``_Skipped`` markers, attaching per-source counts (``stats`` table) to the next good element.

    Every element leaving it has ``_counts`` (int64 ``[S, 1 + R]``) and ``_valid``; when the stream ends with
    counts pending, one invalid all-zero element carries them (``DataIterator`` removes it).
    """

    def __init__(self, parent: grain.IterDataset, source_names: Sequence[str], sampling: transforms.Sampling,
                 max_consecutive_skips: int):
        super().__init__(parent)
        self.source_names = list(source_names)
        self.sampling = sampling
        self.max_consecutive_skips = max_consecutive_skips

    def __iter__(self) -> grain.DatasetIterator:
        return _CountSkipsIterator(self._parent.__iter__(), self)

    def __str__(self) -> str:
        return f"_CountSkips(sources={self.source_names})"


class _CountSkipsIterator(grain.DatasetIterator):

    def __init__(self, parent: grain.DatasetIterator, spec: _CountSkips):
        super().__init__(parent)
        self._spec = spec
        self._pending = stats.empty_counts(len(spec.source_names))
        self._consecutive = np.zeros(len(spec.source_names), np.int64)

    def _emit(self, element: dict) -> dict:
        element["_counts"], element["_valid"] = self._pending, np.bool_(element.pop("_valid", True))
        self._pending = stats.empty_counts(len(self._spec.source_names))
        return element

    def __next__(self) -> dict:
        while True:
            try:
                element = next(self._parent)
            except StopIteration:
                if not self._pending.any():
                    raise
                s = self._spec.sampling
                return self._emit({"video": np.zeros((s.num_frames, s.height, s.width, 3), np.float32),
                                   "caption": np.str_(""), "_valid": False})
            if isinstance(element, _Skipped):
                self._pending[element.source, stats.reason_column(element.reason)] += 1
                self._consecutive[element.source] += 1
                if self._consecutive[element.source] >= self._spec.max_consecutive_skips:
                    name = self._spec.source_names[element.source]
                    raise stats.SourceFailedError(
                        f"data source {name!r}: the last {int(self._consecutive[element.source])} items all failed "
                        f"(skipped in this process so far: {stats.describe_reasons(self._pending[element.source])}"
                        f"; see the warnings above for paths). Check the source's files and index.")
                continue
            source = element.pop("_source")
            self._pending[source, 0] += 1
            self._consecutive[source] = 0
            return self._emit(element)

    def get_state(self) -> dict[str, Any]:
        return {"parent": self._parent.get_state(), "pending": self._pending.tolist(),
                "consecutive": self._consecutive.tolist()}

    def set_state(self, state: dict[str, Any]) -> None:
        self._parent.set_state(state["parent"])
        self._pending = np.asarray(state["pending"], np.int64)
        self._consecutive = np.asarray(state["consecutive"], np.int64)


class DataIterator(grain.DatasetIterator):
    """Batches ``{"video": float32 [B, F, H, W, 3] in [-1, 1], "caption": str [B]}`` for one process.

    ``get_state`` / ``set_state`` (JSON-serialisable; works with ``grain.checkpoint.CheckpointHandler``) restore the
    exact next batch and the skip statistics. ``stats()`` returns decoded / skipped counts per source and reason.
    """

    def __init__(self, parent: grain.DatasetIterator, *, batch_size: int, sources: Sequence[base.Source],
                 drop_remainder: bool):
        super().__init__(parent)
        self.batch_size = batch_size
        self.source_names = [s.name for s in sources]
        self._source_sizes = [len(s) for s in sources]
        self._drop_remainder = drop_remainder
        self._initial = stats.empty_counts(len(sources))
        for s, source in enumerate(sources):
            for reason, n in source.index_skips.items():
                self._initial[s, stats.reason_column(reason)] += n
        self._counts = self._initial.copy()
        self._batches = 0
        self._dropped = 0

    def __next__(self) -> dict[str, np.ndarray]:
        self._assert_not_closed()
        while True:
            try:
                batch = next(self._parent)
            except StopIteration:
                self._check_finished()
                raise
            self._counts += np.asarray(batch.pop("_counts")).sum(axis=0)
            valid = np.asarray(batch.pop("_valid"), bool)
            batch = {k: np.asarray(v) for k, v in batch.items()}
            if not valid.all():
                batch = {k: v[valid] for k, v in batch.items()}
            n = len(batch["caption"])
            if n == 0:
                continue
            if n < self.batch_size and self._drop_remainder:
                self._dropped += n
                continue
            self._batches += 1
            return batch

    def __enter__(self) -> DataIterator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Stops prefetch threads and worker processes (idempotent); the pipeline is released right away."""
        if not self._closed:
            super().close()
            self._parents = ()  # collected now, not during interpreter shutdown (Grain's __del__ then fails)

    def _check_finished(self) -> None:
        for s, name in enumerate(self.source_names):
            if self._counts[s, 0] == 0 and self._source_sizes[s] > 0:
                raise stats.SourceFailedError(
                    f"data source {name!r}: no item could be decoded in this run "
                    f"(skipped: {stats.describe_reasons(self._counts[s])}). Check the source's files and index.")

    def stats(self) -> dict[str, Any]:
        """``{"decoded": {src: n}, "skipped": {src: {reason: n}}, "total_skipped", "batches", "dropped"}``."""
        out = stats.counts_to_dict(self._counts, self.source_names)
        out["batches"] = self._batches
        out["dropped_remainder"] = self._dropped
        return out

    def get_state(self) -> dict[str, Any]:
        return {"pipeline": self._parent.get_state(), "counts": self._counts.tolist(), "batches": self._batches,
                "dropped": self._dropped}

    def set_state(self, state: dict[str, Any]) -> None:
        counts = np.asarray(state["counts"], np.int64)
        if counts.shape != self._counts.shape:
            raise ValueError(f"state: counts for {counts.shape[0]} sources, this pipeline has "
                             f"{self._counts.shape[0]} ({self.source_names})")
        self._parent.set_state(state["pipeline"])
        self._counts = counts
        self._batches = int(state["batches"])
        self._dropped = int(state["dropped"])


def build_dataset(cfg: ml_collections.ConfigDict, sources: Sequence[base.Source], *, batch_size: int,
                  process_index: int, process_count: int, seed: int) -> grain.IterDataset:
    """The Grain dataset behind ``make_iterator`` (exposed for inspection)."""
    per_source = []
    for k, source in enumerate(sources):
        ds = grain.MapDataset.range(len(source))[process_index::process_count]
        if len(ds) == 0:
            raise ValueError(f"sources[{k}] ({source.name!r}): {len(source)} items cannot be sharded over "
                             f"{process_count} processes (process {process_index} gets none)")
        if cfg.shuffle:
            ds = ds.shuffle(seed=derive_seed(seed, k))
        ds = ds.repeat(cfg.num_epochs).map(_Tag(k))
        per_source.append(ds)
    if len(per_source) == 1:
        mixed = per_source[0]
    else:
        mixed = grain.MapDataset.mix(per_source, [float(spec.weight) for spec in cfg.sources])
    mixed = mixed.random_map(_LoadSample(sources, float(cfg.caption_dropout)),
                             seed=derive_seed(seed, process_index, 1))
    ds = mixed.to_iter_dataset(grain.ReadOptions(num_threads=cfg.read_threads,
                                                 prefetch_buffer_size=cfg.read_buffer_size))
    ds = _CountSkips(ds, [s.name for s in sources], config_lib.sampling_from_config(cfg), cfg.max_consecutive_skips)
    ds = ds.batch(batch_size, drop_remainder=False)
    if cfg.worker_count > 0:
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.worker_count,
                                                         per_worker_buffer_size=cfg.worker_buffer_size))
    if cfg.prefetch_batches > 0:
        ds = grain.experimental.ThreadPrefetchIterDataset(ds, prefetch_buffer_size=cfg.prefetch_batches)
    return ds


def make_iterator(cfg: ml_collections.ConfigDict, *, batch_size: int, process_index: int = 0,
                  process_count: int = 1, seed: int | None = None) -> DataIterator:
    """Iterator of per-process batches (``batch_size`` clips each) for host ``process_index`` of ``process_count``.

    ``seed`` overrides ``cfg.seed``. Hosts use disjoint shards of every source; pass
    ``jax.process_index()`` / ``jax.process_count()`` on multi-host setups.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be a positive int, got {batch_size!r}")
    if not isinstance(process_count, int) or process_count < 1:
        raise ValueError(f"process_count: must be a positive int, got {process_count!r}")
    if not isinstance(process_index, int) or not 0 <= process_index < process_count:
        raise ValueError(f"process_index: must be in [0, {process_count}), got {process_index!r}")
    seed = cfg.seed if seed is None else seed
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: must be a non-negative int, got {seed!r}")
    sources = make_sources(cfg)
    ds = build_dataset(cfg, sources, batch_size=batch_size, process_index=process_index,
                       process_count=process_count, seed=seed)
    return DataIterator(ds.__iter__(), batch_size=batch_size, sources=sources, drop_remainder=cfg.drop_remainder)
