"""A small PyTorch re-statement of piergiaj/pytorch-i3d's ``InceptionI3d`` (the network behind
``i3d_pretrained_400.pt``) with a channel ``width`` multiplier, to check :mod:`vidrd_jax.evaluate.i3d` against.

Layout is PyTorch's (``(b, c, t, h, w)``); state-dict keys are the port's (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_4b.b1b.bn.running_var``, ``logits.conv3d.bias`` …). Padding is computed per layer as the port does
(``max(k - s, 0)`` when ``s`` divides the size, else ``max(k - size % s, 0)``, the smaller half in front) and max-pools
pad with zeros, as the port's ``F.pad`` does. The output is the logits averaged over the remaining positions.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BLOCKS = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)), ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)), ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)), ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
POOLS = {"Mixed_3b": ((1, 3, 3), (1, 2, 2)), "Mixed_4b": ((3, 3, 3), (2, 2, 2)), "Mixed_5b": ((2, 2, 2), (2, 2, 2))}


def _same_pad(x: torch.Tensor, kernel, stride) -> torch.Tensor:
    pads = []
    for size, k, s in zip(x.shape[2:], kernel, stride):
        total = max(k - s, 0) if size % s == 0 else max(k - size % s, 0)
        pads.append((total // 2, total - total // 2))
    (tf, tb), (hf, hb), (wf, wb) = pads
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class MaxPoolSame(nn.Module):
    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x):
        return F.max_pool3d(_same_pad(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    def __init__(self, cin, cout, kernel=(1, 1, 1), stride=(1, 1, 1), batch_norm=True, relu=True, eps=1e-3):
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=not batch_norm)
        self.bn = nn.BatchNorm3d(cout, eps=eps, momentum=0.01) if batch_norm else None

    def forward(self, x):
        x = self.conv3d(_same_pad(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class Inception(nn.Module):
    def __init__(self, cin, out, eps):
        super().__init__()
        self.b0 = Unit3D(cin, out[0], eps=eps)
        self.b1a = Unit3D(cin, out[1], eps=eps)
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3), eps=eps)
        self.b2a = Unit3D(cin, out[3], eps=eps)
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3), eps=eps)
        self.b3a = MaxPoolSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(cin, out[5], eps=eps)

    def forward(self, x):
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class TorchI3D(nn.Module):
    """``forward(x (b, 3, t, h, w) in [-1, 1]) -> (b, num_classes)``."""

    def __init__(self, width=1.0, num_classes=400, eps=1e-3, logits_pool=(2, 7, 7)):
        super().__init__()
        ch = lambda c: max(1, int(round(c * width)))  # noqa: E731
        self.Conv3d_1a_7x7 = Unit3D(3, ch(64), (7, 7, 7), (2, 2, 2), eps=eps)
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(ch(64), ch(64), eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(ch(64), ch(192), (3, 3, 3), eps=eps)
        self.blocks, self.pools = [], {}
        cin = ch(192)
        for name, out in BLOCKS:
            if name in POOLS:
                self.pools[name] = MaxPoolSame(*POOLS[name])
            out = [ch(c) for c in out]
            setattr(self, name, Inception(cin, out, eps))
            self.blocks.append(name)
            cin = out[0] + out[2] + out[4] + out[5]
        self.logits_pool = logits_pool
        self.logits = Unit3D(cin, num_classes, batch_norm=False, relu=False)

    def forward(self, x):
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))))
        for name in self.blocks:
            if name in self.pools:
                x = self.pools[name](x)
            x = getattr(self, name)(x)
        x = self.logits(F.avg_pool3d(x, self.logits_pool, stride=1))
        return x.mean(dim=(2, 3, 4))


def random_i3d(seed: int, **kwargs) -> TorchI3D:
    """A :class:`TorchI3D` in eval mode with random weights and non-trivial BN statistics."""
    torch.manual_seed(seed)
    model = TorchI3D(**kwargs).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
            elif isinstance(module, nn.Conv3d):  # He-normal: the signal keeps its scale through ~22 ReLU layers
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, (2.0 / fan_in) ** 0.5)
                if module.bias is not None:
                    module.bias.uniform_(-0.5, 0.5)
    return model
