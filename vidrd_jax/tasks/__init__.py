"""Training tasks: what one trainer step optimises.

A task owns its models and their parameters, says which parameters train (labels, one optimizer per label), turns a
host batch into device arrays, and defines the loss. The trainer (``vidrd_jax.train``) owns everything else: mesh,
sharded state, optimizer/EMA/accumulation/non-finite guard, data, checkpoints, metrics. A step is

    rng -> for each micro-batch: inputs = task.preprocess(params, batch, rng)          (no gradient: frozen encoders)
                                 loss, metrics = task.loss(params, inputs, rng, step)  (gradient: trainable leaves)
        -> mean gradient -> optax (one transform per label) -> EMA

Several players (a GAN's generator and discriminator) fit in one step: give them different labels (so each gets its
own optimizer and learning rate) and build ``loss`` so that each player's term stops the gradient into the other's
parameters (``jax.lax.stop_gradient``); the summed loss then gives every player exactly its own gradient.

Register a task by adding ``"name": "module.path:ClassName"`` to :data:`TASKS`; ``config.task`` picks it.
"""
from __future__ import annotations

import abc
import importlib
from typing import Any, Mapping

import jax
import ml_collections
import numpy as np

Params = dict[str, Any]

TASKS = {
    "autoencoder": "vidrd_jax.tasks.autoencoder:AutoencoderTask",
    "combined_tuning": "vidrd_jax.tasks.combined_tuning:CombinedTuningTask",
    "denoising": "vidrd_jax.tasks.denoising:DenoisingTask",
    "vae_temporal": "vidrd_jax.tasks.vae_temporal:VAETemporalTask",
}


class Task(abc.ABC):
    """Interface between the trainer and a model family. Constructed once per run from the full config."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    @classmethod
    def config_defaults(cls) -> ml_collections.ConfigDict:
        """The task's own top-level config fields with defaults (merged into ``train_config.base_config``)."""
        return ml_collections.ConfigDict()

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        """Raises ``ValueError`` naming the field for task-specific config errors (called before anything runs)."""

    # --- parameters -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def abstract_params(self) -> tuple[Params, Params]:
        """``(shapes, logical_specs)``: ``jax.ShapeDtypeStruct`` and logical ``PartitionSpec`` trees of all params,
        e.g. ``{"unet": …, "vae": …, "text_encoder": …}``."""

    @abc.abstractmethod
    def init_params(self, rng: jax.Array) -> Params:
        """Fresh parameters (unboxed); traced under ``jax.jit`` with the parameter shardings as ``out_shardings``."""

    def pretrained(self) -> tuple[str, str] | None:
        """``(inference_checkpoint_dir, allowed_missing_regex)`` to load over the fresh init, or ``None``."""
        return None

    @abc.abstractmethod
    def param_labels(self, shapes: Params) -> dict[str, str]:
        """Flat path (``"unet/down_blocks_0/…/kernel"``) -> optimizer label, or ``train_state.FROZEN``."""

    @abc.abstractmethod
    def optimizer_groups(self) -> dict[str, Mapping[str, Any]]:
        """Label -> optimizer config (fields of ``config.optimizer``) for every non-frozen label."""

    # --- data ------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def host_batch(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Data-pipeline batch -> numeric host arrays with a leading batch axis (e.g. tokenised captions)."""

    # --- step ------------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def preprocess(self, params: Params, batch: Mapping[str, jax.Array], rng: jax.Array) -> Any:
        """Device-side, gradient-free work on one micro-batch (frozen encoders); returns the loss inputs."""

    @abc.abstractmethod
    def loss(self, params: Params, inputs: Any, rng: jax.Array, step: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Scalar training loss and scalar metrics for one micro-batch; ``step`` (int32 scalar, the train step being
        taken) lets a loss switch terms on late (e.g. a GAN's discriminator)."""

    # --- outputs ---------------------------------------------------------------------------------------------
    def evaluate(self, params: Params) -> dict[str, float] | None:
        """Scalar evaluation metrics of ``params`` (the EMA when kept), or ``None`` if the task has none.

        The trainer calls it with the sample hook (``config.sample.every_steps``) and after the last step, and logs
        the result under ``eval/`` in ``metrics.jsonl`` / TensorBoard.
        """
        return None

    def sample(self, params: Params, rng: jax.Array) -> jax.Array | None:
        """uint8 ``[N, T, H, W, 3]`` preview videos for the periodic sample hook, or ``None`` if not supported."""
        return None

    @abc.abstractmethod
    def export(self, params: Params, dtype: str) -> tuple[Params, dict[str, Any]]:
        """``(params, model_config)`` for ``checkpoints.save_inference_checkpoint``, params cast to ``dtype``."""


def get_task_class(name: str) -> type[Task]:
    """The :class:`Task` subclass registered as ``name`` (``config.task``)."""
    if name not in TASKS:
        raise ValueError(f"config.task must be one of {sorted(TASKS)}, got {name!r}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)
