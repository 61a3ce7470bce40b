"""LPIPS perceptual distance (Zhang et al. 2018, VGG16 variant) in Flax, for the reconstruction loss of eq. 9.

LDM's autoencoder loss, which VidRD's decoder fine-tuning follows (paper §4.4), is ``|x − x̂| + LPIPS(x, x̂)``.
The network: inputs in [-1, 1] are shifted/scaled (``(x − shift) / scale``, LPIPS' ``ScalingLayer``), run through
VGG16's ``features`` up to ``relu5_3``; the activations after ``relu1_2, relu2_2, relu3_3, relu4_3, relu5_3`` are
unit-normalised over channels, their squared differences are weighted per channel by the learned linear heads
``lin0..lin4`` (1x1 convs, no bias), averaged over space and summed over the five layers.

Weights folder (the loader is :func:`load_lpips_params`; nothing is downloaded, nothing is unpickled):

* **VGG16 backbone**: ``vgg16.safetensors``, or torchvision's state dict ``vgg16-*.pth`` (e.g.
  ``vgg16-397923af.pth``, read with ``torch.load(weights_only=True)``). Keys ``features.{i}.weight``
  ``(Cout, Cin, 3, 3)`` and ``features.{i}.bias`` for ``i`` in 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28;
  other keys (``classifier.*``) are ignored.
* **LPIPS heads**: ``vgg.safetensors``, or the ``lpips`` package's ``lpips/weights/v0.1/vgg.pth`` (a plain
  state dict). Keys ``lin{k}.model.1.weight`` of shape ``(1, C_k, 1, 1)``, C = 64, 128, 256, 512, 512.

Flax parameters: ``features_{i}/{kernel (3, 3, Cin, Cout), bias}`` and ``lin{k}/kernel (C_k,)``.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Params = dict[str, Any]

# (features index of the conv, output channels); "M" = 2x2 max-pool. Taps after the last conv of each block.
VGG16_CONVS: tuple[tuple[int, int], ...] = (
    (0, 64), (2, 64), (5, 128), (7, 128), (10, 256), (12, 256), (14, 256),
    (17, 512), (19, 512), (21, 512), (24, 512), (26, 512), (28, 512))
_BLOCKS: tuple[tuple[int, ...], ...] = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
SCALE = np.array([0.458, 0.448, 0.450], np.float32)
EPS = 1e-10


class LPIPS(nn.Module):
    """``apply({"params": p}, x[N, H, W, 3], y[N, H, W, 3]) -> [N]`` LPIPS distances (float32).

    Inputs are in [-1, 1] and at least 16x16 (four 2x2 pools). The distance is 0 for identical inputs and symmetric.
    """

    @nn.compact
    def __call__(self, x: Array, y: Array) -> Array:
        if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"LPIPS: x and y must both be [N, H, W, 3], got {x.shape} and {y.shape}")
        if min(x.shape[1:3]) < 16:
            raise ValueError(f"LPIPS: images must be at least 16x16 pixels, got {x.shape[1:3]}")
        n = x.shape[0]
        h = (jnp.concatenate([x, y]).astype(jnp.float32) - SHIFT) / SCALE
        dist = jnp.zeros((n,), jnp.float32)
        for k, block in enumerate(_BLOCKS):
            if k:
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            for i in block:
                h = nn.relu(nn.Conv(dict(VGG16_CONVS)[i], (3, 3), padding=1, name=f"features_{i}")(h))
            f = h * jax.lax.rsqrt(jnp.sum(jnp.square(h), axis=-1, keepdims=True) + EPS ** 2)
            lin = self.param(f"lin{k}", nn.initializers.uniform(1.0), (LPIPS_CHANNELS[k],))
            dist = dist + jnp.mean(jnp.sum(jnp.square(f[:n] - f[n:]) * lin, axis=-1), axis=(1, 2))
        return dist


def abstract_lpips_params() -> Params:
    """``jax.ShapeDtypeStruct`` tree of :class:`LPIPS`' parameters (float32)."""
    z = jnp.zeros((1, 16, 16, 3), jnp.float32)
    return jax.eval_shape(LPIPS().init, jax.random.key(0), z, z)["params"]


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return dict(load_file(path))
    import torch  # deferred: only .pth files need it

    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a state dict (mapping of tensors), got {type(state).__name__}")
    return {k: v.detach().float().numpy() for k, v in state.items() if hasattr(v, "numpy")}


def _find(folder: str, safetensors_name: str, pth_pattern: str, what: str) -> str:
    candidates = [os.path.join(folder, safetensors_name)] + sorted(glob.glob(os.path.join(folder, pth_pattern)))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"LPIPS weights folder {folder!r} has no {what}: expected {safetensors_name} or "
                            f"{pth_pattern}")


def lpips_files(folder: str) -> tuple[str, str]:
    """``(vgg16_file, heads_file)`` in ``folder``; a clear error naming what is missing."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"LPIPS weights folder {folder!r} does not exist")
    return (_find(folder, "vgg16.safetensors", "vgg16*.pth", "VGG16 backbone"),
            _find(folder, "vgg.safetensors", "vgg.pth", "LPIPS linear heads"))


def load_lpips_params(folder: str) -> Params:
    """Reads the weights folder (module docstring) into :class:`LPIPS` parameters (numpy float32).

    Raises ``FileNotFoundError`` for a missing folder/file and ``ValueError`` listing missing or misshaped tensors.
    """
    vgg_path, heads_path = lpips_files(folder)
    vgg, heads = _read_state_dict(vgg_path), _read_state_dict(heads_path)
    params: Params = {}
    problems: list[str] = []
    cin = 3
    for i, cout in VGG16_CONVS:
        w, b = vgg.get(f"features.{i}.weight"), vgg.get(f"features.{i}.bias")
        if w is None or b is None:
            problems.append(f"{vgg_path}: missing features.{i}.weight/bias")
        elif w.shape != (cout, cin, 3, 3) or b.shape != (cout,):
            problems.append(f"{vgg_path}: features.{i} has shapes {w.shape}/{b.shape}, expected "
                            f"{(cout, cin, 3, 3)}/{(cout,)}")
        else:
            params[f"features_{i}"] = {"kernel": np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)), np.float32),
                                       "bias": np.asarray(b, np.float32)}
        cin = cout
    for k, c in enumerate(LPIPS_CHANNELS):
        w = heads.get(f"lin{k}.model.1.weight")
        if w is None:
            problems.append(f"{heads_path}: missing lin{k}.model.1.weight")
        elif w.shape != (1, c, 1, 1):
            problems.append(f"{heads_path}: lin{k}.model.1.weight has shape {w.shape}, expected {(1, c, 1, 1)}")
        else:
            params[f"lin{k}"] = np.asarray(w.reshape(c), np.float32)
    if problems:
        raise ValueError("LPIPS weights do not fit: " + "; ".join(problems))
    return params


def lpips_distance(params: Params, x: Array, y: Array) -> Array:
    """LPIPS distances ``[N]`` between image batches ``[N, H, W, 3]`` in [-1, 1]."""
    return LPIPS().apply({"params": params}, x, y)
