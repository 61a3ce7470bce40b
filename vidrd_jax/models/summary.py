"""Parameter counts per part of the video model, from shapes only (``jax.eval_shape``: nothing is allocated).

    python -m vidrd_jax.models.summary --config sd21          # the full SD-2.1 video model (paper §5.1)
    python -m vidrd_jax.models.summary --config tiny
    python -m vidrd_jax.models.summary --config CHECKPOINT_DIR  # or a model_config.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Sequence

import numpy as np

from vidrd_jax import cli
from vidrd_jax.convert import naming
from vidrd_jax.models import factory

PRESETS = ("sd21", "tiny")


def model_configs(name: str) -> dict[str, Any]:
    """The three model configs for a preset name or an inference checkpoint / model_config.json path."""
    if name in PRESETS:
        return {kind: getattr(cls, name)() for kind, cls in factory.CONFIG_CLASSES.items()}
    path = os.path.join(name, "model_config.json") if os.path.isdir(name) else name
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--config: {name!r} is neither a preset {PRESETS} nor a checkpoint/model_config.json")
    with open(path) as f:
        try:
            raw = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config: {path!r} is not JSON ({e})") from None
    missing = [kind for kind in factory.CONFIG_CLASSES if not isinstance(raw, dict) or kind not in raw]
    if missing:
        raise ValueError(f"--config: {path!r} has no model config for {missing}")
    configs = {}
    for kind in factory.CONFIG_CLASSES:
        try:
            configs[kind] = factory.config_from_dict(kind, raw[kind])
        except (TypeError, ValueError) as e:
            raise ValueError(f"--config: {path!r}: {kind}: {e}") from None
    return configs


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


def main(argv: Sequence[str] | None = None) -> dict[str, int]:
    """Prints (and with ``--json`` writes) the counts; returns them. Bad input raises (one line via ``run_cli``)."""
    parser = argparse.ArgumentParser(prog="python -m vidrd_jax.models.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="sd21",
                        help="sd21, tiny, an inference checkpoint dir or a model_config.json")
    parser.add_argument("--json", default=None, help="also write the counts to this JSON file")
    args = parser.parse_args(argv)
    if args.json:
        cli.check_output_file(args.json, "--json")
    counts = count_parts(model_configs(args.config))
    print(format_counts(counts))
    if args.json:
        with cli.atomic_write(args.json) as f:
            json.dump(counts, f, indent=2, sort_keys=True)
    return counts


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
