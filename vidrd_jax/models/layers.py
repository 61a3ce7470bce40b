"""Spatial building blocks shared by the video UNet (paper §4.1, Fig. 3) and the autoencoder (§4.4, Fig. 6).

Everything is channels-last. Video activations are ``[B, F, H, W, C]``; per-frame layers (the "3D-ResNet" of
Fig. 3, i.e. Stable Diffusion's 2D layers with frames folded into the batch) accept any number of leading batch
axes. Module and parameter names follow diffusers so that checkpoints convert by renaming
(``vidrd_jax.convert.naming``). Kernels carry logical axis names (``nn.with_logical_partitioning``).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any
Array = jax.Array

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
GROUPNORM_SCOPES = ("clip", "frame")
ATTENTION_IMPLS = ("auto", "chunked", "plain", "dot_product")
REMAT_POLICIES = ("none", "full", "dots_saveable", "dots_with_no_batch_dims_saveable")

VIDEO_AXES = ("batch", "frames", "height", "width", "embed")


def resolve_dtype(name: str, field: str = "dtype") -> Dtype:
    """``"float32"`` / ``"bfloat16"`` -> jnp dtype; a clear error naming ``field`` otherwise."""
    if name not in DTYPES:
        raise ValueError(f"{field} must be one of {sorted(DTYPES)}, got {name!r}")
    return DTYPES[name]


class ModelConfigMixin:
    """JSON round trip and dtype resolution shared by the frozen model-config dataclasses."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]):
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__}.from_dict: unknown field(s) {unknown}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})

    @property
    def compute_dtype(self) -> Dtype:
        return resolve_dtype(self.dtype, "dtype")

    @property
    def params_dtype(self) -> Dtype:
        return resolve_dtype(self.param_dtype, "param_dtype")

    def dtype_kwargs(self) -> dict[str, Dtype]:
        """``dtype=…, param_dtype=…`` for a Flax module."""
        return dict(dtype=self.compute_dtype, param_dtype=self.params_dtype)


def torch_default_init() -> Callable[..., Array]:
    """PyTorch's default Linear/Conv kernel init (kaiming-uniform, a=sqrt(5)): U(±1/sqrt(fan_in))."""
    return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def dense(features: int, names: tuple[str, str], *, use_bias: bool = True, zero_init: bool = False,
          dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Dense:
    """``nn.Dense`` with logical axis names ``names`` (in, out) on the kernel and ``names[1]`` on the bias."""
    kernel_init = nn.initializers.zeros_init() if zero_init else torch_default_init()
    return nn.Dense(
        features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype, name=name,
        kernel_init=nn.with_logical_partitioning(kernel_init, names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (names[1],)))


def conv(features: int, kernel_size: Sequence[int], *, strides: int | Sequence[int] = 1,
         padding: Any = "SAME", zero_init: bool = False, dtype: Dtype = jnp.float32,
         param_dtype: Dtype = jnp.float32, name: str | None = None) -> nn.Conv:
    """``nn.Conv`` (2-D ``(kh, kw)`` or temporal ``(kt, 1, 1)``) with logical axis names on kernel and bias.

    Leading input axes beyond the spatial ones are batch axes, so a 2-D conv on ``[B, F, H, W, C]`` runs per frame.
    """
    spatial = {2: ("conv_h", "conv_w"), 3: ("conv_t", "conv_h", "conv_w")}[len(kernel_size)]
    kernel_init = nn.initializers.zeros_init() if zero_init else torch_default_init()
    return nn.Conv(
        features, tuple(kernel_size), strides=strides, padding=padding, dtype=dtype, param_dtype=param_dtype,
        name=name, kernel_init=nn.with_logical_partitioning(kernel_init, spatial + ("conv_in", "conv_out")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)))


def layer_norm(epsilon: float = 1e-5, *, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               name: str | None = None) -> nn.LayerNorm:
    """Affine LayerNorm over channels (float32 statistics, two-pass variance as PyTorch)."""
    return nn.LayerNorm(
        epsilon=epsilon, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False, name=name,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)))


class GroupNorm(nn.Module):
    """GroupNorm with PyTorch semantics: statistics over every axis but the first, per channel group.

    Call it on ``[N, H, W, C]`` for per-image statistics or on ``[B, F, H, W, C]`` to pool them over the frames of
    a clip (see :func:`group_norm`). Statistics are float32; the output is cast to ``dtype``.
    """
    num_groups: int
    epsilon: float
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        channels = x.shape[-1]
        if channels % self.num_groups:
            raise ValueError(f"GroupNorm: {channels} channels are not divisible into {self.num_groups} groups")
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
                           (channels,), self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)),
                          (channels,), self.param_dtype)
        n, per_group = x.shape[0], channels // self.num_groups

        def group_mean(t: Array) -> Array:  # [N, L, C] -> its group's mean at every channel, [N, 1, C]
            means = t.mean(axis=1).reshape(n, self.num_groups, per_group).mean(axis=-1)
            return jnp.repeat(means, per_group, axis=-1)[:, None, :]

        # Two-pass statistics (as PyTorch) reduced per channel first, so the data keeps its channel-minor layout
        # (no [N, L, G, C/G] relayout, which XLA CPU runs ~4x slower); scale folded into the inverse deviation.
        flat = x.astype(jnp.float32).reshape(n, -1, channels)
        centred = flat - group_mean(flat)
        inv = jax.lax.rsqrt(group_mean(jnp.square(centred)) + self.epsilon) * scale.astype(jnp.float32)
        return (centred * inv + bias.astype(jnp.float32)).reshape(x.shape).astype(self.dtype)


def group_norm(norm: GroupNorm, x: Array, scope: str) -> Array:
    """Applies ``norm`` to ``x`` ``[B, F, H, W, C]`` pooling statistics over the clip or per frame.

    ``scope="clip"`` pools over frames and space (the official VidRD release runs its ResNet/Temp-Conv GroupNorms on
    the 5-D tensor); ``scope="frame"`` normalises each frame alone (the paper's "3D-ResNet = 2D-ResNet per frame").
    4-D inputs are single images and behave identically under both scopes.
    """
    if scope not in GROUPNORM_SCOPES:
        raise ValueError(f"groupnorm_scope must be one of {GROUPNORM_SCOPES}, got {scope!r}")
    if scope == "frame" and x.ndim > 4:
        return norm(x.reshape((-1,) + x.shape[-3:])).reshape(x.shape)
    return norm(x)


def timestep_embedding(timesteps: Array, dim: int, flip_sin_to_cos: bool = True, freq_shift: float = 0.0,
                       max_period: float = 10000.0) -> Array:
    """Sinusoidal timestep features as diffusers ``get_timestep_embedding`` (float32, ``[N, dim]``)."""
    half = dim // 2
    exponent = -jnp.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
    angles = jnp.asarray(timesteps, jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
    emb = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half:], emb[:, :half]], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimestepEmbedding(nn.Module):
    """``linear_1 -> SiLU -> linear_2`` on the sinusoidal timestep features (SD's ``time_embedding``)."""
    features: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, features: Array) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = dense(self.features, ("embed", "mlp"), name="linear_1", **kw)(features)
        return dense(self.features, ("mlp", "embed"), name="linear_2", **kw)(nn.silu(h))


# Score elements one step of ``chunked`` attention computes (2 MiB in float32): large enough for full-width
# matmuls, small enough to stay in a CPU core's L2 (one 1024-token self-attention map per step). Measured in
# benchmarks/torch_compare.py.
ATTENTION_BLOCK_ELEMENTS = 1 << 19
# cuDNN flash attention needs half-precision inputs, head sizes of multiples of 8 up to 128; for sequences shorter
# than this (the 8-frame Temp-Attn) XLA's fused attention is as fast and always supported.
CUDNN_MIN_LENGTH = 64


def resolve_attention_impl(impl: str, backend: str | None = None) -> str:
    """``"auto"`` -> the fastest implementation measured for ``backend`` (default: JAX's default backend).

    CPU: ``chunked``; GPU and TPU: ``dot_product`` (``jax.nn.dot_product_attention``, cuDNN flash attention on
    GPU where the shapes and dtype allow it). Other names are returned unchanged after validation.
    """
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {impl!r}")
    if impl != "auto":
        return impl
    return "chunked" if (backend or jax.default_backend()) == "cpu" else "dot_product"


def _broadcast_qkv(q: Array, k: Array, v: Array, mask: Array | None):
    """Broadcasts the leading (batch) axes of q, k, v (and the mask's) against each other."""
    lead = jnp.broadcast_shapes(q.shape[:-3], k.shape[:-3], v.shape[:-3],
                                () if mask is None else mask.shape[:-3])
    q, k, v = (jnp.broadcast_to(t, lead + t.shape[-3:]) for t in (q, k, v))
    if mask is not None:
        mask = jnp.broadcast_to(mask, lead + mask.shape[-3:])
    return q, k, v, mask


def _chunked_attention(q: Array, k: Array, v: Array, mask: Array | None, block: int) -> Array:
    """Softmax attention in steps of at most ``block`` score elements (``lax.map``), head-major ``[G, L, D]``.

    Short sequences (the 8-frame Temp-Attn, 77-token cross-attention) run many (batch, head) items per step;
    long ones one item per step, with the queries split into chunks when one item's ``Lq x Lk`` scores exceed
    ``block``. Keys are never split (each chunk holds full softmax rows), so no online rescaling is needed.
    The softmax is normalised after the ``·V`` matmul (``L·D`` divisions instead of ``L·L``).
    """
    q, k, v, mask = _broadcast_qkv(q, k, v, mask)
    lead, (lq, heads, dim), lk = q.shape[:-3], q.shape[-3:], k.shape[-3]

    def head_major(t: Array) -> Array:  # [..., L, H, D] -> [G, L, D]
        return jnp.swapaxes(t.reshape((-1,) + t.shape[-3:]), 1, 2).reshape((-1,) + t.shape[-3:-2] + t.shape[-1:])

    qh, kh, vh = head_major(q), head_major(k), head_major(v)
    mh = None if mask is None else jnp.broadcast_to(mask, lead + (heads, lq, lk)).reshape(-1, lq, lk)
    groups = qh.shape[0]
    scale = dim ** -0.5

    def attend(qb: Array, kb: Array, vb: Array, mb: Array | None) -> Array:  # [g, c, D] x [g, Lk, D] -> [g, c, D]
        logits = jnp.einsum("gqd,gkd->gqk", qb, kb, preferred_element_type=jnp.float32) * scale
        if mb is not None:
            logits = jnp.where(mb, logits, jnp.finfo(jnp.float32).min)
        probs = jnp.exp(logits - logits.max(axis=-1, keepdims=True))
        out = jnp.einsum("gqk,gkd->gqd", probs.astype(vb.dtype), vb, preferred_element_type=jnp.float32)
        return (out / probs.sum(axis=-1, keepdims=True)).astype(qb.dtype)

    per_step = block // (lq * lk)
    if per_step >= groups:  # everything in one step
        out = attend(qh, kh, vh, mh)
    elif per_step >= 1:  # several (batch, head) items per step; pad the item count to a multiple
        steps = -(-groups // per_step)
        pad = steps * per_step - groups

        def split(t: Array) -> Array:
            t = jnp.pad(t, ((0, pad),) + ((0, 0),) * (t.ndim - 1))
            return t.reshape((steps, per_step) + t.shape[1:])

        xs = (split(qh), split(kh), split(vh)) + (() if mh is None else (split(mh),))
        out = jax.lax.map(lambda a: attend(a[0], a[1], a[2], a[3] if mh is not None else None), xs)
        out = out.reshape((-1,) + out.shape[2:])[:groups]
    else:  # one item per step, its queries in chunks of full softmax rows
        chunk = max(1, block // lk)
        steps = -(-lq // chunk)
        pad = steps * chunk - lq

        def split(t: Array) -> Array:  # [G, Lq, X] -> [G, steps, chunk, X]
            t = jnp.pad(t, ((0, 0), (0, pad), (0, 0)))
            return t.reshape((groups, steps, chunk) + t.shape[2:])

        def one_item(a: tuple[Array, ...]) -> Array:  # [steps, chunk, D] queries against one item's keys
            ki, vi = a[1][None], a[2][None]
            return jax.lax.map(lambda c: attend(c[0][None], ki, vi, c[1][None] if mh is not None else None)[0],
                               (a[0],) + a[3:])

        xs = (split(qh), kh, vh) + (() if mh is None else (split(mh),))
        out = jax.lax.map(one_item, xs).reshape(groups, steps * chunk, dim)[:, :lq]
    out = jnp.swapaxes(out.reshape((-1, heads, lq, dim)), 1, 2)
    return out.reshape(lead + (lq, heads, dim))


def dot_product_attention(q: Array, k: Array, v: Array, impl: str = "auto", mask: Array | None = None,
                          block: int = ATTENTION_BLOCK_ELEMENTS) -> Array:
    """Multi-head softmax attention, scale ``head_dim**-0.5``, float32 logits and softmax.

    Args:
      q: ``[..., Lq, heads, head_dim]``; k, v: ``[..., Lk, heads, head_dim]`` whose leading axes broadcast against
        q's (e.g. one text context shared by all frames of a clip).
      impl: ``"plain"`` (one einsum over all scores), ``"chunked"`` (:func:`_chunked_attention`, the fastest on
        CPU), ``"dot_product"`` (``jax.nn.dot_product_attention``: cuDNN flash attention on GPU for half-precision
        inputs with ``head_dim % 8 == 0``, ``<= 128`` and ``Lk >= CUDNN_MIN_LENGTH``, XLA's otherwise) or
        ``"auto"`` (:func:`resolve_attention_impl`).
      mask: optional boolean ``[..., heads or 1, Lq, Lk]`` (True = attend), broadcasting like q.
      block: score elements per step of ``chunked``.
    """
    impl = resolve_attention_impl(impl)
    if impl == "plain":
        logits = jnp.einsum("...qhd,...khd->...hqk", q, k, preferred_element_type=jnp.float32) * q.shape[-1] ** -0.5
        if mask is not None:
            logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        return jnp.einsum("...hqk,...khd->...qhd", probs.astype(v.dtype), v)
    if impl == "chunked":
        return _chunked_attention(q, k, v, mask, block)
    q, k, v, mask = _broadcast_qkv(q, k, v, mask)
    flat = [t.reshape((-1,) + t.shape[-3:]) for t in (q, k, v)]
    flat_mask = None if mask is None else mask.reshape((-1,) + mask.shape[-3:])
    head_dim, lk = q.shape[-1], k.shape[-3]
    cudnn = (jax.default_backend() == "gpu" and q.dtype in (jnp.float16, jnp.bfloat16) and head_dim % 8 == 0
             and head_dim <= 128 and lk >= CUDNN_MIN_LENGTH)
    out = jax.nn.dot_product_attention(*flat, mask=flat_mask, implementation="cudnn" if cudnn else None)
    return out.reshape(q.shape)


class Attention(nn.Module):
    """diffusers ``Attention``: ``to_q/to_k/to_v`` (bias optional) -> softmax attention -> ``to_out_0`` (bias).

    ``x`` is ``[..., L, C]``; ``context`` (cross-attention) is ``[..., S, D]`` with leading axes broadcasting
    against x's. ``zero_out`` zero-initialises ``to_out_0`` (Temp-Attn, §4.1: "last layer zeroed").
    """
    heads: int
    qkv_bias: bool = False
    zero_out: bool = False
    impl: str = "auto"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, context: Array | None = None) -> Array:
        channels = x.shape[-1]
        if channels % self.heads:
            raise ValueError(f"Attention: {channels} channels are not divisible by heads={self.heads}")
        context = x if context is None else context
        kw = dict(use_bias=self.qkv_bias, dtype=self.dtype, param_dtype=self.param_dtype)

        def project(name: str, t: Array) -> Array:  # -> [..., L, heads, head_dim]
            t = dense(channels, ("embed", "heads"), name=name, **kw)(t)
            return t.reshape(t.shape[:-1] + (self.heads, channels // self.heads))

        out = dot_product_attention(project("to_q", x), project("to_k", context), project("to_v", context), self.impl)
        out = out.reshape(out.shape[:-2] + (channels,))
        return dense(channels, ("heads", "embed"), zero_init=self.zero_out, dtype=self.dtype,
                     param_dtype=self.param_dtype, name="to_out_0")(out)


class GEGLU(nn.Module):
    """``proj`` to 2·inner, split into [hidden, gate] -> ``hidden * gelu(gate)`` (exact erf GELU)."""
    inner: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        h = dense(2 * self.inner, ("embed", "mlp"), dtype=self.dtype, param_dtype=self.param_dtype, name="proj")(x)
        hidden, gate = jnp.split(h, 2, axis=-1)
        return hidden * nn.gelu(gate, approximate=False)


class FeedForward(nn.Module):
    """SD's transformer feed-forward: ``net_0`` (GEGLU, 4x) -> ``net_2`` (Linear back to C)."""
    mult: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        channels = x.shape[-1]
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = GEGLU(self.mult * channels, name="net_0", **kw)(x)
        return dense(channels, ("mlp", "embed"), name="net_2", **kw)(h)


class ResnetBlock(nn.Module):
    """ResnetBlock2D applied per frame (Fig. 3's 3D-ResNet), with GroupNorm statistics per ``groupnorm_scope``.

    ``norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb))) -> norm2 -> SiLU -> conv2``, plus the input (through a
    1x1 ``conv_shortcut`` when the channel count changes). ``x``: ``[B, F, H, W, C]`` or ``[N, H, W, C]``;
    ``temb``: ``[B, T]`` (broadcast over frames and space) or None (autoencoder).
    """
    out_channels: int
    num_groups: int
    epsilon: float
    groupnorm_scope: str = "frame"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, temb: Array | None = None) -> Array:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def norm(name: str, t: Array) -> Array:
            return group_norm(GroupNorm(self.num_groups, self.epsilon, name=name, **kw), t, self.groupnorm_scope)

        h = conv(self.out_channels, (3, 3), name="conv1", **kw)(nn.silu(norm("norm1", x)))
        if temb is not None:
            t = dense(self.out_channels, ("mlp", "embed"), name="time_emb_proj", **kw)(nn.silu(temb))
            h = h + t.reshape(t.shape[:1] + (1,) * (h.ndim - 2) + t.shape[1:])
        h = conv(self.out_channels, (3, 3), name="conv2", **kw)(nn.silu(norm("norm2", h)))
        if x.shape[-1] != self.out_channels:
            x = conv(self.out_channels, (1, 1), name="conv_shortcut", **kw)(x)
        return x + h


class Downsample(nn.Module):
    """Stride-2 3x3 ``conv`` per frame. ``padding``: ((1, 1), (1, 1)) in the UNet, ((0, 1), (0, 1)) in the VAE."""
    channels: int
    padding: tuple[tuple[int, int], tuple[int, int]] = ((1, 1), (1, 1))
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        return conv(self.channels, (3, 3), strides=2, padding=self.padding, dtype=self.dtype,
                    param_dtype=self.param_dtype, name="conv")(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 on height and width only (frames untouched), then a 3x3 ``conv``."""
    channels: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=-3), 2, axis=-2)
        return conv(self.channels, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype, name="conv")(x)


def remat_block(module_cls: type[nn.Module], policy: str, static_argnums: tuple[int, ...]) -> type[nn.Module]:
    """Wraps a block class in ``nn.remat`` according to ``policy`` (one of :data:`REMAT_POLICIES`).

    ``static_argnums`` counts ``self`` as 0 (flax convention), e.g. the ``deterministic`` flag.
    """
    if policy not in REMAT_POLICIES:
        raise ValueError(f"remat_policy must be one of {REMAT_POLICIES}, got {policy!r}")
    if policy == "none":
        return module_cls
    jax_policy = None if policy == "full" else getattr(jax.checkpoint_policies, policy)
    return nn.remat(module_cls, policy=jax_policy, static_argnums=static_argnums, prevent_cse=True)


def constrain_video(x: Array) -> Array:
    """Logical sharding constraint for ``[B, F, H, W, C]`` (or image ``[N, H, W, C]``) activations; a no-op
    without logical-axis rules."""
    return nn.with_logical_constraint(x, VIDEO_AXES if x.ndim == 5 else VIDEO_AXES[:1] + VIDEO_AXES[2:])
