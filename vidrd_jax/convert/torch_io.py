"""Reading and writing PyTorch-layout state dicts without unpickling arbitrary objects.

``.safetensors`` files are read with safetensors' numpy backend (bf16 via ml_dtypes). Pickled torch files
(``.bin``, ``.pt``, ``.pth``, ``.ckpt``) are read with ``torch.load(weights_only=True)``, which refuses to build
arbitrary Python objects; torch is imported only for them. A file that cannot be read (truncated, corrupt) raises
a :class:`~vidrd_jax.convert.naming.ConversionError` naming it; a pickle that needs more than tensors is refused
with its own message.
"""
from __future__ import annotations

import json
import os
import pickle
from typing import Any, Mapping

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from vidrd_jax.convert.naming import ConversionError

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
WEIGHT_NAMES = ("diffusion_pytorch_model", "model", "pytorch_model")


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """Loads one weights file (safetensors or a torch pickle of tensors) as ``{key: np.ndarray}``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        try:
            return dict(load_file(path))
        except SafetensorError as e:
            raise ConversionError(f"cannot read {path!r}: truncated or corrupt safetensors file ({e})") from e
    if path.endswith(_PICKLE_SUFFIXES):
        return {k: _tensor_to_numpy(v) for k, v in _torch_load(path).items()}
    raise ValueError(f"unsupported weights file {path!r}: expected .safetensors or one of {_PICKLE_SUFFIXES}")


def load_torch_checkpoint(path: str) -> dict[str, Any]:
    """Loads a torch checkpoint dict (e.g. a Lightning ``.pth`` with ``state_dict``) with ``weights_only=True``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return _torch_load(path)


def _torch_load(path: str) -> dict[str, Any]:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(f"reading {path!r} needs torch (pip install 'torch==2.13.0'); "
                          "safetensors files need no torch") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        detail = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        if isinstance(e, pickle.UnpicklingError) and "Weights only load failed" in str(e):
            raise ValueError(
                f"refusing to load {path!r}: it is not a plain tensor checkpoint loadable with weights_only=True "
                f"({detail}). Re-save its state_dict with safetensors from a trusted environment.") from e
        # Anything else (a cut-off zip or pickle stream, garbage bytes) is a damaged file, not an unsafe one.
        raise ConversionError(f"cannot read {path!r}: truncated or corrupt torch checkpoint ({detail})") from e
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, expected a dict of tensors")
    return dict(obj)


def _tensor_to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def find_weights(folder: str, variant: str | None = None) -> list[str]:
    """The weight file(s) of a diffusers/transformers model folder: single, sharded (``*.index.json``) or ``.bin``."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"model folder not found: {folder}")
    infix = f".{variant}" if variant else ""
    for name in WEIGHT_NAMES:
        for suffix in (".safetensors", ".bin"):
            index = os.path.join(folder, f"{name}{infix}{suffix}.index.json")
            if os.path.isfile(index):
                with open(index) as f:
                    shards = sorted(set(json.load(f)["weight_map"].values()))
                return [os.path.join(folder, s) for s in shards]
            single = os.path.join(folder, f"{name}{infix}{suffix}")
            if os.path.isfile(single):
                return [single]
    raise FileNotFoundError(
        f"no weights in {folder!r}: expected one of "
        + ", ".join(f"{n}{infix}.safetensors|.bin" for n in WEIGHT_NAMES))


def load_folder_state_dict(folder: str, variant: str | None = None) -> dict[str, np.ndarray]:
    """All tensors of a model folder (shards merged)."""
    state: dict[str, np.ndarray] = {}
    for path in find_weights(folder, variant):
        state.update(load_state_dict(path))
    return state


def read_json(path: str) -> dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config not found: {path}")
    with open(path) as f:
        return json.load(f)


def save_state_dict(path: str, state_dict: Mapping[str, np.ndarray]) -> None:
    """Writes a safetensors file. safetensors writes each array's raw buffer, so a transposed (non-contiguous)
    view would be stored scrambled: every tensor is made C-contiguous first."""
    save_file({k: np.ascontiguousarray(v) for k, v in state_dict.items()}, path)


def write_folder(folder: str, state_dict: Mapping[str, np.ndarray], config: Mapping[str, Any],
                 weights_name: str, config_name: str = "config.json") -> None:
    """Writes ``weights_name`` (safetensors) and ``config_name`` into ``folder``."""
    os.makedirs(folder, exist_ok=True)
    save_state_dict(os.path.join(folder, weights_name), state_dict)
    with open(os.path.join(folder, config_name), "w") as f:
        json.dump(dict(config), f, indent=2, sort_keys=True)
