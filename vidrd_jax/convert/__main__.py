"""Weight conversion CLI.

    # SD-2.1 diffusers folder -> inference checkpoint (fresh, zero-initialised temporal layers)
    python -m vidrd_jax.convert sd --folder stable-diffusion-2-1-base --out ckpt/sd21_video
    # the official VidRD release
    python -m vidrd_jax.convert vidrd --checkpoint ModelT2V.pth --vae vae_finetuned --sd21 stable-diffusion-2-1-base \
        --out ckpt/vidrd
    # back to PyTorch: diffusers/transformers folders (2D weights) + temporal weights in VidRD key names
    python -m vidrd_jax.convert to-diffusers --checkpoint ckpt/vidrd --out vidrd_diffusers
"""
from __future__ import annotations

import argparse
import os
import sys

from vidrd_jax import checkpoints, cli
from vidrd_jax.convert.sd_folder import convert_sd_folder
from vidrd_jax.convert.to_diffusers import export_diffusers
from vidrd_jax.convert.vidrd_release import convert_vidrd_release


def write_checkpoint(out: str, params: dict, model_config: dict) -> None:
    """Saves an inference checkpoint and copies the tokenizer files into it (so it is self-contained).

    Written into a temporary directory beside ``out`` that replaces it on success (``cli.atomic_directory``).
    """
    with cli.atomic_directory(out) as tmp:
        checkpoints.save_inference_checkpoint(tmp, params, checkpoints.copy_tokenizer(model_config, tmp))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vidrd_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sd = sub.add_parser("sd", help="diffusers SD folder -> inference checkpoint")
    sd.add_argument("--folder", required=True)
    sd.add_argument("--variant", default=None, help="weights variant, e.g. fp16")
    sd.add_argument("--groupnorm-scope", choices=("clip", "frame"), default="frame",
                    help="GroupNorm statistics of ResNets, Temp-Convs and conv_norm_out: 'frame' (default) per "
                         "frame, so with the default embedding a fresh video UNet is exactly SD per frame; 'clip' "
                         "(the official release's) pools them over the clip, so it is no longer per-frame SD")
    sd.add_argument("--temporal-position-embedding", choices=("attention", "residual", "none"), default="attention",
                    help="where Temp-Attn's frame embedding goes: 'attention' (default) only feeds Temp-Attn, so a "
                         "fresh block is the identity; 'residual' (the official release's) adds it to the residual "
                         "stream, so a fresh video UNet is no longer per-frame SD (see temporal_layers.py)")
    sd.add_argument("--no-temporal", action="store_true", help="2D model only (no temporal layers)")
    sd.add_argument("--out", required=True)
    vidrd = sub.add_parser("vidrd", help="official VidRD release -> inference checkpoint")
    vidrd.add_argument("--checkpoint", required=True, help="ModelT2V.pth")
    vidrd.add_argument("--vae", required=True, help="vae_finetuned/ folder")
    vidrd.add_argument("--sd21", default=None, help="SD-2.1 diffusers folder (text encoder, tokenizer, scheduler)")
    vidrd.add_argument("--groupnorm-scope", choices=("clip", "frame"), default="clip",
                       help="'clip' (default): GroupNorm statistics pooled over the clip, as the release was trained; "
                            "'frame': per frame")
    vidrd.add_argument("--out", required=True)
    back = sub.add_parser("to-diffusers", help="inference checkpoint -> diffusers/transformers folders")
    back.add_argument("--checkpoint", required=True)
    back.add_argument("--out", required=True)
    for command in (sd, vidrd, back):
        command.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit status (bad input: one ``error: ...`` line and 2, before any conversion)."""
    return cli.run_cli(_main, argv)


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    cli.check_output_dir(args.out, "--out", overwrite=args.overwrite)
    if args.command == "sd":
        params, model_config = convert_sd_folder(
            args.folder, variant=args.variant,
            unet_overrides={"use_temporal": not args.no_temporal, "groupnorm_scope": args.groupnorm_scope,
                            "temporal_position_embedding": args.temporal_position_embedding},
            vae_overrides={"use_temporal_decoder": not args.no_temporal})
        write_checkpoint(args.out, params, model_config)
    elif args.command == "vidrd":
        params, model_config = convert_vidrd_release(args.checkpoint, args.vae, args.sd21, args.groupnorm_scope)
        write_checkpoint(args.out, params, model_config)
    else:
        params, model_config = checkpoints.load_inference_checkpoint(args.checkpoint)
        with cli.atomic_directory(args.out) as tmp:
            export_diffusers(params, model_config, tmp, checkpoint_dir=args.checkpoint)
    print(f"wrote {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
