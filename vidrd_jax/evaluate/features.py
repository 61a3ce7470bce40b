"""Feature extraction for the metrics: batches sharded over the devices, and an ``.npz`` cache keyed by file hash.

:class:`ShardedApply` runs ``fn(params, batch)`` with the parameters replicated and the batch split along a
``("data",)`` mesh over all devices; inputs are cut into fixed-size batches (a multiple of the device count; the last
one padded by repeating its final row, the padding dropped from the output) so one compiled program serves them all.
Single-process only: the host holds every input.

:class:`FeatureCache` stores one ``.npz`` per (extractor, video file): ``DIR/<extractor key>/<sha256 of the file
bytes>.npz``, where the extractor key hashes a description of the extractor (model folder, its weight files' sizes
and times, preprocessing, frame selection). A file whose bytes change gets new features; a cached file is never
recomputed. Arrays are read back with ``allow_pickle=False``.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vidrd_jax.cli import AtomicFiles, atomic_write

_CHUNK = 1 << 20


def data_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over ``devices`` (default: all)."""
    return Mesh(np.asarray(jax.devices() if devices is None else devices, dtype=object), ("data",))


class ShardedApply:
    """``ShardedApply(fn, params, batch_size)(inputs [N, ...]) -> np.ndarray [N, ...]`` over a data mesh."""

    def __init__(self, fn: Callable[[Any, jax.Array], jax.Array], params: Any, batch_size: int,
                 mesh: Mesh | None = None):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.mesh = data_mesh() if mesh is None else mesh
        devices = self.mesh.size
        self.batch_size = -(-batch_size // devices) * devices
        replicated, split = NamedSharding(self.mesh, PartitionSpec()), NamedSharding(self.mesh, PartitionSpec("data"))
        self._split = split
        self.params = jax.device_put(params, replicated)
        self._fn = jax.jit(fn, in_shardings=(replicated, split), out_shardings=split)

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        inputs = np.asarray(inputs)
        outputs = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start:start + self.batch_size]
            count = len(chunk)
            if count < self.batch_size:
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.batch_size - count, axis=0)])
            out = self._fn(self.params, jax.device_put(chunk, self._split))
            outputs.append(np.asarray(out)[:count])
        if not outputs:
            raise ValueError("ShardedApply: no inputs")
        return np.concatenate(outputs)


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def weights_signature(path: str) -> str:
    """A weights file's or model folder's absolute path with the names, sizes and modification times of its files
    (not their bytes: hashing gigabytes of weights on every run would cost more than the features)."""
    if os.path.isfile(path):
        stat = os.stat(path)
        return f"{os.path.abspath(path)}:{stat.st_size}:{stat.st_mtime_ns}"
    entries = []
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            stat = os.stat(full)
            entries.append(f"{name}:{stat.st_size}:{stat.st_mtime_ns}")
    return f"{os.path.abspath(path)}[{','.join(entries)}]"


class FeatureCache:
    """Per-file feature arrays of one extractor (``extractor``: a string that changes whenever features would);
    ``directory=None`` disables caching."""

    def __init__(self, directory: str | None, extractor: str):
        self.directory = None
        if directory is not None:
            key = hashlib.sha256(extractor.encode()).hexdigest()[:24]
            self.directory = os.path.join(directory, key)
            os.makedirs(self.directory, exist_ok=True)
            description = os.path.join(self.directory, "extractor.txt")
            if not os.path.isfile(description):
                with atomic_write(description) as f:
                    f.write(extractor + "\n")
        self.hits = self.misses = 0
        self._hashes: dict[str, str] = {}

    def _file(self, path: str) -> str:
        if path not in self._hashes:
            self._hashes[path] = file_sha256(path)
        return os.path.join(self.directory, f"{self._hashes[path]}.npz")

    def load(self, path: str) -> dict[str, np.ndarray] | None:
        """The cached arrays of video ``path``, or None (counted as a hit or a miss)."""
        cached = None if self.directory is None else self._file(path)
        if cached is None or not os.path.isfile(cached):
            self.misses += 1
            return None
        self.hits += 1
        with np.load(cached, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def save(self, path: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Stores the arrays of video ``path`` (no-op without a directory)."""
        if self.directory is not None:
            with AtomicFiles() as files:
                np.savez(files.path(self._file(path)), **{k: np.asarray(v) for k, v in arrays.items()})

    def get(self, path: str, compute: Callable[[], Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The cached arrays of video ``path``, else ``compute()`` (saved for next time)."""
        arrays = self.load(path)
        if arrays is None:
            arrays = {k: np.asarray(v) for k, v in compute().items()}
            self.save(path, arrays)
        return arrays
