"""VidRD's video UNet (paper §4.1, Fig. 2-3): Stable Diffusion's UNet run per frame plus Temp-Conv and Temp-Attn.

The 2-D layers (ResNets, spatial self-/cross-attention, down/upsamplers) are SD-2.1's, applied with the frames
folded into the batch; a Temp-Conv follows every ResNet and a Temp-Attn sits inside every transformer block. The
network predicts the noise ε_θ(z_t, t, c) of eq. (3). Forward order, names and single-frame behaviour follow the
official release (``tests/reference/``); parameters are named as its PyTorch keys.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrd_jax.models.layers import (
    ATTENTION_IMPLS, DTYPES, GROUPNORM_SCOPES, REMAT_POLICIES, Attention, Downsample, FeedForward, GroupNorm,
    ModelConfigMixin, ResnetBlock, TimestepEmbedding, Upsample, constrain_video, conv, dense, group_norm, layer_norm,
    remat_block, timestep_embedding)
from vidrd_jax.models.temporal_layers import (
    POSITION_EMBEDDINGS, RELEASE_TEMPORAL_NORM_EPS, RELEASE_TEMPORAL_NORM_GROUPS, TemporalConv, temporal_attention)

Array = jax.Array

DOWN_BLOCK_TYPES = ("CrossAttnDownBlock3D", "DownBlock3D")
UP_BLOCK_TYPES = ("CrossAttnUpBlock3D", "UpBlock3D")
TRANSFORMER_NORM_EPS = 1e-6  # Transformer GroupNorm (diffusers hard-codes it)
LAYER_NORM_EPS = 1e-5  # norm1/2/3 and temp_norm
RELEASE_TEMPORAL_NORM = dict(temporal_norm_num_groups=RELEASE_TEMPORAL_NORM_GROUPS,
                             temporal_norm_eps=RELEASE_TEMPORAL_NORM_EPS)


@dataclasses.dataclass(frozen=True)
class UNet3DConfig(ModelConfigMixin):
    """Architecture of :class:`UNet3D`; the defaults are SD-2.1 + VidRD's temporal layers.

    Attributes:
      in_channels / out_channels: latent channels of the input and of the predicted noise.
      block_out_channels: channels of each resolution level.
      layers_per_block: ResNets per down block (up blocks have one more).
      down_block_types / up_block_types: ``CrossAttnDownBlock3D`` | ``DownBlock3D`` and
        ``CrossAttnUpBlock3D`` | ``UpBlock3D`` per level (diffusers' 2D names are accepted by ``from_diffusers``).
      num_attention_heads: heads per down level (up levels use them reversed; mid uses the last). Head size is
        ``channels // heads`` (64 for SD-2.1).
      cross_attention_dim: width of the text embeddings.
      norm_num_groups / norm_eps: GroupNorm of ResNets and ``conv_norm_out``.
      flip_sin_to_cos / freq_shift: sinusoidal timestep features (SD: True / 0).
      use_temporal: add Temp-Conv and Temp-Attn (False gives SD's 2D UNet, applied per frame when
        ``groupnorm_scope="frame"``).
      temporal_zero_init: zero-initialise the last layer of every Temp-Conv and Temp-Attn (§4.1: a fresh video
        UNet is the image UNet). False initialises them like every other layer: a live temporal path from the
        first step, for models trained from scratch (no image model to preserve).
      temporal_conv_layers: GroupNorm-SiLU-Dropout-Conv sub-layers per Temp-Conv (official: 4).
      temporal_norm_num_groups / temporal_norm_eps: the Temp-Conv GroupNorms. The release hard-codes 32 / 1e-5
        whatever ``norm_num_groups`` is; ``sd21`` and ``from_diffusers`` (release-layout models) set those values.
        None (the dataclass default, and what a stored config written before these fields existed reads as)
        follows ``norm_num_groups`` / ``norm_eps``, as those models were built.
      temporal_position_embedding: ``residual`` (official) | ``attention`` | ``none``; see
        :func:`vidrd_jax.models.temporal_layers.temporal_attention`.
      groupnorm_scope: ``clip`` (official release: ResNet, Temp-Conv and conv_norm_out statistics pooled over the
        frames and space) | ``frame`` (per frame, as the paper's text). Transformer GroupNorms are always per frame.
      dropout: dropout rate inside Temp-Conv (the official model's only dropout).
      attention_impl: ``auto`` (per backend: ``chunked`` on CPU, ``dot_product`` elsewhere) | ``chunked`` |
        ``plain`` (one einsum softmax) | ``dot_product`` (``jax.nn.dot_product_attention``, cuDNN on GPU); see
        :func:`vidrd_jax.models.layers.dot_product_attention`.
      dtype / param_dtype: compute and parameter dtypes, ``float32`` | ``bfloat16``.
      remat_policy: rematerialisation of each down/mid/up block: ``none`` | ``full`` | ``dots_saveable`` |
        ``dots_with_no_batch_dims_saveable``.
    """
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",)
    up_block_types: tuple[str, ...] = ("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3
    num_attention_heads: tuple[int, ...] = (5, 10, 20, 20)
    cross_attention_dim: int = 1024
    norm_num_groups: int = 32
    norm_eps: float = 1e-5
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    use_temporal: bool = True
    temporal_zero_init: bool = True
    temporal_conv_layers: int = 4
    temporal_norm_num_groups: int | None = None
    temporal_norm_eps: float | None = None
    temporal_position_embedding: str = "residual"
    groupnorm_scope: str = "clip"
    dropout: float = 0.1
    attention_impl: str = "auto"
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "none"

    def __post_init__(self):
        for name in ("block_out_channels", "down_block_types", "up_block_types", "num_attention_heads"):
            value = getattr(self, name)
            if isinstance(value, list):  # keep the config hashable (it is a flax module attribute)
                object.__setattr__(self, name, tuple(value))
        self._validate()

    def _validate(self) -> None:
        def fail(field: str, message: str):
            raise ValueError(f"UNet3DConfig.{field}: {message}")

        for name in ("in_channels", "out_channels", "layers_per_block", "cross_attention_dim", "norm_num_groups",
                     "temporal_conv_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                fail(name, f"must be a positive int, got {value!r}")
        for name in ("use_temporal", "temporal_zero_init"):
            if not isinstance(getattr(self, name), bool):
                fail(name, f"must be a bool, got {getattr(self, name)!r}")
        levels = len(self.block_out_channels)
        if levels == 0:
            fail("block_out_channels", "must name at least one level")
        for name in ("down_block_types", "up_block_types", "num_attention_heads"):
            if len(getattr(self, name)) != levels:
                fail(name, f"needs one entry per level ({levels}), got {getattr(self, name)!r}")
        for i, (channels, heads) in enumerate(zip(self.block_out_channels, self.num_attention_heads)):
            if not isinstance(channels, int) or channels <= 0 or channels % self.norm_num_groups:
                fail("block_out_channels", f"entry {i} ({channels!r}) must be a positive multiple of "
                     f"norm_num_groups={self.norm_num_groups}")
            if not isinstance(heads, int) or heads <= 0 or channels % heads:
                fail("num_attention_heads", f"entry {i} ({heads!r}) must be a positive divisor of {channels}")
            if self.use_temporal and self.temporal_position_embedding != "none" and channels % 2:
                fail("block_out_channels", f"entry {i} ({channels}) must be even for the sinusoidal frame "
                     "position embedding")
        for t in self.down_block_types:
            if t not in DOWN_BLOCK_TYPES:
                fail("down_block_types", f"unknown block {t!r}; expected one of {DOWN_BLOCK_TYPES}")
        for t in self.up_block_types:
            if t not in UP_BLOCK_TYPES:
                fail("up_block_types", f"unknown block {t!r}; expected one of {UP_BLOCK_TYPES}")
        if not self.norm_eps > 0:
            fail("norm_eps", f"must be > 0, got {self.norm_eps!r}")
        groups = self.temporal_norm_num_groups
        if groups is not None and (not isinstance(groups, int) or isinstance(groups, bool) or groups <= 0):
            fail("temporal_norm_num_groups", f"must be a positive int or None, got {groups!r}")
        if self.temporal_norm_eps is not None and not self.temporal_norm_eps > 0:
            fail("temporal_norm_eps", f"must be > 0 or None, got {self.temporal_norm_eps!r}")
        if self.use_temporal:
            groups = self.temporal_norm[0]
            for i, channels in enumerate(self.block_out_channels):
                if channels % groups:
                    fail("temporal_norm_num_groups", f"{groups} groups do not divide block_out_channels entry {i} "
                         f"({channels})")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", f"must be in [0, 1), got {self.dropout!r}")
        if self.freq_shift not in (0, 1):
            fail("freq_shift", f"must be 0 or 1, got {self.freq_shift!r}")
        choices = {"temporal_position_embedding": POSITION_EMBEDDINGS, "groupnorm_scope": GROUPNORM_SCOPES,
                   "attention_impl": ATTENTION_IMPLS, "dtype": tuple(DTYPES), "param_dtype": tuple(DTYPES),
                   "remat_policy": REMAT_POLICIES}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                fail(name, f"must be one of {allowed}, got {getattr(self, name)!r}")

    @property
    def temporal_norm(self) -> tuple[int, float]:
        """``(groups, eps)`` of the Temp-Conv GroupNorms (``norm_num_groups`` / ``norm_eps`` where unset)."""
        groups, eps = self.temporal_norm_num_groups, self.temporal_norm_eps
        return (self.norm_num_groups if groups is None else groups), (self.norm_eps if eps is None else eps)

    # --- constructors -------------------------------------------------------------------------------------------
    @classmethod
    def sd21(cls, **overrides: Any) -> "UNet3DConfig":
        """SD-2.1 (base and 768) UNet with VidRD's temporal layers as released (1.18 B parameters)."""
        return cls(**{**RELEASE_TEMPORAL_NORM, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> "UNet3DConfig":
        """A two-level toy model for tests (32/64 channels, one layer per block, 2 heads, 8 groups)."""
        kwargs = dict(block_out_channels=(32, 64), layers_per_block=1,
                      down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                      up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"), num_attention_heads=(2, 2),
                      cross_attention_dim=32, norm_num_groups=8)
        kwargs.update(overrides)
        return cls(**kwargs)


    @classmethod
    def from_diffusers(cls, config_json: Mapping[str, Any], **overrides: Any) -> "UNet3DConfig":
        """Builds the config from a diffusers ``UNet2DConditionModel`` ``config.json`` dict (e.g. SD-2.1's).

        SD-2.x store the head *count* in ``attention_head_dim`` (diffusers: ``num_attention_heads or
        attention_head_dim``); that rule is applied here. Both ``use_linear_projection`` settings are accepted (a
        1x1-conv projection converts to the same Dense). The temporal layers are the release's (its
        ``from_pretrained_2d``), so their GroupNorms get 32 groups / eps 1e-5 whatever the 2-D config says.
        Features this model does not implement raise an error naming the field. ``overrides`` set any
        :class:`UNet3DConfig` field (e.g. ``use_temporal=False``).
        """
        cfg = dict(config_json)
        unsupported = {
            "act_fn": "silu", "center_input_sample": False, "class_embed_type": None, "addition_embed_type": None,
            "num_class_embeds": None, "encoder_hid_dim": None, "time_cond_proj_dim": None,
            "time_embedding_type": "positional", "time_embedding_dim": None, "time_embedding_act_fn": None,
            "timestep_post_act": None, "resnet_time_scale_shift": "default", "resnet_skip_time_act": False,
            "resnet_out_scale_factor": 1.0, "mid_block_type": "UNetMidBlock2DCrossAttn", "downsample_padding": 1,
            "mid_block_scale_factor": 1, "dropout": 0.0, "conv_in_kernel": 3, "conv_out_kernel": 3,
            "dual_cross_attention": False, "attention_type": "default", "cross_attention_norm": None,
            "class_embeddings_concat": False, "reverse_transformer_layers_per_block": None,
        }
        for key, expected in unsupported.items():
            if key in cfg and cfg[key] != expected:
                raise ValueError(f"from_diffusers: unsupported {key}={cfg[key]!r} (this model implements {expected!r})")
        for key in ("only_cross_attention", "transformer_layers_per_block", "layers_per_block",
                    "cross_attention_dim"):
            value = cfg.get(key)
            if isinstance(value, (list, tuple)):
                if len(set(value)) != 1:
                    raise ValueError(f"from_diffusers: per-block {key}={value!r} is not supported")
                cfg[key] = value[0]
        if cfg.get("only_cross_attention", False):
            raise ValueError("from_diffusers: unsupported only_cross_attention=True")
        if cfg.get("transformer_layers_per_block", 1) != 1:
            raise ValueError(f"from_diffusers: unsupported transformer_layers_per_block="
                             f"{cfg['transformer_layers_per_block']!r} (this model implements 1)")
        channels = tuple(cfg.get("block_out_channels", cls.block_out_channels))
        heads = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
        heads = tuple(heads) if isinstance(heads, (list, tuple)) else (heads,) * len(channels)
        kwargs = dict(block_out_channels=channels, num_attention_heads=heads, **RELEASE_TEMPORAL_NORM)
        for key in ("in_channels", "out_channels", "layers_per_block", "cross_attention_dim", "norm_num_groups",
                    "norm_eps", "flip_sin_to_cos", "freq_shift"):
            if key in cfg:
                kwargs[key] = cfg[key]
        for key in ("down_block_types", "up_block_types"):
            if key in cfg:
                kwargs[key] = tuple(t.replace("2D", "3D") for t in cfg[key])
        kwargs.update(overrides)
        return cls(**kwargs)




class BasicTransformerBlock(nn.Module):
    """SD's transformer block with VidRD's Temp-Attn between cross-attention and the feed-forward.

    ``h = attn1(norm1(h)) + h`` (spatial self-attention per frame), ``h = attn2(norm2(h), text) + h``, then
    Temp-Attn (``temp_norm``/``temp_attn``, see :func:`temporal_attention`), then ``h = ff(norm3(h)) + h``.
    ``h``: ``[B, F, L, C]``; ``context``: ``[B, S, D]``, shared by all frames of a clip.
    """
    heads: int
    use_temporal: bool = True
    temporal_position_embedding: str = "residual"
    attention_impl: str = "auto"
    temporal_zero_init: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h: Array, context: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def attn(name: str, zero_out: bool = False) -> Attention:
            return Attention(self.heads, zero_out=zero_out, impl=self.attention_impl, name=name, **kw)

        h = attn("attn1")(layer_norm(LAYER_NORM_EPS, name="norm1", **kw)(h)) + h
        h = attn("attn2")(layer_norm(LAYER_NORM_EPS, name="norm2", **kw)(h), context[:, None]) + h
        if self.use_temporal:
            h = temporal_attention(h, layer_norm(LAYER_NORM_EPS, name="temp_norm", **kw),
                                   attn("temp_attn", zero_out=self.temporal_zero_init),
                                   self.temporal_position_embedding,
                                   initializing=self.is_initializing())
        return FeedForward(name="ff", **kw)(layer_norm(LAYER_NORM_EPS, name="norm3", **kw)(h)) + h


class Transformer3D(nn.Module):
    """Transformer3DModel: per-frame GroupNorm -> ``proj_in`` -> 1 block -> ``proj_out`` -> + input."""
    config: UNet3DConfig
    heads: int

    @nn.compact
    def __call__(self, x: Array, context: Array) -> Array:
        cfg = self.config
        b, f, hh, ww, c = x.shape
        norm = GroupNorm(cfg.norm_num_groups, TRANSFORMER_NORM_EPS, name="norm", **cfg.dtype_kwargs())
        h = group_norm(norm, x, "frame")
        h = dense(c, ("embed", "mlp"), name="proj_in", **cfg.dtype_kwargs())(h.reshape(b, f, hh * ww, c))
        h = BasicTransformerBlock(self.heads, cfg.use_temporal, cfg.temporal_position_embedding,
                                  cfg.attention_impl, cfg.temporal_zero_init, name="transformer_blocks_0",
                                  **cfg.dtype_kwargs())(h, context)
        h = dense(c, ("mlp", "embed"), name="proj_out", **cfg.dtype_kwargs())(h)
        return h.reshape(x.shape) + x


def _resnet_temporal(cfg: UNet3DConfig, j: int, channels: int, h: Array, temb: Array, deterministic: bool) -> Array:
    """``resnets_j`` then, with temporal layers, ``temp_convs_j`` (§4.1: Temp-Conv right after each ResNet).

    Called inside a block's compact ``__call__``, so both modules become children of that block.
    """
    h = ResnetBlock(channels, cfg.norm_num_groups, cfg.norm_eps, cfg.groupnorm_scope, name=f"resnets_{j}",
                    **cfg.dtype_kwargs())(h, temb)
    if cfg.use_temporal:
        groups, eps = cfg.temporal_norm
        h = TemporalConv(cfg.temporal_conv_layers, groups, eps, cfg.dropout, cfg.groupnorm_scope,
                         zero_init=cfg.temporal_zero_init, name=f"temp_convs_{j}",
                         **cfg.dtype_kwargs())(h, deterministic)
    return h


class DownBlock3D(nn.Module):
    """One resolution level of the encoder path; returns the output and the skip tensors it produced."""
    config: UNet3DConfig
    index: int

    @nn.compact
    def __call__(self, h: Array, temb: Array, context: Array, deterministic: bool) -> tuple[Array, tuple]:
        cfg, i = self.config, self.index
        channels = cfg.block_out_channels[i]
        skips = []
        for j in range(cfg.layers_per_block):
            h = _resnet_temporal(cfg, j, channels, h, temb, deterministic)
            if cfg.down_block_types[i] == "CrossAttnDownBlock3D":
                h = Transformer3D(cfg, cfg.num_attention_heads[i], name=f"attentions_{j}")(h, context)
            skips.append(h)
        if i < len(cfg.block_out_channels) - 1:
            h = Downsample(channels, name="downsamplers_0", **cfg.dtype_kwargs())(h)
            skips.append(h)
        return constrain_video(h), tuple(skips)


class MidBlock3D(nn.Module):
    """``resnets_0 -> temp_convs_0 -> attentions_0 -> resnets_1 -> temp_convs_1``."""
    config: UNet3DConfig

    @nn.compact
    def __call__(self, h: Array, temb: Array, context: Array, deterministic: bool) -> Array:
        cfg = self.config
        channels = cfg.block_out_channels[-1]
        h = _resnet_temporal(cfg, 0, channels, h, temb, deterministic)
        h = Transformer3D(cfg, cfg.num_attention_heads[-1], name="attentions_0")(h, context)
        h = _resnet_temporal(cfg, 1, channels, h, temb, deterministic)
        return constrain_video(h)


class UpBlock3D(nn.Module):
    """One resolution level of the decoder path: ``layers_per_block + 1`` x [concat skip -> ResNet -> Temp-Conv
    (-> Transformer)], then nearest-x2 upsampling (all levels but the last)."""
    config: UNet3DConfig
    index: int

    @nn.compact
    def __call__(self, h: Array, skips: tuple, temb: Array, context: Array, deterministic: bool) -> Array:
        cfg, i = self.config, self.index
        channels = cfg.block_out_channels[::-1][i]
        heads = cfg.num_attention_heads[::-1][i]
        for j in range(cfg.layers_per_block + 1):
            h = jnp.concatenate([h, skips[-1 - j]], axis=-1)
            h = _resnet_temporal(cfg, j, channels, h, temb, deterministic)
            if cfg.up_block_types[i] == "CrossAttnUpBlock3D":
                h = Transformer3D(cfg, heads, name=f"attentions_{j}")(h, context)
        if i < len(cfg.block_out_channels) - 1:
            h = Upsample(channels, name="upsamplers_0", **cfg.dtype_kwargs())(h)
        return constrain_video(h)


class UNet3D(nn.Module):
    """ε_θ(z_t, t, c) for video latents (eq. 3).

    ``apply({"params": p}, sample[B, F, h, w, Cin], timesteps[B] (int or float; a scalar is broadcast),
    encoder_hidden_states[B, L, D], deterministic=True, rngs={"dropout": key}) -> [B, F, h, w, Cout]`` (float32).
    ``h`` and ``w`` must be divisible by ``2 ** (levels - 1)``; dropout (Temp-Conv) runs when
    ``deterministic=False``. Initialise with ``UNet3D(cfg).init(key, sample, t, text)``.
    """
    config: UNet3DConfig

    @nn.compact
    def __call__(self, sample: Array, timesteps: Array, encoder_hidden_states: Array,
                 deterministic: bool = True) -> Array:
        cfg = self.config
        levels = len(cfg.block_out_channels)
        if sample.ndim != 5 or sample.shape[-1] != cfg.in_channels:
            raise ValueError(f"sample must be [B, F, h, w, {cfg.in_channels}], got {sample.shape}")
        batch = sample.shape[0]
        if any(s % 2 ** (levels - 1) for s in sample.shape[2:4]):
            raise ValueError(f"sample height/width {sample.shape[2:4]} must be divisible by {2 ** (levels - 1)}")
        if (encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch
                or encoder_hidden_states.shape[-1] != cfg.cross_attention_dim):
            raise ValueError(f"encoder_hidden_states must be [{batch}, L, {cfg.cross_attention_dim}], "
                             f"got {encoder_hidden_states.shape}")
        timesteps = jnp.asarray(timesteps)
        if timesteps.ndim == 0:
            timesteps = jnp.broadcast_to(timesteps, (batch,))
        if timesteps.shape != (batch,):
            raise ValueError(f"timesteps must be a scalar or [{batch}], got {timesteps.shape}")

        kw = cfg.dtype_kwargs()
        dtype = cfg.compute_dtype
        t_features = timestep_embedding(timesteps, cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)
        temb = TimestepEmbedding(4 * cfg.block_out_channels[0], name="time_embedding", **kw)(t_features.astype(dtype))
        context = nn.with_logical_constraint(encoder_hidden_states.astype(dtype), ("batch", "length", "embed"))

        h = constrain_video(conv(cfg.block_out_channels[0], (3, 3), name="conv_in", **kw)(sample.astype(dtype)))
        skips = [h]
        down_cls = remat_block(DownBlock3D, cfg.remat_policy, static_argnums=(4,))
        for i in range(levels):
            h, block_skips = down_cls(cfg, i, name=f"down_blocks_{i}")(h, temb, context, deterministic)
            skips.extend(block_skips)
        h = remat_block(MidBlock3D, cfg.remat_policy, static_argnums=(4,))(cfg, name="mid_block")(
            h, temb, context, deterministic)
        up_cls = remat_block(UpBlock3D, cfg.remat_policy, static_argnums=(5,))
        for i in range(levels):
            n = cfg.layers_per_block + 1
            block_skips, skips = tuple(skips[-n:]), skips[:-n]
            h = up_cls(cfg, i, name=f"up_blocks_{i}")(h, block_skips, temb, context, deterministic)
        h = group_norm(GroupNorm(cfg.norm_num_groups, cfg.norm_eps, name="conv_norm_out", **kw), h,
                       cfg.groupnorm_scope)
        out = conv(cfg.out_channels, (3, 3), name="conv_out", **kw)(nn.silu(h))
        return out.astype(jnp.float32)
