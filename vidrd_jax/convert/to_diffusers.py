"""Our params -> diffusers / transformers folders, so weights go back to PyTorch.

The 2D parts become standard folders (``unet/`` for ``UNet2DConditionModel``, ``vae/`` for ``AutoencoderKL``,
``text_encoder/`` for ``CLIPTextModel``) that load with ``from_pretrained``. The temporal layers, which those
classes do not have, are written beside them with VidRD's key names (``unet/temporal_layers.safetensors``,
``vae/temporal_decoder.safetensors``), so nothing is lost and the VidRD code can strict-load 2D + temporal. The
release's modules compute what our model computes only with the release's temporal settings
(:func:`release_differences`); the export warns about any other.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

from absl import logging

from vidrd_jax.convert import naming
from vidrd_jax.convert.sd_folder import is_temporal_key
from vidrd_jax.convert.torch_io import save_state_dict, write_folder
from vidrd_jax.models.temporal_layers import RELEASE_TEMPORAL_NORM_EPS, RELEASE_TEMPORAL_NORM_GROUPS
from vidrd_jax.models.text_encoder import CLIPTextConfig
from vidrd_jax.models.unet3d import UNet3DConfig
from vidrd_jax.models.vae import VAEConfig

UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
TEXT_WEIGHTS = "model.safetensors"
UNET_TEMPORAL_WEIGHTS = "temporal_layers.safetensors"
VAE_TEMPORAL_WEIGHTS = "temporal_decoder.safetensors"
DEFAULT_SCHEDULER = {  # SD-2.1-base's DDIM settings (paper §5.1 samples with DDIM)
    "_class_name": "DDIMScheduler", "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
    "num_train_timesteps": 1000, "steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False,
    "prediction_type": "epsilon", "timestep_spacing": "leading",
}


def unet_diffusers_config(cfg: UNet3DConfig) -> dict[str, Any]:
    """``UNet2DConditionModel`` config of the 2D part (SD-2 style: head counts in ``attention_head_dim``)."""
    return {
        "_class_name": "UNet2DConditionModel", "act_fn": "silu", "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels, "block_out_channels": list(cfg.block_out_channels),
        "layers_per_block": cfg.layers_per_block,
        "down_block_types": [t.replace("3D", "2D") for t in cfg.down_block_types],
        "up_block_types": [t.replace("3D", "2D") for t in cfg.up_block_types],
        "attention_head_dim": list(cfg.num_attention_heads), "cross_attention_dim": cfg.cross_attention_dim,
        "norm_num_groups": cfg.norm_num_groups, "norm_eps": cfg.norm_eps, "flip_sin_to_cos": cfg.flip_sin_to_cos,
        "freq_shift": cfg.freq_shift, "use_linear_projection": True, "downsample_padding": 1,
        "center_input_sample": False, "mid_block_scale_factor": 1,
    }


def vae_diffusers_config(cfg: VAEConfig) -> dict[str, Any]:
    n = len(cfg.block_out_channels)
    return {
        "_class_name": "AutoencoderKL", "act_fn": "silu", "in_channels": cfg.in_channels,
        "out_channels": cfg.out_channels, "latent_channels": cfg.latent_channels,
        "block_out_channels": list(cfg.block_out_channels), "layers_per_block": cfg.layers_per_block,
        "norm_num_groups": cfg.norm_num_groups, "scaling_factor": cfg.scaling_factor,
        "down_block_types": ["DownEncoderBlock2D"] * n, "up_block_types": ["UpDecoderBlock2D"] * n,
    }


def text_encoder_transformers_config(cfg: CLIPTextConfig) -> dict[str, Any]:
    return {
        "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
        "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
        "max_position_embeddings": cfg.max_position_embeddings, "hidden_act": cfg.hidden_act,
        "layer_norm_eps": cfg.layer_norm_eps, "attention_dropout": 0.0, "dropout": 0.0, "torch_dtype": "float32",
    }


def release_differences(unet: UNet3DConfig, vae: VAEConfig) -> list[str]:
    """Temporal settings of ours with which the release's modules, fed the exported weights, compute otherwise."""
    norm = (RELEASE_TEMPORAL_NORM_GROUPS, RELEASE_TEMPORAL_NORM_EPS)
    checks = []
    if unet.use_temporal:
        checks += [("unet.groupnorm_scope", unet.groupnorm_scope, "clip"),
                   ("unet.temporal_position_embedding", unet.temporal_position_embedding, "residual"),
                   ("unet.temporal_conv_layers", unet.temporal_conv_layers, 4),
                   ("unet Temp-Conv GroupNorm (groups, eps)", unet.temporal_norm, norm)]
    if vae.use_temporal_decoder:
        checks += [("vae.groupnorm_scope", vae.groupnorm_scope, "clip"),
                   ("vae.temporal_padding", vae.temporal_padding, "zeros"),
                   ("vae.temporal_conv_layers", vae.temporal_conv_layers, 3),
                   ("vae Temp-Conv GroupNorm (groups, eps)", (vae.temporal_groups, vae.temporal_norm_eps), norm)]
    return [f"{name}={ours!r} (release: {release!r})" for name, ours, release in checks if ours != release]


def _split_temporal(params: Mapping[str, Any]) -> tuple[dict, dict]:
    state = naming.params_to_state_dict(params)
    spatial = {k: v for k, v in state.items() if not is_temporal_key(k)}
    temporal = {k: v for k, v in state.items() if is_temporal_key(k)}
    return spatial, temporal


def export_diffusers(params: Mapping[str, Any], model_config: Mapping[str, Any], out: str,
                     checkpoint_dir: str | None = None) -> None:
    """Writes ``out/{unet,vae,text_encoder,scheduler,tokenizer}`` and ``model_index.json``."""
    unet_cfg = UNet3DConfig.from_dict(model_config["unet"])
    vae_cfg = VAEConfig.from_dict(model_config["vae"])
    text_cfg = CLIPTextConfig.from_dict(model_config["text_encoder"])
    differences = release_differences(unet_cfg, vae_cfg)
    if differences:
        logging.warning("%s: the VidRD release's modules will not reproduce this model with the exported temporal "
                        "weights: %s", out, "; ".join(differences))

    spatial, temporal = _split_temporal(params["unet"])
    write_folder(os.path.join(out, "unet"), spatial, unet_diffusers_config(unet_cfg), UNET_WEIGHTS)
    if temporal:
        save_state_dict(os.path.join(out, "unet", UNET_TEMPORAL_WEIGHTS), temporal)
    spatial, temporal = _split_temporal(params["vae"])
    write_folder(os.path.join(out, "vae"), spatial, vae_diffusers_config(vae_cfg), UNET_WEIGHTS)
    if temporal:
        save_state_dict(os.path.join(out, "vae", VAE_TEMPORAL_WEIGHTS), temporal)
    write_folder(os.path.join(out, "text_encoder"), naming.params_to_state_dict(params["text_encoder"]),
                 text_encoder_transformers_config(text_cfg), TEXT_WEIGHTS)

    scheduler = {**DEFAULT_SCHEDULER, **dict(model_config.get("scheduler") or {})}
    os.makedirs(os.path.join(out, "scheduler"), exist_ok=True)
    with open(os.path.join(out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler, f, indent=2, sort_keys=True)
    tokenizer = model_config.get("tokenizer")
    if tokenizer:
        source = tokenizer if os.path.isabs(tokenizer) or not checkpoint_dir else os.path.join(checkpoint_dir, tokenizer)
        shutil.copytree(source, os.path.join(out, "tokenizer"), dirs_exist_ok=True)
    else:
        from vidrd_jax.models.tokenizer import load_tokenizer
        load_tokenizer(None).save(os.path.join(out, "tokenizer"))
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
                   "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
                   "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"]},
                  f, indent=2)
