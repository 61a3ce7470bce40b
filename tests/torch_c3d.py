"""A PyTorch re-statement of TGANv2's ``C3DVersion1UCF101`` (Chainer) forward pass, reading the same npz files, to
check :mod:`vidrd_jax.evaluate.c3d` against.

Layout is PyTorch's ``(b, c, t, h, w)``. Chainer's ``pre`` 1x1 conv (RGB -> BGR, x128), ``resize_images`` (bilinear,
corners aligned) and ``Bias(128 - mean[:, :, 8:8+R, 8:8+R])`` come first; Chainer's ``max_pooling_nd(cover_all=True)``
is ``max_pool3d(ceil_mode=True)``; ``Linear`` flattens ``(c, t, h, w)``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

CONVS = (("conv1a", (1, 2, 2)), ("conv2a", (2, 2, 2)), ("conv3a", None), ("conv3b", (2, 2, 2)), ("conv4a", None),
         ("conv4b", (2, 2, 2)), ("conv5a", None), ("conv5b", (2, 2, 2)))


def c3d_logits(weights: dict[str, np.ndarray], mean: np.ndarray, x: torch.Tensor,
               resolution: int = 112) -> torch.Tensor:
    """``x (b, 3, 16, h, w)`` RGB in [-1, 1] -> ``(b, num_classes)`` fc8 logits."""
    w = {k: torch.from_numpy(np.asarray(v, np.float32)) for k, v in weights.items()}
    pre = torch.zeros(3, 3, 1, 1, 1)
    pre[[0, 1, 2], [2, 1, 0]] = 128.0
    h = F.conv3d(x, pre)
    b, c, t = h.shape[:3]
    frames = h.permute(0, 2, 1, 3, 4).reshape(b * t, c, *h.shape[3:])
    frames = F.interpolate(frames, size=(resolution, resolution), mode="bilinear", align_corners=True)
    h = frames.reshape(b, t, c, resolution, resolution).permute(0, 2, 1, 3, 4)
    h = h + torch.from_numpy(128.0 - mean[:, :, 8:8 + resolution, 8:8 + resolution].astype(np.float32))
    for name, pool in CONVS:
        h = F.relu(F.conv3d(h, w[f"{name}/W"], w[f"{name}/b"], padding=1))
        if pool is not None:
            h = F.max_pool3d(h, pool, pool, ceil_mode=True)
    h = h.reshape(b, -1)
    h = F.relu(F.linear(h, w["fc6/W"], w["fc6/b"]))
    h = F.relu(F.linear(h, w["fc7/W"], w["fc7/b"]))
    return F.linear(h, w["fc8/W"], w["fc8/b"])


def random_c3d_npz(seed: int, width: float, fc_dim: int, num_classes: int, resolution: int, fc6_in: int
                   ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Chainer-layout weights (``<layer>/W``, ``<layer>/b``) with He-scaled random values, and a BGR clip mean
    ``(3, 16, resolution + 16, resolution + 20)`` around Caffe's pixel means."""
    rng = np.random.default_rng(seed)
    ch = lambda c: max(1, int(round(c * width)))  # noqa: E731
    weights, cin = {}, 3
    for name, cout in zip([n for n, _ in CONVS], (64, 128, 256, 256, 512, 512, 512, 512)):
        cout = ch(cout)
        weights[f"{name}/W"] = rng.normal(0, np.sqrt(2 / (27 * cin)), (cout, cin, 3, 3, 3)).astype(np.float32)
        weights[f"{name}/b"] = rng.normal(0, 0.1, cout).astype(np.float32)
        cin = cout
    # the first conv sees [0, 256]-scale pixels: shrink it so activations stay O(1)
    weights["conv1a/W"] /= 128.0
    for name, fin, fout in (("fc6", fc6_in, fc_dim), ("fc7", fc_dim, fc_dim), ("fc8", fc_dim, num_classes)):
        weights[f"{name}/W"] = rng.normal(0, np.sqrt(2 / fin), (fout, fin)).astype(np.float32)
        weights[f"{name}/b"] = rng.normal(0, 0.1, fout).astype(np.float32)
    mean = (np.array([90.0, 98.0, 102.0])[:, None, None, None]
            + rng.normal(0, 5, (3, 16, resolution + 16, resolution + 20))).astype(np.float32)
    return weights, mean
