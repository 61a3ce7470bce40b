"""Writes an inference checkpoint of tiny, randomly initialised models, so generation runs without downloads.

    python -m vidrd_jax.make_tiny_checkpoint --out /tmp/vidrd_tiny [--seed 0] [--overwrite]
    python -m vidrd_jax.generate --config configs/generate_default.py --checkpoint /tmp/vidrd_tiny \
        --prompt "a red square" --out /tmp/tiny.mp4 --config.resolution=64 --config.num_steps=5

The models are ``UNet3DConfig.tiny()``, ``VAEConfig.tiny()`` and ``CLIPTextConfig.tiny()`` (real 49,408-token
vocabulary), the tokenizer is the built-in CLIP BPE (``"tokenizer": null``) and the scheduler is SD-2.1-base's. The
videos are noise-like (nothing is trained): the checkpoint exists to exercise the whole pipeline (tests, benchmarks,
the README's quick start).

Parameters are drawn with numpy from the shapes of ``factory.abstract_params`` (``jax.eval_shape``: nothing is
compiled, so this takes seconds on a CPU where compiling the models' ``init`` takes a minute): Dense/Conv kernels
``N(0, 1/fan_in)``, embeddings ``N(0, 0.02^2)``, norm scales 1, biases 0. Unlike ``init_params`` no layer starts at
zero, so the temporal layers (zero-initialised for fine-tuning, §4.4) are active and exercised.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import Any, Mapping

import jax
import numpy as np

from vidrd_jax import checkpoints, cli
from vidrd_jax.diffusion.schedule import NoiseSchedule
from vidrd_jax.models import factory
from vidrd_jax.models.text_encoder import CLIPTextConfig
from vidrd_jax.models.unet3d import UNet3DConfig
from vidrd_jax.models.vae import VAEConfig

SOURCE = "vidrd_jax.make_tiny_checkpoint"


def random_params(kind: str, config: Any, rng: np.random.Generator) -> dict[str, Any]:
    """Random parameters with the shapes and dtypes of ``factory.abstract_params(kind, config)`` (module docstring)."""
    def draw(path, leaf):
        name = path[-1].key
        shape = tuple(leaf.shape)
        if name == "scale":
            values = np.ones(shape)
        elif name == "bias":
            values = np.zeros(shape)
        elif name == "embedding":
            values = rng.normal(0.0, 0.02, shape)
        elif name == "kernel":
            values = rng.normal(0.0, 1.0 / math.sqrt(math.prod(shape[:-1])), shape)
        else:
            raise ValueError(f"random_params: no rule for parameter {jax.tree_util.keystr(path)} of {kind}")
        return values.astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(draw, factory.abstract_params(kind, config))


def make_tiny_checkpoint(out: str, seed: int = 0, *, unet_overrides: Mapping[str, Any] | None = None,
                         vae_overrides: Mapping[str, Any] | None = None,
                         text_encoder_overrides: Mapping[str, Any] | None = None) -> str:
    """Draws the three tiny models' parameters from ``seed`` and saves them to ``out``; returns the absolute path.

    ``out`` is replaced as a whole, and only once the checkpoint is complete (``cli.atomic_directory``).
    ``*_overrides`` change fields of the tiny configs (e.g. ``unet_overrides={"block_out_channels": (64, 128)}``);
    the UNet's ``cross_attention_dim`` follows the text encoder's ``hidden_size`` unless overridden.
    """
    text_cfg = CLIPTextConfig.tiny(**dict(text_encoder_overrides or {}))
    unet_cfg = UNet3DConfig.tiny(**{"cross_attention_dim": text_cfg.hidden_size, **dict(unet_overrides or {})})
    vae_cfg = VAEConfig.tiny(**dict(vae_overrides or {}))
    configs = {"unet": unet_cfg, "vae": vae_cfg, "text_encoder": text_cfg}
    rng = np.random.default_rng(seed)
    params = {kind: random_params(kind, cfg, rng) for kind, cfg in configs.items()}
    model_config: dict[str, Any] = {kind: cfg.to_dict() for kind, cfg in configs.items()}
    model_config.update(tokenizer=None, scheduler=NoiseSchedule.sd21_base().to_dict(), source=f"{SOURCE} seed={seed}")
    with cli.atomic_directory(out) as tmp:
        checkpoints.save_inference_checkpoint(tmp, params, model_config)
    return checkpoints.absolute(out)


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (bad arguments: one ``error: ...`` line and 2)."""
    return cli.run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vidrd_jax.make_tiny_checkpoint", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    parser.add_argument("--seed", type=int, default=0, help="parameter seed")
    args = parser.parse_args(argv)
    cli.check_output_dir(args.out, "--out", overwrite=args.overwrite)
    print(f"wrote {make_tiny_checkpoint(args.out, args.seed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
