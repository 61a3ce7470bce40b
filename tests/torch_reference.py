"""A small PyTorch re-statement of VidRD's temporal layers, written from the official release's forward order
(``shared/reference/README.md``) to check our Flax modules and converted checkpoints against.

Every function reads its weights from a PyTorch-layout state dict under ``prefix`` (official key names, e.g.
``prefix = "down_blocks.0.temp_convs.1."`` or ``"down_blocks.0.attentions.0.transformer_blocks.0."``) and takes
PyTorch-layout tensors: 5-D video features are ``(b, c, f, h, w)``; transformer tokens are ``((b f), d, c)`` with
the frames inner.
"""
from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

StateDict = Mapping[str, torch.Tensor]


def temporal_conv(sd: StateDict, prefix: str, x: torch.Tensor, num_layers: int, num_groups: int = 32,
                  eps: float = 1e-5, dropout: float = 0.0, training: bool = False) -> torch.Tensor:
    """TemporalConvLayer: ``x + convs(x)``, ``convs`` = ``num_layers`` x [GroupNorm over (c, f, h, w) groups ->
    SiLU -> Dropout -> Conv3d (3, 1, 1), padding (1, 0, 0)]; keys ``convs.{4k}`` (norm) and ``convs.{4k+3}``
    (conv). With one frame the official layer returns ``x`` (VAE) or ``x + 0·convs(x)`` (UNet), i.e. ``x``."""
    h = x
    for k in range(num_layers):
        h = F.group_norm(h, num_groups, sd[f"{prefix}convs.{4 * k}.weight"], sd[f"{prefix}convs.{4 * k}.bias"], eps)
        h = F.dropout(F.silu(h), dropout, training)
        h = F.conv3d(h, sd[f"{prefix}convs.{4 * k + 3}.weight"], sd[f"{prefix}convs.{4 * k + 3}.bias"],
                     padding=(1, 0, 0))
    return x if x.shape[2] == 1 else x + h


def frame_position_embedding(dim: int, num_frames: int) -> torch.Tensor:
    """Official ``get_sin_pos_embedding``: ``[f, dim]``, sin on even and cos on odd channels."""
    pe = torch.zeros(num_frames, dim)
    position = torch.arange(num_frames).unsqueeze(1).float()
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float) * -(math.log(10000.0) / dim))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def attention(sd: StateDict, prefix: str, x: torch.Tensor, heads: int,
              context: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers CrossAttention (``to_q/to_k/to_v`` with optional bias, ``to_out.0``), scale head_dim**-0.5."""
    context = x if context is None else context
    q, k, v = (F.linear(t, sd[f"{prefix}{name}.weight"], sd.get(f"{prefix}{name}.bias"))
               for name, t in (("to_q", x), ("to_k", context), ("to_v", context)))
    n, lq, c = q.shape
    q, k, v = (t.reshape(n, t.shape[1], heads, c // heads).transpose(1, 2) for t in (q, k, v))
    probs = torch.softmax(q @ k.transpose(-1, -2) * (c // heads) ** -0.5, dim=-1)
    out = (probs @ v).transpose(1, 2).reshape(n, lq, c)
    return F.linear(out, sd[f"{prefix}to_out.0.weight"], sd[f"{prefix}to_out.0.bias"])


def _layer_norm(sd: StateDict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[f"{prefix}weight"], sd[f"{prefix}bias"], 1e-5)


def temporal_attention(sd: StateDict, prefix: str, hidden_states: torch.Tensor, num_frames: int, heads: int,
                       add_temp_embed: bool = True) -> torch.Tensor:
    """The Temp-Attn step of the official BasicTransformerBlock, on tokens ``((b f), d, c)``.

    The frame embedding is added *in place through a view*, so the saved ``identity`` carries it too: the PE stays
    in the residual stream, and with one frame ``pe[0]`` is still added although the attention output is dropped.
    """
    hidden_states = hidden_states.clone()  # the official code mutates its own intermediate, not the caller's
    identity = hidden_states
    bf, d, c = hidden_states.shape
    b = bf // num_frames
    if add_temp_embed:
        view = hidden_states.view(b, num_frames, d, c).permute(0, 2, 1, 3)  # "(b f) d c -> b d f c", a view
        view += frame_position_embedding(c, num_frames).to(hidden_states)
    x = hidden_states.view(b, num_frames, d, c).permute(0, 2, 1, 3).reshape(b * d, num_frames, c)
    x = attention(sd, f"{prefix}temp_attn.", _layer_norm(sd, f"{prefix}temp_norm.", x), heads) + x
    out = x.reshape(b, d, num_frames, c).permute(0, 2, 1, 3).reshape(bf, d, c)
    if num_frames <= 1:
        out = identity + 0.0 * out
    return out


def basic_transformer_block(sd: StateDict, prefix: str, hidden_states: torch.Tensor, context: torch.Tensor,
                            num_frames: int, heads: int, temporal: bool = True,
                            add_temp_embed: bool = True) -> torch.Tensor:
    """Official BasicTransformerBlock: attn1 (spatial) -> attn2 (text, ``context`` ``(b, n, D)`` repeated per
    frame) -> Temp-Attn -> GEGLU feed-forward; each with a pre-LayerNorm and a residual."""
    h = hidden_states
    context = context.repeat_interleave(num_frames, dim=0)
    h = attention(sd, f"{prefix}attn1.", _layer_norm(sd, f"{prefix}norm1.", h), heads) + h
    h = attention(sd, f"{prefix}attn2.", _layer_norm(sd, f"{prefix}norm2.", h), heads, context) + h
    if temporal:
        h = temporal_attention(sd, prefix, h, num_frames, heads, add_temp_embed)
    hidden, gate = F.linear(_layer_norm(sd, f"{prefix}norm3.", h), sd[f"{prefix}ff.net.0.proj.weight"],
                            sd[f"{prefix}ff.net.0.proj.bias"]).chunk(2, dim=-1)
    return F.linear(hidden * F.gelu(gate), sd[f"{prefix}ff.net.2.weight"], sd[f"{prefix}ff.net.2.bias"]) + h
