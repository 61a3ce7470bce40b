"""Patch discriminator over video clips for the adversarial term of the decoder fine-tuning (paper §4.4, eq. 9).

VidRD fine-tunes the temporal decoder "in the adversarial manner following Stable Diffusion" with a patch-based
discriminator that tells original videos from reconstructed ones. This is LDM's ``NLayerDiscriminator`` (pix2pix
PatchGAN) lifted to 3-D so that it judges temporal consistency, not just single frames:

    conv(C, k=(kt,4,4), s=(1,2,2)) -> LeakyReLU(0.2)
    [conv(C·min(2^n, 8), k=(kt,4,4), s=(1,2,2), no bias) -> GroupNorm -> LeakyReLU(0.2)]  n = 1 .. num_layers-1
    conv(C·min(2^L, 8), k=(kt,4,4), s=1, no bias) -> GroupNorm -> LeakyReLU(0.2)
    conv(1, k=(kt,4,4), s=1)                                       -> logits [B, F, h', w'] (one per patch tube)

Every conv spans ``kt`` (3) frames with zero padding ``kt//2`` and stride 1 in time, so the frame count is kept and
the receptive field of a logit covers ``1 + num_layers_total·(kt-1)`` frames; spatial padding is 1 as in LDM.

Choices (documented deviations from LDM):
* **Plain convolutions, no spectral normalisation.** LDM's discriminator is not spectrally normalised either; its
  stability comes from the hinge loss, the adaptive weight and the late start (``disc_start``).
* **GroupNorm instead of BatchNorm.** BatchNorm would need running statistics (a mutable collection in the train
  state) and would couple the examples of a batch across data shards; GroupNorm has no state and is identical under
  any sharding. Its statistics are pooled over the frames and pixels of each clip (not per frame), so differences
  between frames (e.g. brightness flicker) are not normalised away. Groups: ``min(num_groups, channels)``.
* Weights are initialised ``N(0, 0.02)`` (LDM's ``weights_init``), norms to scale 1 / bias 0.

Inputs are pixels ``[B, F, H, W, 3]`` in [-1, 1]; outputs are float32 logits ``[B, F, h', w']``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrd_jax.models.layers import DTYPES, GroupNorm, resolve_dtype

Array = jax.Array

KERNEL_AXES = ("conv_t", "conv_h", "conv_w", "conv_in", "conv_out")


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """Architecture of :class:`PatchDiscriminator3D`.

    Attributes:
      base_channels: channels of the first conv (LDM ``ndf``: 64).
      num_layers: stride-2 levels (LDM ``n_layers``: 3); a 256² input gives 30² logits per frame.
      temporal_kernel: frames each conv spans (odd; 1 makes it a per-frame 2-D PatchGAN).
      num_groups: GroupNorm groups (capped by the channel count).
      in_channels: pixel channels.
      dtype / param_dtype: ``float32`` | ``bfloat16``.
    """
    base_channels: int = 64
    num_layers: int = 3
    temporal_kernel: int = 3
    num_groups: int = 32
    in_channels: int = 3
    dtype: str = "float32"
    param_dtype: str = "float32"

    def __post_init__(self):
        for name in ("base_channels", "num_layers", "temporal_kernel", "num_groups", "in_channels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"DiscriminatorConfig.{name}: must be a positive int, got {value!r}")
        if self.temporal_kernel % 2 == 0:
            raise ValueError(f"DiscriminatorConfig.temporal_kernel: must be odd, got {self.temporal_kernel}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"DiscriminatorConfig.{name}: must be one of {sorted(DTYPES)}, "
                                 f"got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "DiscriminatorConfig":
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"DiscriminatorConfig.from_dict: unknown field(s) {unknown}")
        return cls(**config)

    def channels(self) -> list[int]:
        """Output channels of the ``num_layers + 2`` convs."""
        c = self.base_channels
        return [c] + [c * min(2 ** n, 8) for n in range(1, self.num_layers + 1)] + [1]

    def logits_size(self, size: int) -> int:
        """Spatial size of the logits for an input side of ``size`` pixels (k=4, pad 1)."""
        for _ in range(self.num_layers):
            size = (size + 2 - 4) // 2 + 1
        for _ in range(2):
            size = size + 2 - 4 + 1
        return size

    def check_input(self, height: int, width: int) -> None:
        """Raises if a ``height x width`` clip is too small to give at least one logit per frame."""
        if min(self.logits_size(height), self.logits_size(width)) < 1:
            raise ValueError(f"discriminator.num_layers={self.num_layers}: a {height}x{width} input leaves no "
                             f"patch logits; use fewer layers or a larger resolution")


class PatchDiscriminator3D(nn.Module):
    """3-D PatchGAN: ``[B, F, H, W, C]`` pixels -> ``[B, F, h', w']`` float32 logits (see module docstring).

    Parameters: ``conv_0 … conv_{L+1}`` (kernels ``(kt, 4, 4, Cin, Cout)``), ``norm_1 … norm_L`` (GroupNorm).
    """
    config: DiscriminatorConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        if x.ndim != 5 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"PatchDiscriminator3D: x must be [B, F, H, W, {cfg.in_channels}], got {x.shape}")
        cfg.check_input(x.shape[2], x.shape[3])
        dtype, param_dtype = resolve_dtype(cfg.dtype, "dtype"), resolve_dtype(cfg.param_dtype, "param_dtype")
        pt = cfg.temporal_kernel // 2
        channels = cfg.channels()
        last = len(channels) - 1
        h = x.astype(dtype)
        for i, features in enumerate(channels):
            stride = (1, 2, 2) if i < cfg.num_layers else (1, 1, 1)
            normed = 0 < i < last
            h = nn.Conv(features, (cfg.temporal_kernel, 4, 4), strides=stride, padding=((pt, pt), (1, 1), (1, 1)),
                        use_bias=not normed, dtype=dtype, param_dtype=param_dtype, name=f"conv_{i}",
                        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), KERNEL_AXES),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)))(h)
            if normed:
                h = GroupNorm(min(cfg.num_groups, features), 1e-5, dtype=dtype, param_dtype=param_dtype,
                              name=f"norm_{i}")(h)
            if i < last:
                h = nn.leaky_relu(h, 0.2)
        return h[..., 0].astype(jnp.float32)


def hinge_d_loss(logits_real: Array, logits_fake: Array) -> Array:
    """Discriminator hinge loss ``½(E[relu(1 − D(x))] + E[relu(1 + D(x̂))])`` (LDM ``hinge_d_loss``)."""
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - logits_real)) + jnp.mean(jax.nn.relu(1.0 + logits_fake)))


def generator_loss(logits_fake: Array) -> Array:
    """Generator term ``−E[D(x̂)]`` (LDM's ``g_loss``)."""
    return -jnp.mean(logits_fake)


def clip_accuracy(logits_real: Array, logits_fake: Array) -> Array:
    """Fraction of clips classified correctly from their mean patch logit (real > 0, reconstructed < 0)."""
    real = jnp.mean(logits_real.reshape(logits_real.shape[0], -1), axis=1) > 0
    fake = jnp.mean(logits_fake.reshape(logits_fake.shape[0], -1), axis=1) < 0
    return 0.5 * (jnp.mean(real.astype(jnp.float32)) + jnp.mean(fake.astype(jnp.float32)))
