"""C3D (Tran et al. 2015) fine-tuned on UCF-101, the classifier of the video Inception Score (TGAN / TGANv2 protocol).

Conventions of pfnet-research/tgan2's ``C3DVersion1UCF101`` with its weights ``conv3d_deepnetA_ucf.npz`` (converted
from the Caffe model ``c3d_ucf101_finetune_whole_iter_20000``) and mean ``mean2.npz``:

* input ``[B, 16, H, W, 3]`` RGB in [-1, 1]; frames are resized to 112x112 with corner-aligned bilinear interpolation
  (Chainer's ``resize_images`` default; done by the IS pipeline, :mod:`vidrd_jax.evaluate.inception_score`);
* pixels become Caffe's: channels reversed to BGR, ``x·128 + 128`` (so [0, 256]), minus the clip mean
  ``mean2.npz['mean'] (3, 16, 128, 171)`` (BGR) cropped to ``[:, :, 8:120, 8:120]``;
* conv1a -> pool1 (1x2x2) -> conv2a -> pool2 -> conv3a, conv3b -> pool3 -> conv4a, conv4b -> pool4 -> conv5a,
  conv5b -> pool5 (2x2x2) -> fc6 -> fc7 -> fc8 (101 logits): 3x3x3 convs with padding 1, every conv and fc6/fc7
  followed by ReLU (dropout is inactive at inference). Max-pools have stride = window and Chainer's ``cover_all``
  (a partial last window counts, so 7 -> 4 at pool5 and fc6 sees 512·1·4·4 = 8192 inputs);
* fc6 flattens in Chainer's ``(C, T, H, W)`` order, so features are transposed channels-first before it.

Parameters: ``conv1a … conv5b`` and ``fc6 … fc8`` with ``kernel``/``bias`` (convs ``(3, 3, 3, in, out)``, dense
``(in, out)``) and ``mean [16, 112, 112, 3]`` (BGR, already cropped). The npz keys are Chainer's ``<layer>/W`` (convs
``(out, in, 3, 3, 3)``, linears ``(out, in)``) and ``<layer>/b``, read with ``np.load(allow_pickle=False)``.
``C3DConfig.width``/``fc_dim``/``resolution`` shrink the network for tests; the defaults are the real one.
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vidrd_jax.convert.naming import ConversionError

Array = jax.Array
Params = dict[str, Any]

# (layer, output channels, max-pool window after it or None)
CONVS: tuple[tuple[str, int, tuple[int, int, int] | None], ...] = (
    ("conv1a", 64, (1, 2, 2)), ("conv2a", 128, (2, 2, 2)), ("conv3a", 256, None), ("conv3b", 256, (2, 2, 2)),
    ("conv4a", 512, None), ("conv4b", 512, (2, 2, 2)), ("conv5a", 512, None), ("conv5b", 512, (2, 2, 2)),
)
LAYERS = tuple(name for name, _, _ in CONVS) + ("fc6", "fc7", "fc8")
MEAN_CROP = 8  # TGANv2 crops the 128x171 Caffe mean at [8:8+112, 8:8+112]


@dataclasses.dataclass(frozen=True)
class C3DConfig:
    """Architecture knobs; the defaults are TGANv2's UCF-101 C3D."""
    width: float = 1.0
    fc_dim: int = 4096
    num_classes: int = 101
    num_frames: int = 16
    resolution: int = 112
    precision: str = "highest"

    def channels(self, c: int) -> int:
        return max(1, int(round(c * self.width)))


def max_pool_cover_all(x: Array, window: tuple[int, int, int]) -> Array:
    """Max-pool with stride = window over (T, H, W), Chainer ``cover_all=True``: ``ceil((n - k) / k) + 1`` outputs,
    the last window padded with -inf."""
    pads = [(0, (math.ceil((n - k) / k)) * k + k - n) for n, k in zip(x.shape[1:4], window)]
    return nn.max_pool(x, window, window, pads)


class C3D(nn.Module):
    """``apply({"params": p}, clips [B, num_frames, resolution, resolution, 3] in [-1, 1]) -> [B, num_classes]``
    logits (already resized; see :func:`vidrd_jax.evaluate.inception_score.c3d_extractor`)."""
    config: C3DConfig = C3DConfig()

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        shape = (cfg.num_frames, cfg.resolution, cfg.resolution, 3)
        if x.ndim != 5 or tuple(x.shape[1:]) != shape:
            raise ValueError(f"C3D: expected clips [B, {', '.join(map(str, shape))}], got shape {x.shape}")
        mean = self.param("mean", nn.initializers.zeros, shape)
        x = x.astype(jnp.float32)[..., ::-1] * 128.0 + 128.0 - mean
        for name, features, pool in CONVS:
            x = nn.relu(nn.Conv(cfg.channels(features), (3, 3, 3), padding=1, precision=cfg.precision, name=name)(x))
            if pool is not None:
                x = max_pool_cover_all(x, pool)
        x = jnp.transpose(x, (0, 4, 1, 2, 3)).reshape(x.shape[0], -1)
        x = nn.relu(nn.Dense(cfg.fc_dim, precision=cfg.precision, name="fc6")(x))
        x = nn.relu(nn.Dense(cfg.fc_dim, precision=cfg.precision, name="fc7")(x))
        return nn.Dense(cfg.num_classes, precision=cfg.precision, name="fc8")(x)


def abstract_c3d_params(config: C3DConfig = C3DConfig()) -> Params:
    """``jax.ShapeDtypeStruct`` tree of :class:`C3D`'s parameters (float32)."""
    clips = jax.ShapeDtypeStruct((1, config.num_frames, config.resolution, config.resolution, 3), jnp.float32)
    return jax.eval_shape(C3D(config).init, jax.random.key(0), clips)["params"]


def _read_npz(path: str, what: str) -> dict[str, np.ndarray]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"C3D {what} file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError) as e:
        raise ConversionError(f"cannot read {path!r} ({what}): {type(e).__name__}: {e}") from e


def load_c3d_params(weights_path: str, mean_path: str, config: C3DConfig = C3DConfig(), prefix: str = "") -> Params:
    """TGANv2's ``conv3d_deepnetA_ucf.npz`` (keys ``prefix + "<layer>/W"`` and ``"/b"``) and ``mean2.npz`` (``mean``)
    -> :class:`C3D` parameters (numpy float32); every missing, unexpected or misshaped array named in one error."""
    weights, mean_file = _read_npz(weights_path, "weights"), _read_npz(mean_path, "mean")
    target = abstract_c3d_params(config)
    params, missing, mismatched, used = {}, [], [], set()
    for layer in LAYERS:
        entry = {}
        for leaf, suffix in (("kernel", "W"), ("bias", "b")):
            key = f"{prefix}{layer}/{suffix}"
            if key not in weights:
                missing.append(key)
                continue
            used.add(key)
            array = weights[key]
            if leaf == "kernel":  # (out, in, kt, kh, kw) -> (kt, kh, kw, in, out); (out, in) -> (in, out)
                array = np.transpose(array, tuple(range(2, array.ndim)) + (1, 0))
            if array.shape != target[layer][leaf].shape:
                mismatched.append(f"{key}: file {weights[key].shape} vs model {target[layer][leaf].shape} "
                                  f"(as {'(kt, kh, kw, in, out)' if array.ndim == 5 else '(in, out)'})")
                continue
            entry[leaf] = np.asarray(array, np.float32)
        params[layer] = entry
    unexpected = sorted(k for k in weights if k not in used)
    crop = slice(MEAN_CROP, MEAN_CROP + config.resolution)
    mean = mean_file.get("mean")
    need = (3, config.num_frames, MEAN_CROP + config.resolution, MEAN_CROP + config.resolution)
    if mean is None:
        missing.append(f"{mean_path}: mean")
    elif mean.ndim != 4 or mean.shape[:2] != need[:2] or mean.shape[2] < need[2] or mean.shape[3] < need[3]:
        mismatched.append(f"{mean_path}: mean {mean.shape}, need (3, {need[1]}, >={need[2]}, >={need[3]})")
    else:
        params["mean"] = np.ascontiguousarray(np.transpose(mean[:, :, crop, crop], (1, 2, 3, 0)), np.float32)
    if missing or unexpected or mismatched:
        lines = [f"cannot load C3D weights {weights_path!r}:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", mismatched)):
            if items:
                lines += [f"  {len(items)} {title}:"] + [f"    {item}" for item in items]
        raise ConversionError("\n".join(lines))
    return params
