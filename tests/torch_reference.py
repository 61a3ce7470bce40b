"""A small PyTorch re-statement of VidRD's temporal layers and of the release's UNet3D and temporal VAE decoder,
written from the official release's forward order (``tests/reference/``) to check our Flax modules,
converted checkpoints and exported weights against.

Every function reads its weights from a PyTorch-layout state dict under ``prefix`` (official key names, e.g.
``prefix = "down_blocks.0.temp_convs.1."`` or ``"down_blocks.0.attentions.0.transformer_blocks.0."``; the whole
UNet: no prefix) and takes PyTorch-layout tensors: 5-D video features are ``(b, c, f, h, w)``; transformer tokens
are ``((b f), d, c)`` with the frames inner. The release builds every Temp-Conv GroupNorm as GroupNorm(32, eps 1e-5)
whatever the model's ``norm_num_groups``: those are :func:`temporal_conv`'s defaults.
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


def _per_frame(fn, x: torch.Tensor) -> torch.Tensor:
    """Applies a 2D module ``fn`` to every frame of ``(b, c, f, h, w)`` (the release's ``(b f) c h w`` fold)."""
    b, _, f = x.shape[:3]
    y = fn(x.transpose(1, 2).flatten(0, 1))
    return y.reshape(b, f, *y.shape[1:]).transpose(1, 2)


def _conv2d(sd: StateDict, prefix: str, x: torch.Tensor, stride: int = 1) -> torch.Tensor:
    w = sd[f"{prefix}weight"]
    return _per_frame(lambda t: F.conv2d(t, w, sd[f"{prefix}bias"], stride, w.shape[-1] // 2), x)


def resnet_block_3d(sd: StateDict, prefix: str, x: torch.Tensor, temb: torch.Tensor, groups: int,
                    eps: float) -> torch.Tensor:
    """ResnetBlock3D: GroupNorms on the 5-D tensor (statistics pooled over the clip), convs per frame."""
    def norm(name: str, t: torch.Tensor) -> torch.Tensor:
        return F.group_norm(t, groups, sd[f"{prefix}{name}.weight"], sd[f"{prefix}{name}.bias"], eps)

    h = _conv2d(sd, f"{prefix}conv1.", F.silu(norm("norm1", x)))
    h = h + F.linear(F.silu(temb), sd[f"{prefix}time_emb_proj.weight"], sd[f"{prefix}time_emb_proj.bias"])[
        :, :, None, None, None]
    h = _conv2d(sd, f"{prefix}conv2.", F.silu(norm("norm2", h)))
    if f"{prefix}conv_shortcut.weight" in sd:
        x = _conv2d(sd, f"{prefix}conv_shortcut.", x)
    return x + h


def transformer_3d(sd: StateDict, prefix: str, x: torch.Tensor, context: torch.Tensor, heads: int, groups: int,
                   temporal: bool = True) -> torch.Tensor:
    """Transformer3DModel: per-frame GroupNorm (eps 1e-6) -> proj_in -> one BasicTransformerBlock -> proj_out
    -> + input; ``x`` ``(b, c, f, h, w)``, ``context`` ``(b, n, D)``."""
    b, c, f, hh, ww = x.shape
    h = x.transpose(1, 2).reshape(b * f, c, hh, ww)
    h = F.group_norm(h, groups, sd[f"{prefix}norm.weight"], sd[f"{prefix}norm.bias"], 1e-6)
    h = F.linear(h.permute(0, 2, 3, 1).reshape(b * f, hh * ww, c), sd[f"{prefix}proj_in.weight"],
                 sd[f"{prefix}proj_in.bias"])
    h = basic_transformer_block(sd, f"{prefix}transformer_blocks.0.", h, context, f, heads, temporal)
    h = F.linear(h, sd[f"{prefix}proj_out.weight"], sd[f"{prefix}proj_out.bias"])
    return h.reshape(b, f, hh, ww, c).permute(0, 4, 1, 2, 3) + x


def timestep_features(timesteps: torch.Tensor, dim: int, flip_sin_to_cos: bool, shift: float) -> torch.Tensor:
    """diffusers ``get_timestep_embedding``."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - shift)
    angles = timesteps.float()[:, None] * torch.exp(exponent)[None]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return torch.cat([emb[:, half:], emb[:, :half]], dim=-1) if flip_sin_to_cos else emb


def unet3d(sd: StateDict, config: Mapping, sample: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor,
           temporal: bool = True) -> torch.Tensor:
    """The release's UNet3DConditionModel (add_temp_conv, add_temp_embed) on ``sample`` ``(b, c, f, h, w)``.

    ``config`` is the 2D UNet's diffusers ``config.json`` (SD-2 style: head counts in ``attention_head_dim``);
    ``sd`` holds its 2D keys plus the ``temp_*`` keys. The temporal layers are built as the release builds them,
    whatever the config: Temp-Conv with 4 sub-layers of GroupNorm(32, eps 1e-5), Temp-Attn with the frame
    embedding in the residual stream.
    """
    channels, layers = config["block_out_channels"], config["layers_per_block"]
    heads = config["attention_head_dim"]
    heads = list(heads) if isinstance(heads, (list, tuple)) else [heads] * len(channels)
    groups, eps = config["norm_num_groups"], config["norm_eps"]

    def resnet_temporal(prefix: str, j: int, h: torch.Tensor) -> torch.Tensor:
        h = resnet_block_3d(sd, f"{prefix}resnets.{j}.", h, temb, groups, eps)
        return temporal_conv(sd, f"{prefix}temp_convs.{j}.", h, 4) if temporal else h

    temb = timestep_features(timesteps, channels[0], config["flip_sin_to_cos"], config["freq_shift"])
    temb = F.linear(temb, sd["time_embedding.linear_1.weight"], sd["time_embedding.linear_1.bias"])
    temb = F.linear(F.silu(temb), sd["time_embedding.linear_2.weight"], sd["time_embedding.linear_2.bias"])
    h = _conv2d(sd, "conv_in.", sample)
    skips = [h]
    for i, block in enumerate(config["down_block_types"]):
        for j in range(layers):
            h = resnet_temporal(f"down_blocks.{i}.", j, h)
            if block.startswith("CrossAttn"):
                h = transformer_3d(sd, f"down_blocks.{i}.attentions.{j}.", h, context, heads[i], groups, temporal)
            skips.append(h)
        if i < len(channels) - 1:
            h = _conv2d(sd, f"down_blocks.{i}.downsamplers.0.conv.", h, stride=2)
            skips.append(h)
    h = resnet_temporal("mid_block.", 0, h)
    h = transformer_3d(sd, "mid_block.attentions.0.", h, context, heads[-1], groups, temporal)
    h = resnet_temporal("mid_block.", 1, h)
    for i, block in enumerate(config["up_block_types"]):
        for j in range(layers + 1):
            h = resnet_temporal(f"up_blocks.{i}.", j, torch.cat([h, skips.pop()], dim=1))
            if block.startswith("CrossAttn"):
                h = transformer_3d(sd, f"up_blocks.{i}.attentions.{j}.", h, context, heads[::-1][i], groups, temporal)
        if i < len(channels) - 1:
            h = F.interpolate(h, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
            h = _conv2d(sd, f"up_blocks.{i}.upsamplers.0.conv.", h)
    h = F.silu(F.group_norm(h, groups, sd["conv_norm_out.weight"], sd["conv_norm_out.bias"], eps))
    return _conv2d(sd, "conv_out.", h)


def temporal_vae_decode(vae: torch.nn.Module, sd: StateDict, z: torch.Tensor, num_frames: int) -> torch.Tensor:
    """The release's TemporalDecoder: a diffusers ``AutoencoderKL`` decode (``z`` ``((b f), c, h, w)``, unscaled)
    with a Temp-Conv (3 sub-layers of GroupNorm(32, eps 1e-5)) after every ResNet of the decoder's up blocks, fed
    the ``temp_*`` weights of ``sd`` (keys ``decoder.up_blocks.{i}.temp_convs.{j}.*``)."""
    def hook(prefix: str):
        def run(module, inputs, output):
            bf, c, h, w = output.shape
            clip = output.reshape(bf // num_frames, num_frames, c, h, w).transpose(1, 2)
            return temporal_conv(sd, prefix, clip, 3).transpose(1, 2).reshape(bf, c, h, w)
        return run

    handles = [resnet.register_forward_hook(hook(f"decoder.up_blocks.{i}.temp_convs.{j}."))
               for i, block in enumerate(vae.decoder.up_blocks) for j, resnet in enumerate(block.resnets)]
    try:
        return vae.decode(z).sample
    finally:
        for handle in handles:
            handle.remove()
