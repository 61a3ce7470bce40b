"""The official VidRD release -> our params.

Inputs (see ``tests/reference/``): ``ModelT2V.pth`` (a Lightning checkpoint whose ``state_dict`` holds
``unet.*`` and optionally ``text_encoder.*``), its ``vae_finetuned/`` diffusers folder (old or new attention
names; ``temp_*`` keys possibly absent), and an SD-2.1 folder for whatever the release does not carry (text
encoder, tokenizer, scheduler). The UNet must match the release exactly: every temporal key is required. The model
config is the release's: clip-scope GroupNorm (unless ``groupnorm_scope`` says otherwise), the frame embedding in the
residual stream, and 32-group / eps-1e-5 Temp-Conv GroupNorms in the UNet and the VAE decoder.
"""
from __future__ import annotations

import os
from typing import Any

from absl import logging

from vidrd_jax.convert import sd_folder
from vidrd_jax.convert.torch_io import load_torch_checkpoint, read_json
from vidrd_jax.models.text_encoder import CLIPTextConfig
from vidrd_jax.models.temporal_layers import RELEASE_TEMPORAL_NORM_EPS, RELEASE_TEMPORAL_NORM_GROUPS
from vidrd_jax.models.unet3d import UNet3DConfig

PREFIXES = ("unet", "text_encoder")


def split_prefixes(state_dict: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """``{"unet.x": v}`` -> ``({"unet": {"x": v}, ...}, {ignored prefix: count})``."""
    parts: dict[str, dict[str, Any]] = {p: {} for p in PREFIXES}
    ignored: dict[str, int] = {}
    for key, value in state_dict.items():
        prefix, _, rest = key.partition(".")
        if prefix in parts and rest:
            parts[prefix][rest] = value
        else:
            ignored[prefix] = ignored.get(prefix, 0) + 1
    return parts, ignored


def convert_vidrd_release(checkpoint: str, vae_folder: str, sd21_folder: str | None = None,
                          groupnorm_scope: str = "clip") -> tuple[dict, dict]:
    """Returns ``(params, model_config)`` in the inference-checkpoint layout."""
    raw = load_torch_checkpoint(checkpoint)
    state = raw.get("state_dict", raw)
    parts, ignored = split_prefixes(state)
    for prefix, count in sorted(ignored.items()):
        logging.warning("%s: ignoring %d tensors with prefix %r (not used by VidRD inference)", checkpoint, count,
                        prefix)
    if not parts["unet"]:
        raise ValueError(f"{checkpoint!r} has no 'unet.*' tensors; is this VidRD's ModelT2V.pth?")

    unet_json = os.path.join(sd21_folder, "unet", "config.json") if sd21_folder else None
    base = UNet3DConfig.from_diffusers(read_json(unet_json)) if unet_json else UNet3DConfig.sd21()
    unet_cfg = UNet3DConfig.from_dict({
        **base.to_dict(), "use_temporal": True, "groupnorm_scope": groupnorm_scope,
        "temporal_position_embedding": "residual", "temporal_norm_num_groups": RELEASE_TEMPORAL_NORM_GROUPS,
        "temporal_norm_eps": RELEASE_TEMPORAL_NORM_EPS})
    unet = sd_folder.convert_part("unet", unet_cfg, parts["unet"], what=f"VidRD UNet ({checkpoint})")

    if parts["text_encoder"]:
        text_json = os.path.join(sd21_folder, "text_encoder", "config.json") if sd21_folder else None
        text_cfg = CLIPTextConfig.from_transformers(read_json(text_json)) if text_json else CLIPTextConfig.sd21()
        text = sd_folder.convert_text_encoder_state(parts["text_encoder"], text_cfg,
                                                    f"VidRD text encoder ({checkpoint})")
    elif sd21_folder:
        text, text_cfg = sd_folder.convert_text_encoder(os.path.join(sd21_folder, "text_encoder"))
    else:
        raise ValueError(f"{checkpoint!r} has no 'text_encoder.*' tensors: pass the SD-2.1 folder (--sd21) "
                         "to take the text encoder from it")

    vae, vae_cfg = sd_folder.convert_vae(vae_folder, use_temporal_decoder=True,
                                         temporal_norm_num_groups=RELEASE_TEMPORAL_NORM_GROUPS,
                                         temporal_norm_eps=RELEASE_TEMPORAL_NORM_EPS)
    tokenizer = os.path.join(sd21_folder, "tokenizer") if sd21_folder else None
    model_config = {
        "unet": unet_cfg.to_dict(), "vae": vae_cfg.to_dict(), "text_encoder": text_cfg.to_dict(),
        "tokenizer": tokenizer if tokenizer and os.path.isdir(tokenizer) else None,
        "scheduler": sd_folder.read_scheduler_config(sd21_folder) if sd21_folder else {},
        "source": os.path.abspath(checkpoint),
    }
    return {"unet": unet, "vae": vae, "text_encoder": text}, model_config
