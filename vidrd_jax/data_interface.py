"""What the trainer uses of a data pipeline, and the one place a data package registers it.

The arrows go one way (``tests/test_architecture.py``): ``data_pipelines`` imports from ``vidrd_jax`` only its lowest
layer (this module, ``media``, ``cli``, ``config_loading``); the trainer (``train``, ``train_config``, ``tasks``)
never imports ``data_pipelines``. It reaches the data through :func:`pipeline`, which ``data_pipelines`` registers
when it is imported (``data_pipelines/__init__.py``). Whatever runs a job imports it: the entry points
(``python -m vidrd_jax.train`` / ``vidrd_jax.export``: their ``main``), the recipes, and the config files, which
configure ``config.data``.

This module imports nothing from ``vidrd_jax``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import ml_collections


@dataclasses.dataclass(frozen=True)
class DataPipeline:
    """A data pipeline as the trainer and its tasks see it.

    * ``default_config()``: the defaults of ``config.data``.
    * ``validate_config(cfg)``: raises ``ValueError`` whose message starts with the field's name.
    * ``make_iterator(cfg, *, batch_size, process_index=0, process_count=1, seed=None)``: batches
      ``{"video": float32 [B, F, H, W, 3] in [-1, 1], "caption": str [B]}`` of this process's shard, with
      ``stats()`` and ``close()``, checkpointable with the train state.
    * ``frame_size(resolution)``: ``(height, width)`` of the frames of ``cfg.resolution``.
    * ``split_config(cfg, split)``: the data config of the evaluation clips of ``split``, one of ``splits``.
    """

    default_config: Callable[[], ml_collections.ConfigDict]
    validate_config: Callable[[ml_collections.ConfigDict], None]
    make_iterator: Callable[..., Iterator[dict[str, Any]]]
    frame_size: Callable[[Any], tuple[int, int]]
    split_config: Callable[[ml_collections.ConfigDict, str], ml_collections.ConfigDict]
    splits: tuple[str, ...]


_registered: list[DataPipeline] = []


def register(data: DataPipeline) -> None:
    """Makes ``data`` the pipeline :func:`pipeline` returns (a data package calls it when imported)."""
    _registered[:] = [data]


def pipeline() -> DataPipeline:
    """The registered data pipeline; raises naming what to import when there is none."""
    if not _registered:
        raise RuntimeError("no data pipeline is registered with the trainer: import data_pipelines first (the entry "
                           "points, recipes and config files do; see vidrd_jax.data_interface)")
    return _registered[0]
