"""Diffusers-format Stable Diffusion folders (``unet/ vae/ text_encoder/ tokenizer/ scheduler/``) -> our params.

Temporal layers (any ``temp_*`` module) are absent from SD-2.1 and get their fresh initialisation, whose last
layers are zero. With the UNet defaults of an SD conversion (:data:`SD_VIDEO_UNET_DEFAULTS`: per-frame GroupNorm,
frame embedding only inside Temp-Attn) the converted video model is exactly SD-2.1 applied frame by frame (paper
§4.1, §4.4). ``groupnorm_scope="clip"`` (the release's) pools the ResNet / Temp-Conv / ``conv_norm_out`` statistics
over the clip, and ``temporal_position_embedding="residual"`` (the release's) leaves the frame embedding in the
residual stream: either makes a fresh model differ from per-frame SD.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping

import jax
from absl import logging

from vidrd_jax.convert import naming
from vidrd_jax.convert.torch_io import load_folder_state_dict, read_json
from vidrd_jax.models import factory
from vidrd_jax.models.text_encoder import CLIPTextConfig
from vidrd_jax.models.unet3d import UNet3DConfig
from vidrd_jax.models.vae import VAEConfig

# diffusers-0.14 AttentionBlock spelling (used by the VidRD release's vae_finetuned) -> modern names.
_OLD_VAE_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
TEXT_ENCODER_BUFFERS = ("text_model.embeddings.position_ids",)
# UNet3DConfig fields an SD conversion sets unless overridden: a fresh video UNet is then SD per frame.
SD_VIDEO_UNET_DEFAULTS = {"groupnorm_scope": "frame", "temporal_position_embedding": "attention"}


def is_temporal_key(key: str) -> bool:
    """True for parameters of the temporal layers VidRD adds (``temp_convs``, ``temp_attn``, ``temp_norm``)."""
    return any(part.startswith("temp_") for part in key.split("."))


def vae_key_aliases(keys) -> dict[str, str]:
    """Maps old ``attentions.N.{query,key,value,proj_attn}`` VAE keys to ``to_q/to_k/to_v/to_out.0``."""
    aliases = {}
    for key in keys:
        parts = key.split(".")
        if len(parts) >= 3 and "attentions" in parts and parts[-2] in _OLD_VAE_ATTENTION:
            aliases[key] = ".".join(parts[:-2] + [_OLD_VAE_ATTENTION[parts[-2]], parts[-1]])
    return aliases


def convert_part(kind: factory.Kind, config: Any, state_dict: Mapping[str, Any], *, what: str,
                 allow_missing: Callable[[str], bool] | None = None,
                 ignore_unexpected: Callable[[str], bool] | None = None,
                 key_aliases: Mapping[str, str] | None = None, seed: int = 0) -> dict[str, Any]:
    """Converts one model's state dict; tensors allowed to be missing come from a fresh ``init``."""
    target = factory.abstract_params(kind, config)
    params, unfilled = naming.state_dict_to_params(
        state_dict, target, key_aliases=key_aliases, allow_missing=allow_missing,
        ignore_unexpected=ignore_unexpected, what=what)
    if unfilled:
        logging.info("%s: %d tensors not in the checkpoint take their fresh init", what, len(unfilled))
        fresh = naming.flatten_params(factory.init_params(kind, config, jax.random.key(seed)))
        flat = naming.flatten_params(params)
        flat.update({path: fresh[path] for path in unfilled})
        params = naming.unflatten_params(flat)
    return params


def convert_unet(folder: str, *, variant: str | None = None, **overrides) -> tuple[dict, UNet3DConfig]:
    """An SD UNet folder -> video UNet params; ``overrides`` (UNet3DConfig fields) go over
    :data:`SD_VIDEO_UNET_DEFAULTS`."""
    config = UNet3DConfig.from_diffusers(read_json(os.path.join(folder, "config.json")),
                                         **{**SD_VIDEO_UNET_DEFAULTS, **overrides})
    params = convert_part("unet", config, load_folder_state_dict(folder, variant), what=f"UNet {folder}",
                          allow_missing=is_temporal_key if config.use_temporal else None)
    return params, config


def convert_vae(folder: str, *, variant: str | None = None, **overrides) -> tuple[dict, VAEConfig]:
    config = VAEConfig.from_diffusers(read_json(os.path.join(folder, "config.json")), **overrides)
    state = load_folder_state_dict(folder, variant)
    params = convert_part("vae", config, state, what=f"VAE {folder}", key_aliases=vae_key_aliases(state),
                          allow_missing=is_temporal_key if config.use_temporal_decoder else None,
                          ignore_unexpected=None if config.use_temporal_decoder else is_temporal_key)
    return params, config


def convert_text_encoder_state(state: Mapping[str, Any], config: CLIPTextConfig, what: str) -> dict:
    """transformers <= 4.x saves ``text_model.*`` keys; transformers 5 drops that level: accept both."""
    aliases = {k: f"text_model.{k}" for k in state if not k.startswith("text_model.")}
    return convert_part("text_encoder", config, state, what=what, key_aliases=aliases,
                        ignore_unexpected=lambda k: k in TEXT_ENCODER_BUFFERS)


def convert_text_encoder(folder: str, *, variant: str | None = None) -> tuple[dict, CLIPTextConfig]:
    config = CLIPTextConfig.from_transformers(read_json(os.path.join(folder, "config.json")))
    params = convert_text_encoder_state(load_folder_state_dict(folder, variant), config, f"text encoder {folder}")
    return params, config


def read_scheduler_config(folder: str) -> dict[str, Any]:
    path = os.path.join(folder, "scheduler", "scheduler_config.json")
    return read_json(path) if os.path.isfile(path) else {}


def convert_sd_folder(folder: str, *, variant: str | None = None, unet_overrides: Mapping[str, Any] | None = None,
                      vae_overrides: Mapping[str, Any] | None = None) -> tuple[dict, dict]:
    """A whole diffusers SD folder -> ``(params, model_config)`` in the inference-checkpoint layout."""
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Stable Diffusion folder not found: {folder}")
    unet, unet_cfg = convert_unet(os.path.join(folder, "unet"), variant=variant, **dict(unet_overrides or {}))
    vae, vae_cfg = convert_vae(os.path.join(folder, "vae"), variant=variant, **dict(vae_overrides or {}))
    text, text_cfg = convert_text_encoder(os.path.join(folder, "text_encoder"), variant=variant)
    has_tokenizer = os.path.isdir(os.path.join(folder, "tokenizer"))
    model_config = {
        "unet": unet_cfg.to_dict(), "vae": vae_cfg.to_dict(), "text_encoder": text_cfg.to_dict(),
        "tokenizer": os.path.join(folder, "tokenizer") if has_tokenizer else None,
        "scheduler": read_scheduler_config(folder), "source": os.path.abspath(folder),
    }
    return {"unet": unet, "vae": vae, "text_encoder": text}, model_config
