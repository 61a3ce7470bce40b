"""Stable Diffusion's KL autoencoder with VidRD's temporal-aware decoder (paper §4.4, Fig. 6; eq. 4).

The encoder E, ``quant_conv`` and ``post_quant_conv`` are SD's 2-D layers. The decoder D gets a Temp-Conv after
every ResNet of its up blocks (3 sub-layers, last conv zero-initialised, residual), so a fresh temporal decoder is
exactly SD's decoder; with ``num_frames=1`` it *is* SD's decoder (as the official inference, which never passes
``num_frames``). Images are channels-last ``[N, H, W, 3]`` in [-1, 1]; clips fold their frames into N with the
frames inner (``N = B·F``).
"""
from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrd_jax.models.layers import (
    ATTENTION_IMPLS, DTYPES, GROUPNORM_SCOPES, REMAT_POLICIES, Downsample, GroupNorm, ModelConfigMixin, ResnetBlock,
    Upsample, constrain_video, conv, dense, dot_product_attention, remat_block)
from vidrd_jax.models.temporal_layers import (
    RELEASE_TEMPORAL_NORM_EPS, RELEASE_TEMPORAL_NORM_GROUPS, TEMPORAL_PADDINGS, TemporalConv)

Array = jax.Array

LOGVAR_RANGE = (-30.0, 20.0)  # diffusers DiagonalGaussianDistribution clamps the log-variance
RELEASE_TEMPORAL_NORM = dict(temporal_norm_num_groups=RELEASE_TEMPORAL_NORM_GROUPS,
                             temporal_norm_eps=RELEASE_TEMPORAL_NORM_EPS)


@dataclasses.dataclass(frozen=True)
class VAEConfig(ModelConfigMixin):
    """Architecture of :class:`AutoencoderKL`; the defaults are SD (1.x/2.x) + VidRD's temporal decoder.

    Attributes:
      in_channels / out_channels: pixel channels. latent_channels: channels of z.
      block_out_channels: encoder channels per level (the decoder uses them reversed).
      layers_per_block: ResNets per encoder level (decoder levels have one more).
      norm_num_groups / norm_eps: GroupNorm of the 2-D layers (SD: 32 / 1e-6).
      scaling_factor: latents fed to the UNet are ``z * scaling_factor`` (SD: 0.18215).
      use_temporal_decoder: add Temp-Conv layers to the decoder (§4.4).
      temporal_conv_layers / temporal_norm_eps / dropout: Temp-Conv sub-layers (official: 3), their GroupNorm eps
        (1e-5) and dropout rate (0.1).
      temporal_norm_num_groups: groups of the Temp-Conv GroupNorms. The release hard-codes 32 whatever
        ``norm_num_groups`` is; ``sd21`` and ``from_diffusers`` (release-layout models) set it. None (the dataclass
        default, and what a stored config written before this field existed reads as) follows ``norm_num_groups``,
        as those models were built.
      groupnorm_scope: Temp-Conv GroupNorm statistics over the whole clip (``clip``, official) or per frame.
      temporal_padding: Temp-Conv padding of the frame axis, ``zeros`` (official) | ``replicate`` (see
        :class:`~vidrd_jax.models.temporal_layers.TemporalConv`; no parameter changes, so weights load either way).
      dtype / param_dtype: ``float32`` | ``bfloat16``.
      remat_policy: rematerialisation of each encoder/decoder level (see ``layers.REMAT_POLICIES``).
      attention_impl: the mid-block attention (see ``layers.dot_product_attention``; ``auto``: per backend).
    """
    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    scaling_factor: float = 0.18215
    use_temporal_decoder: bool = True
    temporal_conv_layers: int = 3
    temporal_norm_num_groups: int | None = None
    temporal_norm_eps: float = RELEASE_TEMPORAL_NORM_EPS
    dropout: float = 0.1
    groupnorm_scope: str = "clip"
    temporal_padding: str = "zeros"
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "none"
    attention_impl: str = "auto"

    def __post_init__(self):
        if isinstance(self.block_out_channels, list):
            object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        self._validate()

    def _validate(self) -> None:
        def fail(field: str, message: str):
            raise ValueError(f"VAEConfig.{field}: {message}")

        for name in ("in_channels", "out_channels", "latent_channels", "layers_per_block", "norm_num_groups",
                     "temporal_conv_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(name, f"must be a positive int, got {value!r}")
        if not self.block_out_channels:
            fail("block_out_channels", "must name at least one level")
        for i, channels in enumerate(self.block_out_channels):
            if not isinstance(channels, int) or channels <= 0 or channels % self.norm_num_groups:
                fail("block_out_channels", f"entry {i} ({channels!r}) must be a positive multiple of "
                     f"norm_num_groups={self.norm_num_groups}")
        groups = self.temporal_norm_num_groups
        if groups is not None and (not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0):
            fail("temporal_norm_num_groups", f"must be a positive int or None, got {groups!r}")
        if self.use_temporal_decoder:
            for i, channels in enumerate(self.block_out_channels):
                if channels % self.temporal_groups:
                    fail("temporal_norm_num_groups", f"{self.temporal_groups} groups do not divide "
                         f"block_out_channels entry {i} ({channels})")
        for name in ("norm_eps", "temporal_norm_eps", "scaling_factor"):
            if not getattr(self, name) > 0:
                fail(name, f"must be > 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", f"must be in [0, 1), got {self.dropout!r}")
        choices = {"groupnorm_scope": GROUPNORM_SCOPES, "temporal_padding": TEMPORAL_PADDINGS, "dtype": tuple(DTYPES),
                   "param_dtype": tuple(DTYPES), "remat_policy": REMAT_POLICIES, "attention_impl": ATTENTION_IMPLS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, f"must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def temporal_groups(self) -> int:
        """Groups of the Temp-Conv GroupNorms (``norm_num_groups`` where ``temporal_norm_num_groups`` is unset)."""
        return self.norm_num_groups if self.temporal_norm_num_groups is None else self.temporal_norm_num_groups

    @classmethod
    def sd21(cls, **overrides: Any) -> "VAEConfig":
        """SD-2.1's autoencoder with VidRD's temporal decoder as released (100 M parameters, 16.4 M temporal)."""
        return cls(**{**RELEASE_TEMPORAL_NORM, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "VAEConfig":
        """A two-level toy model for tests (32/64 channels, one layer per block, 8 groups, downsampling x2)."""
        kwargs = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
        kwargs.update(overrides)
        return cls(**kwargs)


    @classmethod
    def from_diffusers(cls, config_json: Mapping[str, Any], **overrides: Any) -> "VAEConfig":
        """Builds the config from a diffusers ``AutoencoderKL`` ``config.json`` dict (e.g. SD-2.1's ``vae/``).

        VidRD's ``add_temp_conv`` key, when present, sets ``use_temporal_decoder``; the Temp-Conv GroupNorms are the
        release's (32 groups, eps 1e-5). Features this model does not implement raise an error naming the field;
        ``overrides`` set any :class:`VAEConfig` field.
        """
        cfg = dict(config_json)
        expected = {"act_fn": "silu", "use_quant_conv": True, "use_post_quant_conv": True,
                    "mid_block_add_attention": True, "shift_factor": None, "latents_mean": None,
                    "latents_std": None}
        for key, value in expected.items():
            if key in cfg and cfg[key] != value:
                raise ValueError(f"from_diffusers: unsupported {key}={cfg[key]!r} (this model implements {value!r})")
        for key, block in (("down_block_types", "DownEncoderBlock2D"), ("up_block_types", "UpDecoderBlock2D")):
            if any(t != block for t in cfg.get(key, ())):
                raise ValueError(f"from_diffusers: unsupported {key}={cfg[key]!r} (only {block})")
        kwargs: dict[str, Any] = dict(RELEASE_TEMPORAL_NORM)
        for key in ("in_channels", "out_channels", "latent_channels", "block_out_channels", "layers_per_block",
                    "norm_num_groups", "scaling_factor"):
            if key in cfg:
                kwargs[key] = tuple(cfg[key]) if isinstance(cfg[key], list) else cfg[key]
        if "add_temp_conv" in cfg:
            kwargs["use_temporal_decoder"] = bool(cfg["add_temp_conv"])
        kwargs.update(overrides)
        return cls(**kwargs)




def _resnet(cfg: VAEConfig, channels: int, name: str) -> ResnetBlock:
    return ResnetBlock(channels, cfg.norm_num_groups, cfg.norm_eps, "frame", name=name, **cfg.dtype_kwargs())


class MidBlockAttention(nn.Module):
    """Single-head self-attention over all positions of an image, with its own ``group_norm``, residual.

    Parameters ``group_norm``, ``to_q``, ``to_k``, ``to_v``, ``to_out_0`` (all with bias); old checkpoints name
    them ``query``, ``key``, ``value``, ``proj_attn`` (the converter maps them).
    """
    config: VAEConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        n, hh, ww, c = x.shape
        kw = cfg.dtype_kwargs()
        h = GroupNorm(cfg.norm_num_groups, cfg.norm_eps, name="group_norm", **kw)(x).reshape(n, hh * ww, 1, c)
        q, k, v = (dense(c, ("embed", "heads"), name=name, **kw)(h) for name in ("to_q", "to_k", "to_v"))
        out = dot_product_attention(q, k, v, cfg.attention_impl).reshape(n, hh * ww, c)
        return dense(c, ("heads", "embed"), name="to_out_0", **kw)(out).reshape(x.shape) + x


class MidBlock(nn.Module):
    """``resnets_0 -> attentions_0 -> resnets_1`` at the lowest resolution (no time embedding)."""
    config: VAEConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        channels = x.shape[-1]
        h = _resnet(self.config, channels, "resnets_0")(x)
        h = MidBlockAttention(self.config, name="attentions_0")(h)
        return _resnet(self.config, channels, "resnets_1")(h)


class DownEncoderBlock(nn.Module):
    """``layers_per_block`` ResNets, then a stride-2 conv with (0, 1) padding (all levels but the last)."""
    config: VAEConfig
    index: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        channels = cfg.block_out_channels[self.index]
        for j in range(cfg.layers_per_block):
            x = _resnet(cfg, channels, f"resnets_{j}")(x)
        if self.index < len(cfg.block_out_channels) - 1:
            x = Downsample(channels, ((0, 1), (0, 1)), name="downsamplers_0", **cfg.dtype_kwargs())(x)
        return constrain_video(x)


class UpDecoderBlock(nn.Module):
    """``layers_per_block + 1`` x [ResNet -> Temp-Conv (temporal decoder)], then nearest x2 + conv.

    ``x``: ``[B·F, h, w, C]``; Temp-Conv sees it as ``[B, F, h, w, C]`` (§4.4, Fig. 6).
    """
    config: VAEConfig
    index: int

    @nn.compact
    def __call__(self, x: Array, num_frames: int, deterministic: bool) -> Array:
        cfg = self.config
        channels = cfg.block_out_channels[::-1][self.index]
        for j in range(cfg.layers_per_block + 1):
            x = _resnet(cfg, channels, f"resnets_{j}")(x)
            if cfg.use_temporal_decoder:
                clip = x.reshape((-1, num_frames) + x.shape[1:])
                temporal = TemporalConv(cfg.temporal_conv_layers, cfg.temporal_groups, cfg.temporal_norm_eps,
                                        cfg.dropout, cfg.groupnorm_scope, cfg.temporal_padding, name=f"temp_convs_{j}",
                                        **cfg.dtype_kwargs())
                clip = temporal(clip, deterministic)
                x = clip.reshape(x.shape)
        if self.index < len(cfg.block_out_channels) - 1:
            x = Upsample(channels, name="upsamplers_0", **cfg.dtype_kwargs())(x)
        return constrain_video(x)


class Encoder(nn.Module):
    """E: ``conv_in -> down blocks -> mid block -> GroupNorm -> SiLU -> conv_out`` (2·latent channels)."""
    config: VAEConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        kw = cfg.dtype_kwargs()
        h = conv(cfg.block_out_channels[0], (3, 3), name="conv_in", **kw)(x)
        block_cls = remat_block(DownEncoderBlock, cfg.remat_policy, static_argnums=())
        for i in range(len(cfg.block_out_channels)):
            h = block_cls(cfg, i, name=f"down_blocks_{i}")(h)
        h = MidBlock(cfg, name="mid_block")(h)
        h = GroupNorm(cfg.norm_num_groups, cfg.norm_eps, name="conv_norm_out", **kw)(h)
        return conv(2 * cfg.latent_channels, (3, 3), name="conv_out", **kw)(nn.silu(h))


class Decoder(nn.Module):
    """D with Temp-Conv in its up blocks: ``conv_in -> mid block -> up blocks -> GroupNorm -> SiLU -> conv_out``."""
    config: VAEConfig

    @nn.compact
    def __call__(self, z: Array, num_frames: int, deterministic: bool) -> Array:
        cfg = self.config
        kw = cfg.dtype_kwargs()
        h = conv(cfg.block_out_channels[-1], (3, 3), name="conv_in", **kw)(z)
        h = MidBlock(cfg, name="mid_block")(h)
        block_cls = remat_block(UpDecoderBlock, cfg.remat_policy, static_argnums=(2, 3))
        for i in range(len(cfg.block_out_channels)):
            h = block_cls(cfg, i, name=f"up_blocks_{i}")(h, num_frames, deterministic)
        h = GroupNorm(cfg.norm_num_groups, cfg.norm_eps, name="conv_norm_out", **kw)(h)
        return conv(cfg.out_channels, (3, 3), name="conv_out", **kw)(nn.silu(h))


class AutoencoderKL(nn.Module):
    """SD's KL autoencoder (eq. 4) with the temporal-aware decoder of §4.4.

    * ``encode(x[N, H, W, 3]) -> (mean, logvar)`` each ``[N, H/s, W/s, latent]`` float32, logvar clipped to
      [-30, 20] (s = 2^(levels-1), 8 for SD).
    * ``decode(z[N, h, w, latent], num_frames=1, deterministic=True) -> [N, H, W, 3]`` float32, with N = B·F
      (frames inner); the Temp-Conv layers run when ``num_frames > 1``. ``z`` is the unscaled latent
      (``latents / scaling_factor``).
    * ``__call__(x, num_frames=1, sample_posterior=False, rng=None, deterministic=True) -> (recon, mean, logvar)``.
      Initialise through ``__call__`` (``AutoencoderKL(cfg).init(key, x)``) so both halves get parameters.
    """
    config: VAEConfig

    def setup(self):
        cfg = self.config
        kw = cfg.dtype_kwargs()
        self.encoder = Encoder(cfg)
        self.quant_conv = conv(2 * cfg.latent_channels, (1, 1), **kw)
        self.post_quant_conv = conv(cfg.latent_channels, (1, 1), **kw)
        self.decoder = Decoder(cfg)

    def encode(self, x: Array) -> tuple[Array, Array]:
        cfg = self.config
        levels = len(cfg.block_out_channels)
        if x.ndim != 4 or x.shape[-1] != cfg.in_channels:
            raise ValueError(f"encode: x must be [N, H, W, {cfg.in_channels}], got {x.shape}")
        if any(s % 2 ** (levels - 1) for s in x.shape[1:3]):
            raise ValueError(f"encode: x height/width {x.shape[1:3]} must be divisible by {2 ** (levels - 1)}")
        moments = self.quant_conv(self.encoder(x.astype(cfg.compute_dtype))).astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return mean, jnp.clip(logvar, *LOGVAR_RANGE)

    def decode(self, z: Array, num_frames: int = 1, deterministic: bool = True) -> Array:
        cfg = self.config
        if z.ndim != 4 or z.shape[-1] != cfg.latent_channels:
            raise ValueError(f"decode: z must be [N, h, w, {cfg.latent_channels}], got {z.shape}")
        if not isinstance(num_frames, numbers.Integral) or num_frames < 1 or z.shape[0] % num_frames:
            raise ValueError(f"decode: num_frames={num_frames!r} must be a positive int dividing N={z.shape[0]}")
        num_frames = int(num_frames)
        h = self.post_quant_conv(z.astype(cfg.compute_dtype))
        return self.decoder(h, num_frames, deterministic).astype(jnp.float32)

    def __call__(self, x: Array, num_frames: int = 1, sample_posterior: bool = False, rng: Array | None = None,
                 deterministic: bool = True) -> tuple[Array, Array, Array]:
        mean, logvar = self.encode(x)
        z = mean
        if sample_posterior:
            if rng is None:
                raise ValueError("__call__: sample_posterior=True needs rng (a jax.random key)")
            z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape, mean.dtype)
        return self.decode(z, num_frames, deterministic), mean, logvar
