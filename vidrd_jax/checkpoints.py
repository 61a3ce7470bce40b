"""Checkpoints on disk.

Inference checkpoint (written by ``vidrd_jax.convert`` and ``vidrd_jax.export``, read by ``vidrd_jax.generate``)::

    DIR/model_config.json   {"unet": {...}, "vae": {...}, "text_encoder": {...}, "tokenizer": str | null,
                             "scheduler": {...}, "source": str}
    DIR/params/             Orbax PyTree checkpoint of {"unet": ..., "vae": ..., "text_encoder": ...}

Model configs are the ``to_dict()`` of each model's config dataclass.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping

import jax
import numpy as np
import orbax.checkpoint as ocp

MODEL_CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"


def save_inference_checkpoint(directory: str, params: Mapping[str, Any], model_config: Mapping[str, Any]) -> str:
    """Writes ``params`` (a pytree of arrays) and ``model_config`` (JSON-able) to ``directory``."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    params_dir = os.path.join(directory, PARAMS_DIR)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(params_dir, jax.tree.map(np.asarray, dict(params)), force=True)
    checkpointer.wait_until_finished()
    with open(os.path.join(directory, MODEL_CONFIG_FILE), "w") as f:
        json.dump(dict(model_config), f, indent=2, sort_keys=True)
    return directory


def load_model_config(directory: str) -> dict[str, Any]:
    """Reads ``model_config.json``; a clear error if ``directory`` is not an inference checkpoint."""
    path = os.path.join(os.path.abspath(directory), MODEL_CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{directory!r} is not a vidrd_jax inference checkpoint: {MODEL_CONFIG_FILE} not found")
    with open(path) as f:
        return json.load(f)


def load_inference_checkpoint(directory: str, abstract_params: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Returns ``(params, model_config)``. ``abstract_params`` (e.g. with shardings) restores onto devices."""
    model_config = load_model_config(directory)
    params_dir = os.path.join(os.path.abspath(directory), PARAMS_DIR)
    if not os.path.isdir(params_dir):
        raise FileNotFoundError(f"{directory!r} has no {PARAMS_DIR}/ directory")
    checkpointer = ocp.StandardCheckpointer()
    params = checkpointer.restore(params_dir, abstract_params) if abstract_params is not None \
        else checkpointer.restore(params_dir)
    return params, model_config
