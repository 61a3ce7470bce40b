"""PyTorch state-dict keys <-> Flax parameter paths.

Our Flax modules are named after diffusers/transformers attributes, with list indices joined by an
underscore: ``down_blocks.0.resnets.1.conv1.weight`` <-> ``down_blocks_0/resnets_1/conv1/kernel``.
Leaves are renamed and transposed by kind:

==============  ==================  ===========================================
Flax leaf       PyTorch leaf        layout change
==============  ==================  ===========================================
``kernel`` 2-D  ``weight`` Linear   (out, in) -> (in, out)
``kernel`` 4-D  ``weight`` Conv2d   (O, I, kh, kw) -> (kh, kw, I, O)
``kernel`` 5-D  ``weight`` Conv3d   (O, I, kf, kh, kw) -> (kf, kh, kw, I, O)
``scale``       ``weight`` norms    none
``embedding``   ``weight`` Embed    none
``bias``        ``bias``            none
==============  ==================  ===========================================

A 2-D ``kernel`` whose torch tensor is stored as a 1x1 conv (old VAE attention) is squeezed.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

# Attribute names that hold a torch ModuleList / Sequential, so ``name.<i>`` is a list index.
LIST_NAMES = frozenset({
    "down_blocks", "up_blocks", "resnets", "attentions", "temp_convs", "convs", "downsamplers",
    "upsamplers", "transformer_blocks", "to_out", "net", "layers", "blocks",
})
_LEAF_FROM_TORCH = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
_INDEXED = re.compile(r"^(?P<name>.+)_(?P<idx>\d+)$")


class ConversionError(ValueError):
    """Weights that cannot be converted: the complete list of missing, unexpected and wrongly shaped tensors, or a
    weights file that cannot be read (truncated, corrupt), named."""


def flax_path_to_torch_key(path: tuple[str, ...]) -> str:
    """``("down_blocks_0", "resnets_1", "conv1", "kernel")`` -> ``"down_blocks.0.resnets.1.conv1.weight"``."""
    parts = []
    for segment in path[:-1]:
        match = _INDEXED.match(segment)
        if match and match["name"] in LIST_NAMES:
            parts += [match["name"], match["idx"]]
        else:
            parts.append(segment)
    leaf = path[-1]
    if leaf not in _LEAF_FROM_TORCH:
        raise ConversionError(f"unknown Flax leaf name {leaf!r} in {'/'.join(path)}")
    return ".".join(parts + [_LEAF_FROM_TORCH[leaf]])


def torch_to_flax_array(leaf: str, tensor: np.ndarray, target_ndim: int) -> np.ndarray:
    """Transposes one torch tensor into the layout of a Flax leaf (see module docstring)."""
    if leaf != "kernel":
        return tensor
    if target_ndim == 2 and tensor.ndim == 4 and tensor.shape[2:] == (1, 1):
        tensor = tensor[:, :, 0, 0]
    if tensor.ndim == 2:
        return tensor.T
    if tensor.ndim >= 3:  # (O, I, *spatial) -> (*spatial, I, O)
        return np.transpose(tensor, tuple(range(2, tensor.ndim)) + (1, 0))
    return tensor


def flax_to_torch_array(leaf: str, array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`torch_to_flax_array` (1x1-conv storage is not recreated)."""
    if leaf != "kernel" or array.ndim < 2:
        return array
    if array.ndim == 2:
        return array.T
    nsp = array.ndim - 2
    return np.transpose(array, (array.ndim - 1, array.ndim - 2) + tuple(range(nsp)))


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix + (key,)))
        else:
            out[prefix + (key,)] = value
    return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def flatten_params(tree: Mapping[str, Any]) -> dict[tuple[str, ...], Any]:
    """Nested dict -> ``{path tuple: leaf}``."""
    return _flatten(tree)


def unflatten_params(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    """``{path tuple: leaf}`` -> nested dict."""
    return _unflatten(flat)


def state_dict_to_params(
    state_dict: Mapping[str, Any],
    target: Mapping[str, Any],
    *,
    key_aliases: Mapping[str, str] | None = None,
    allow_missing: Any = None,
    ignore_unexpected: Any = None,
    what: str = "model",
) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    """Converts a torch state dict into a Flax param tree shaped like ``target``.

    Args:
      state_dict: torch key -> array-like (numpy or torch tensor).
      target: nested dict whose leaves have ``.shape`` and ``.dtype`` (e.g. ``jax.eval_shape`` of ``init``).
      key_aliases: torch key -> canonical torch key, applied first (old spellings -> new).
      allow_missing: optional callable ``(torch_key) -> bool``; such missing tensors are returned as
        unfilled paths instead of raising (e.g. temporal layers absent from a 2D checkpoint).
      ignore_unexpected: optional callable ``(torch_key) -> bool`` for extra keys to drop silently.
      what: name used in error messages.

    Returns:
      (params, unfilled): params has numpy leaves for every converted tensor; ``unfilled`` lists the
      target paths that were allowed to be missing (the caller fills them, e.g. from ``init``).

    Raises:
      ConversionError listing every missing, unexpected and wrongly shaped tensor at once.
    """
    aliases = dict(key_aliases or {})
    tensors = {aliases.get(k, k): v for k, v in state_dict.items()}
    flat_target = _flatten(target)
    out, unfilled, missing, mismatched = {}, [], [], []
    used = set()
    for path, leaf in flat_target.items():
        key = flax_path_to_torch_key(path)
        if key not in tensors:
            if allow_missing is not None and allow_missing(key):
                unfilled.append(path)
            else:
                missing.append(key)
            continue
        used.add(key)
        array = _to_numpy(tensors[key])
        array = torch_to_flax_array(path[-1], array, len(leaf.shape))
        if tuple(array.shape) != tuple(leaf.shape):
            mismatched.append(f"{key}: checkpoint {tuple(array.shape)} vs model {tuple(leaf.shape)}")
            continue
        out[path] = array.astype(leaf.dtype)
    unexpected = sorted(k for k in tensors if k not in used
                        and not (ignore_unexpected is not None and ignore_unexpected(k)))
    if missing or unexpected or mismatched:
        lines = [f"cannot convert {what}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                lines.append(f"  {len(items)} {title}:")
                lines += [f"    {item}" for item in items]
        raise ConversionError("\n".join(lines))
    return _unflatten(out), unfilled


def params_to_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax param tree -> torch-layout numpy state dict (the inverse of :func:`state_dict_to_params`)."""
    return {flax_path_to_torch_key(path): flax_to_torch_array(path[-1], np.asarray(value))
            for path, value in _flatten(params).items()}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        value = value.numpy()
    return np.asarray(value)
