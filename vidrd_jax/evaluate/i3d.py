"""Inflated 3D ConvNet (I3D, Carreira & Zisserman 2017; Inception-v1 inflated to 3-D) for the Fréchet Video Distance.

Conventions (those of the TF-Hub ``deepmind/i3d-kinetics-400/1`` module behind the FVD reference, and of
piergiaj/pytorch-i3d's ``InceptionI3d`` whose state dict ``i3d_pretrained_400.pt`` — VideoGPT/StyleGAN-V/TATS'
converted Kinetics-400 weights — loads here):

* input ``[B, T, H, W, 3]`` RGB in [-1, 1], channels-last (the FVD pipeline resizes to 224x224 first,
  :mod:`vidrd_jax.evaluate.fvd`);
* every ``Unit3D`` is conv (no bias) -> BatchNorm with running statistics, eps 1e-3 (TF/sonnet's; VideoGPT's copy
  of the PyTorch port uses 1e-5, set ``bn_eps`` to reproduce its numbers) -> ReLU;
* convolutions and max-pools use TensorFlow ``SAME`` padding (total ``max((ceil(n/s) - 1)·s + k - n, 0)``, the
  smaller half in front), as the PyTorch port's dynamic padding does. The port pads max-pools with zeros where TF
  pads with -inf; every pool here follows a ReLU, so both give the same maxima;
* ``Logits``: average pool ``(2, 7, 7)`` with stride 1, ``VALID`` -> 1x1x1 conv with bias (the 400 logits, no BN,
  no ReLU; dropout is inactive at inference) -> mean over the remaining time (and space) positions. At 224x224 the
  spatial map is 1x1 and this is TF-Hub's ``RGB/inception_i3d/Mean`` tensor, the standard FVD embedding (StyleGAN-V's
  ``return_features=True``: the logits before the softmax). A 16-frame clip leaves one time position, 128 frames 15.

Parameters (one ``params`` tree, nothing else): ``<block>/conv3d/kernel`` (kt, kh, kw, in, out), ``<block>/bn/{scale,
bias,mean,var}`` and ``logits/conv3d/{kernel,bias}``, with ``<block>`` the port's module path, e.g.
``Conv3d_1a_7x7`` or ``Mixed_4b/b1b``; the PyTorch keys are ``<block>.conv3d.weight`` (out, in, kt, kh, kw),
``<block>.bn.{weight,bias,running_mean,running_var}`` (``num_batches_tracked`` is ignored). ``i3d_k400.flax`` is this
tree serialised with ``flax.serialization`` msgpack (:func:`save_i3d_flax`), loadable without torch.

``I3DConfig.width`` scales every channel count (``max(1, round(c · width))``) and ``num_classes``/``logits_pool``
can shrink, so tests run tiny random networks; the defaults are the real architecture.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from vidrd_jax.convert.naming import ConversionError, flatten_params, unflatten_params
from vidrd_jax.convert.torch_io import load_state_dict

Array = jax.Array
Params = dict[str, Any]

# (name, in-block output channels [b0, b1a, b1b, b2a, b2b, b3b]) of every Inception block, and the max-pools
# (window, stride) that precede some of them.
INCEPTION_BLOCKS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
POOL_BEFORE = {"Mixed_3b": ((1, 3, 3), (1, 2, 2)), "Mixed_4b": ((3, 3, 3), (2, 2, 2)),
               "Mixed_5b": ((2, 2, 2), (2, 2, 2))}
_BN_TORCH = {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"}
_CONV_TORCH = {"kernel": "weight", "bias": "bias"}


@dataclasses.dataclass(frozen=True)
class I3DConfig:
    """Architecture knobs; the defaults are Kinetics-400 I3D."""
    width: float = 1.0
    num_classes: int = 400
    bn_eps: float = 1e-3
    logits_pool: tuple[int, int, int] = (2, 7, 7)
    precision: str = "highest"  # conv precision: "highest" keeps float32 on TPU/GPU (TF32 and bf16 passes off)

    def channels(self, c: int) -> int:
        return max(1, int(round(c * self.width)))


class FrozenBatchNorm(nn.Module):
    """BatchNorm at inference: ``(x - mean) / sqrt(var + eps) * scale + bias`` over the last axis."""
    eps: float

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = self.param("mean", nn.initializers.zeros, (c,))
        var = self.param("var", nn.initializers.ones, (c,))
        return (x - mean) * (scale * jax.lax.rsqrt(var + self.eps)) + bias


class Unit3D(nn.Module):
    """Conv3d (``SAME``) -> optional frozen BN -> optional ReLU; the conv is the child ``conv3d``."""
    features: int
    kernel: tuple[int, int, int]
    config: I3DConfig
    stride: tuple[int, int, int] = (1, 1, 1)
    batch_norm: bool = True
    relu: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = nn.Conv(self.features, self.kernel, self.stride, padding="SAME", use_bias=not self.batch_norm,
                    precision=self.config.precision, name="conv3d")(x)
        if self.batch_norm:
            x = FrozenBatchNorm(self.config.bn_eps, name="bn")(x)
        return nn.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    """Four branches concatenated on channels: 1x1 | 1x1 -> 3x3x3 | 1x1 -> 3x3x3 | max-pool 3x3x3 -> 1x1."""
    out: tuple[int, ...]
    config: I3DConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = [self.config.channels(n) for n in self.out]
        b0 = Unit3D(c[0], (1, 1, 1), self.config, name="b0")(x)
        b1 = Unit3D(c[2], (3, 3, 3), self.config, name="b1b")(Unit3D(c[1], (1, 1, 1), self.config, name="b1a")(x))
        b2 = Unit3D(c[4], (3, 3, 3), self.config, name="b2b")(Unit3D(c[3], (1, 1, 1), self.config, name="b2a")(x))
        b3 = Unit3D(c[5], (1, 1, 1), self.config, name="b3b")(nn.max_pool(x, (3, 3, 3), (1, 1, 1), "SAME"))
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class InceptionI3D(nn.Module):
    """``apply({"params": p}, videos [B, T, H, W, 3] in [-1, 1]) -> [B, num_classes]`` time-averaged logits."""
    config: I3DConfig = I3DConfig()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"I3D: expected videos [B, T, H, W, 3], got shape {x.shape}")
        x = x.astype(jnp.float32)
        x = Unit3D(cfg.channels(64), (7, 7, 7), cfg, stride=(2, 2, 2), name="Conv3d_1a_7x7")(x)
        x = nn.max_pool(x, (1, 3, 3), (1, 2, 2), "SAME")
        x = Unit3D(cfg.channels(64), (1, 1, 1), cfg, name="Conv3d_2b_1x1")(x)
        x = Unit3D(cfg.channels(192), (3, 3, 3), cfg, name="Conv3d_2c_3x3")(x)
        for name, out in INCEPTION_BLOCKS:
            if name in POOL_BEFORE:
                window, stride = POOL_BEFORE[name]
                x = nn.max_pool(x, window, stride, "SAME")
            x = InceptionModule(out, cfg, name=name)(x)
        if any(n < k for n, k in zip(x.shape[1:4], cfg.logits_pool)):
            raise ValueError(f"I3D: the final feature map {x.shape[1:4]} (T, H, W) is smaller than the logits pool "
                             f"{cfg.logits_pool}; use at least 9 frames at 224x224 (FVD resizes frames to 224)")
        x = nn.avg_pool(x, cfg.logits_pool, (1, 1, 1), "VALID")
        x = Unit3D(cfg.num_classes, (1, 1, 1), cfg, batch_norm=False, relu=False, name="logits")(x)
        return jnp.mean(x, axis=(1, 2, 3))


def abstract_i3d_params(config: I3DConfig = I3DConfig()) -> Params:
    """``jax.ShapeDtypeStruct`` tree of :class:`InceptionI3D`'s parameters (float32)."""
    frames = 8 * config.logits_pool[0]
    size = 32 * max(config.logits_pool[1:])
    videos = jax.ShapeDtypeStruct((1, frames, size, size, 3), jnp.float32)
    return jax.eval_shape(InceptionI3D(config).init, jax.random.key(0), videos)["params"]


def torch_key(path: tuple[str, ...]) -> str:
    """``("Mixed_4b", "b1b", "bn", "mean")`` -> ``"Mixed_4b.b1b.bn.running_mean"``."""
    *modules, layer, leaf = path
    return ".".join([*modules, layer, (_BN_TORCH if layer == "bn" else _CONV_TORCH)[leaf]])


def _fill(sources: Mapping[str, Any], target: Params, what: str, key_of: Callable[[tuple[str, ...]], str],
          transform: Callable[[tuple[str, ...], np.ndarray], np.ndarray]) -> Params:
    """The param tree shaped like ``target`` from ``sources`` (keyed by ``key_of(path)``); every missing, unexpected
    and wrongly shaped entry is named in one :class:`ConversionError`."""
    out, missing, mismatched, used = {}, [], [], set()
    for path, leaf in flatten_params(target).items():
        key = key_of(path)
        if key not in sources:
            missing.append(key)
            continue
        used.add(key)
        array = transform(path, np.asarray(sources[key]))
        if tuple(array.shape) != tuple(leaf.shape):
            mismatched.append(f"{key}: file {tuple(array.shape)} vs model {tuple(leaf.shape)}")
            continue
        out[path] = np.asarray(array, np.float32)
    unexpected = sorted(k for k in sources if k not in used)
    if missing or unexpected or mismatched:
        lines = [f"cannot load {what}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                lines += [f"  {len(items)} {title}:"] + [f"    {item}" for item in items]
        raise ConversionError("\n".join(lines))
    return unflatten_params(out)


def _from_torch_layout(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    if path[-1] == "kernel" and array.ndim == 5:  # (O, I, kt, kh, kw) -> (kt, kh, kw, I, O)
        return np.transpose(array, (2, 3, 4, 1, 0))
    return array


def i3d_params_from_state_dict(state_dict: Mapping[str, Any], config: I3DConfig = I3DConfig(),
                               what: str = "I3D state dict") -> Params:
    """A PyTorch ``InceptionI3d`` state dict (``{key: array}``) -> our parameter tree (numpy float32)."""
    sources = {k: v for k, v in state_dict.items() if not k.endswith(".num_batches_tracked")}
    return _fill(sources, abstract_i3d_params(config), what, torch_key, _from_torch_layout)


def load_i3d_params(path: str, config: I3DConfig = I3DConfig()) -> Params:
    """Reads ``i3d_pretrained_400.pt`` (a torch state dict, ``torch.load(weights_only=True)``; ``.pth`` and
    ``.safetensors`` too) or a ``.flax`` msgpack param tree into :class:`InceptionI3D` parameters."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"I3D weights file not found: {path}")
    if path.endswith(".flax"):
        with open(path, "rb") as f:
            try:
                tree = serialization.msgpack_restore(f.read())
            except Exception as e:  # msgpack raises several types for damaged bytes
                raise ConversionError(f"cannot read {path!r}: not a flax msgpack file ({type(e).__name__})") from e
        if not isinstance(tree, dict):
            raise ConversionError(f"{path!r} holds a {type(tree).__name__}, expected a parameter tree")
        flat = {"/".join(p): v for p, v in flatten_params(tree).items()}
        return _fill(flat, abstract_i3d_params(config), f"I3D weights {path!r}", "/".join, lambda _, a: a)
    return i3d_params_from_state_dict(load_state_dict(path), config, f"I3D weights {path!r}")


def save_i3d_flax(params: Params, path: str) -> None:
    """Writes ``params`` as a ``.flax`` msgpack file (read back by :func:`load_i3d_params`)."""
    tree = jax.tree.map(lambda a: np.asarray(a, np.float32), params)
    with open(path, "wb") as f:
        f.write(serialization.msgpack_serialize(tree))
