"""Multi-process set-up and host <-> global arrays.

* :func:`initialize_distributed` calls ``jax.distributed.initialize`` once, before any computation, when the job is
  multi-process (explicit ``config.distributed`` fields or a detected SLURM / Open MPI launch); a no-op otherwise.
* :func:`data_shard` tells this process which slice of the global batch its devices hold, so the data pipeline reads
  ``shard_index`` of ``shard_count`` disjoint shards (processes whose devices hold the same batch rows, e.g. across a
  ``tensor`` axis, read the same shard).
* :func:`host_to_global` turns per-process host batches into global ``jax.Array`` s with
  ``jax.make_array_from_process_local_data``.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding

DISTRIBUTED_MODES = ("auto", "on", "off")


def _cluster_launch_detected() -> bool:
    """True under a multi-task SLURM step or an Open MPI launch (``jax.distributed`` auto-detects both)."""
    slurm = os.environ.get("SLURM_STEP_ID") is not None and int(os.environ.get("SLURM_NTASKS", "1")) > 1
    ompi = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
    return slurm or ompi


def initialize_distributed(dist: Mapping[str, Any]) -> tuple[int, int]:
    """Joins the JAX cluster as described by ``config.distributed``; returns ``(process_index, process_count)``.

    Fields: ``mode`` ("auto": join when ``coordinator_address`` is set or SLURM/MPI is detected; "on": always join,
    letting JAX detect TPU pods / SLURM / MPI for unset fields; "off": single process), ``coordinator_address``
    ("host:port" or ""), ``num_processes`` / ``process_id`` (-1 = detect), ``cpu_collectives`` ("gloo", "mpi" or ""
    for CPU-only jobs), ``initialization_timeout`` (s). Safe to call twice.
    """
    mode = dist["mode"]
    if mode not in DISTRIBUTED_MODES:
        raise ValueError(f"config.distributed.mode must be one of {DISTRIBUTED_MODES}, got {mode!r}")
    join = mode == "on" or (mode == "auto" and (bool(dist["coordinator_address"]) or _cluster_launch_detected()))
    if join and not jax.distributed.is_initialized():
        if dist["cpu_collectives"]:
            jax.config.update("jax_cpu_collectives_implementation", dist["cpu_collectives"])
        jax.distributed.initialize(
            coordinator_address=dist["coordinator_address"] or None,
            num_processes=None if dist["num_processes"] < 0 else dist["num_processes"],
            process_id=None if dist["process_id"] < 0 else dist["process_id"],
            initialization_timeout=dist["initialization_timeout"],
        )
    return jax.process_index(), jax.process_count()


@dataclasses.dataclass(frozen=True)
class DataShard:
    """This process's part of every global batch: rows ``[start, start + local_batch)`` = shard ``index``/``count``."""
    index: int
    count: int
    local_batch: int
    start: int


def data_shard(sharding: NamedSharding, global_batch: int) -> DataShard:
    """Which rows of a ``[global_batch, ...]`` array with ``sharding`` live on this process's devices.

    Raises if the rows are not one contiguous block of equal size on every process (a mesh whose device order
    interleaves processes along the batch axes).
    """
    index_map = sharding.addressable_devices_indices_map((global_batch,))
    rows = sorted({(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop) for s in index_map.values()})
    start, stop = rows[0][0], rows[-1][1]
    covered = sum(b - a for a, b in rows)
    if covered != stop - start:
        raise ValueError(f"process {jax.process_index()} holds non-contiguous batch rows {rows}; use a mesh whose "
                         "batch axes keep each process's devices together")
    local = stop - start
    if global_batch % local:
        raise ValueError(f"batch rows per process ({local}) do not divide config.batch_size ({global_batch})")
    return DataShard(index=start // local, count=global_batch // local, local_batch=local, start=start)


def host_to_global(batch: Mapping[str, np.ndarray], shardings: Mapping[str, NamedSharding],
                   global_batch: int) -> dict[str, jax.Array]:
    """Per-process host arrays ``[local_batch, ...]`` -> global arrays ``[global_batch, ...]`` on the mesh."""
    out = {}
    for name, sharding in shardings.items():
        local = np.asarray(batch[name])
        out[name] = jax.make_array_from_process_local_data(sharding, local, (global_batch,) + local.shape[1:])
    return out
