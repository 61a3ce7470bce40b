"""Parameter counts per part of the video model, from shapes only (``jax.eval_shape``: nothing is allocated).

    python -m vidrd_jax.models.summary --config sd21          # the full SD-2.1 video model (paper §5.1)
    python -m vidrd_jax.models.summary --config tiny
    python -m vidrd_jax.models.summary --config CHECKPOINT_DIR  # or a model_config.json
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
from absl import app, flags

from vidrd_jax.convert import naming
from vidrd_jax.models import factory

_CONFIG = flags.DEFINE_string("config", "sd21", "sd21, tiny, an inference checkpoint dir or a model_config.json")
_JSON = flags.DEFINE_string("json", None, "also write the counts to this JSON file")

PRESETS = ("sd21", "tiny")


def model_configs(name: str) -> dict[str, Any]:
    """The three model configs for a preset name or an inference checkpoint / model_config.json path."""
    if name in PRESETS:
        return {kind: getattr(cls, name)() for kind, cls in factory.CONFIG_CLASSES.items()}
    path = os.path.join(name, "model_config.json") if os.path.isdir(name) else name
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: {name!r} is neither a preset {PRESETS} nor a checkpoint/model_config.json")
    with open(path) as f:
        raw = json.load(f)
    return {kind: factory.config_from_dict(kind, raw[kind]) for kind in factory.CONFIG_CLASSES}


def _part_of(kind: str, path: tuple[str, ...]) -> str:
    if kind == "unet":
        if any(p.startswith("temp_convs") for p in path):
            return "unet/temporal_conv"
        if any(p in ("temp_attn", "temp_norm") for p in path):
            return "unet/temporal_attention"
        return "unet/2d"
    if kind == "vae":
        if any(p.startswith("temp_convs") for p in path):
            return "vae/temporal_decoder"
        return "vae/encoder" if path[0] in ("encoder", "quant_conv") else "vae/decoder_2d"
    return "text_encoder"


def count_parts(configs: dict[str, Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for kind, config in configs.items():
        for path, leaf in naming.flatten_params(factory.abstract_params(kind, config)).items():
            part = _part_of(kind, path)
            counts[part] = counts.get(part, 0) + int(np.prod(leaf.shape))
    counts["unet/total"] = sum(v for k, v in counts.items() if k.startswith("unet/"))
    counts["vae/total"] = sum(v for k, v in counts.items() if k.startswith("vae/") and k != "vae/total")
    counts["total"] = counts["unet/total"] + counts["vae/total"] + counts["text_encoder"]
    return counts


def format_counts(counts: dict[str, int]) -> str:
    width = max(map(len, counts))
    return "\n".join(f"{part:<{width}}  {counts[part]:>15,}" for part in sorted(counts))


def main(argv):
    del argv
    counts = count_parts(model_configs(_CONFIG.value))
    print(format_counts(counts))
    if _JSON.value:
        with open(_JSON.value, "w") as f:
            json.dump(counts, f, indent=2, sort_keys=True)


if __name__ == "__main__":
    app.run(main)
