"""The temporal layers VidRD injects into Stable Diffusion (paper §4.1, Fig. 3; §4.4, Fig. 6).

* :class:`TemporalConv` ("Temp-Conv"): 3-D convolutions along the frame axis after every ResNet, residual, last
  conv zero-initialised (UNet: 4 sub-layers, autoencoder decoder: 3).
* :func:`temporal_attention` ("Temp-Attn"): self-attention over the frames at every spatial position, inside each
  transformer block between cross-attention and the feed-forward, output projection zero-initialised.

The forward order and the single-frame behaviour follow the official release (``tests/reference/``).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrd_jax.models.layers import GROUPNORM_SCOPES, Attention, Dtype, GroupNorm, group_norm, torch_default_init

Array = jax.Array

POSITION_EMBEDDINGS = ("residual", "attention", "none")
TEMPORAL_PADDINGS = ("zeros", "replicate")
# The release builds every Temp-Conv GroupNorm (UNet and VAE decoder) as GroupNorm(32, C, eps=1e-5), whatever the
# model's own ``norm_num_groups`` / ``norm_eps``.
RELEASE_TEMPORAL_NORM_GROUPS = 32
RELEASE_TEMPORAL_NORM_EPS = 1e-5


class FrameConv(nn.Module):
    """A ``(3, 1, 1)`` convolution over the frames of ``[B, F, H, W, C]`` (stride 1, bias, frame padding 1).

    Computed as three 1x1 convolutions (matmuls over channels) whose outputs are shifted by one frame and summed:
    ``y[f] = x[f-1] W0 + x[f] W1 + x[f+1] W2 + b`` — the same sums as ``nn.Conv`` but without XLA's generic 3-D
    convolution (slower on CPU). Beyond the clip the input is ``zeros`` or ``replicate`` (edge frames; the conv is
    linear, so shifting the edge-padded outputs equals convolving the edge-padded input). The kernel keeps
    ``nn.Conv``'s shape ``(3, 1, 1, C_in, C_out)``, logical axes and initialiser, so checkpoints are unchanged.
    """
    features: int
    padding: str = "zeros"
    zero_init: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        kernel_init = nn.initializers.zeros_init() if self.zero_init else torch_default_init()
        kernel = self.param("kernel", nn.with_logical_partitioning(
            kernel_init, ("conv_t", "conv_h", "conv_w", "conv_in", "conv_out")),
            (3, 1, 1, x.shape[-1], self.features), self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
                          (self.features,), self.param_dtype)
        x, kernel, bias = jnp.asarray(x, self.dtype), jnp.asarray(kernel, self.dtype), jnp.asarray(bias, self.dtype)
        prev, mid, nxt = (jnp.dot(x, kernel[t, 0, 0]) for t in range(3))
        mode = "edge" if self.padding == "replicate" else "constant"
        no_pad = ((0, 0),) * (x.ndim - 2)
        prev = jnp.pad(prev, ((0, 0), (1, 0)) + no_pad, mode=mode)[:, :-1]  # frame f sees x[f-1]
        nxt = jnp.pad(nxt, ((0, 0), (0, 1)) + no_pad, mode=mode)[:, 1:]  # frame f sees x[f+1]
        return mid + prev + nxt + bias


class TemporalConv(nn.Module):
    """Temp-Conv: ``x + convs(x)`` with ``convs`` = ``num_layers`` x [GroupNorm -> SiLU -> Dropout -> Conv(3,1,1)].

    Input/output ``[B, F, H, W, C]``. The conv kernel spans 3 frames and has a bias; ``padding`` of the frame axis
    is ``zeros`` (official, (1, 0, 0)) or ``replicate`` (edge frames repeated, so the first and last frame see a
    clip that looks static at its border rather than black). The last conv is zero-initialised, so a fresh layer is
    the identity (§4.1) with either padding. Parameter names match the official
    flat ``convs`` ModuleList: GroupNorm ``convs_{4k}``, Conv3d ``convs_{4k+3}``. With one frame the layer returns
    its input unchanged (official: ``x + 0·convs(x)`` in the UNet, ``x`` in the VAE); its parameters are still
    created at init.
    """
    num_layers: int = 4
    num_groups: int = RELEASE_TEMPORAL_NORM_GROUPS
    epsilon: float = RELEASE_TEMPORAL_NORM_EPS
    dropout: float = 0.1
    groupnorm_scope: str = "clip"
    padding: str = "zeros"
    zero_init: bool = True  # False: the last conv is initialised like the others (training from scratch)
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array, deterministic: bool = True) -> Array:
        if x.ndim != 5:
            raise ValueError(f"TemporalConv expects x of shape [B, F, H, W, C], got {x.shape}")
        if self.groupnorm_scope not in GROUPNORM_SCOPES:
            raise ValueError(f"groupnorm_scope must be one of {GROUPNORM_SCOPES}, got {self.groupnorm_scope!r}")
        if self.padding not in TEMPORAL_PADDINGS:
            raise ValueError(f"padding must be one of {TEMPORAL_PADDINGS}, got {self.padding!r}")
        if x.shape[1] == 1 and not self.is_initializing():
            return x
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = x
        for k in range(self.num_layers):
            h = group_norm(GroupNorm(self.num_groups, self.epsilon, name=f"convs_{4 * k}", **kw), h,
                           self.groupnorm_scope)
            h = nn.Dropout(self.dropout)(nn.silu(h), deterministic=deterministic)
            h = FrameConv(x.shape[-1], self.padding, zero_init=self.zero_init and k == self.num_layers - 1,
                          name=f"convs_{4 * k + 3}", **kw)(h)
        return x + h


def frame_position_embedding(num_frames: int, dim: int) -> Array:
    """Interleaved sinusoidal frame positions ``[F, dim]`` (float32), as the official ``get_sin_pos_embedding``.

    ``pe[p, 2i] = sin(p · 10000^(-2i/dim))``, ``pe[p, 2i+1] = cos(p · 10000^(-2i/dim))``.
    """
    if dim % 2:
        raise ValueError(f"frame position embedding needs an even channel count, got {dim}")
    position = jnp.arange(num_frames, dtype=jnp.float32)[:, None]
    freqs = jnp.exp(jnp.arange(0, dim, 2, dtype=jnp.float32) * -(jnp.log(10000.0) / dim))[None, :]
    angles = position * freqs
    return jnp.stack([jnp.sin(angles), jnp.cos(angles)], axis=-1).reshape(num_frames, dim)


def temporal_attention(h: Array, norm: nn.Module, attn: Attention, position_embedding: str = "residual",
                       initializing: bool = False) -> Array:
    """Temp-Attn on transformer tokens ``h`` ``[B, F, L, C]`` (L = H·W): frames attend to each other per token.

    ``norm`` is the block's ``temp_norm`` LayerNorm and ``attn`` its ``temp_attn`` (zero-initialised output).
    ``position_embedding`` selects where the frame embedding :func:`frame_position_embedding` goes:

    * ``"residual"`` (official, ``add_temp_embed=True``): ``h += pe`` stays in the residual stream, then
      ``h = h + attn(norm(h))``. A freshly initialised block is therefore *not* the identity (the PE remains), and
      with one frame the official code still adds ``pe[0]`` (0 on even, 1 on odd channels) while discarding the
      attention output; both quirks are reproduced.
    * ``"attention"``: the PE only feeds the attention input, ``h = h + attn(norm(h + pe))``; a fresh block is
      exactly the identity and one frame returns ``h``.
    * ``"none"`` (official ``add_temp_embed=False``): ``h = h + attn(norm(h))``; one frame returns ``h``.

    ``initializing`` runs the attention even for one frame so that its parameters get created.
    """
    if position_embedding not in POSITION_EMBEDDINGS:
        raise ValueError(f"temporal_position_embedding must be one of {POSITION_EMBEDDINGS}, "
                         f"got {position_embedding!r}")
    num_frames = h.shape[1]
    pe = frame_position_embedding(num_frames, h.shape[-1])[None, :, None, :].astype(h.dtype)
    if position_embedding == "residual":
        h = h + pe
    if num_frames == 1 and not initializing:
        return h
    x = h + pe if position_embedding == "attention" else h
    x = jnp.swapaxes(x, 1, 2)  # [B, L, F, C]: attention runs over the frame axis
    out = jnp.swapaxes(attn(norm(x)), 1, 2)
    return h if num_frames == 1 else h + out
