r"""Video metrics from the command line: score a folder of videos, or run the UCF-101 zero-shot recipe.

    # every metric whose weights are given; flickering, dynamic degree (and junctions with --clip-frames) always
    python -m vidrd_jax.evaluate --videos out/ --prompts prompts.json --clip-model models/clip-vit-base-patch32 \
        --real ucf101/ --i3d i3d_pretrained_400.pt --clip-frames 8 --cache cache/ --out results.json
    # UCF-101 zero-shot: generate N videos per class with a checkpoint (resumable), then score them
    python -m vidrd_jax.evaluate ucf101 --checkpoint ckpt/vidrd --real UCF-101/ --samples-per-class 100 \
        --clip-model models/clip-vit-base-patch32 --i3d i3d_pretrained_400.pt --out runs/ucf101

``--prompts`` is a JSON object ``{video name: prompt or [per-clip prompts]}`` (name: path relative to the
``--videos`` directory, file name, or file name without extension). ``--clip-model`` is a transformers folder of a
``CLIPModel`` (CLIPSIM + consistency) or ``CLIPVisionModelWithProjection`` (consistency only). Results: ``--out``
JSON and a markdown table beside it (``results.md``). Bad input: one ``error: ...`` line, exit status 2.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

import numpy as np

from vidrd_jax import cli
from vidrd_jax.evaluate import protocol


def _common(parser: argparse.ArgumentParser) -> None:
    models = parser.add_argument_group("metric models (each metric runs when its weights are given)")
    models.add_argument("--clip-model", help="transformers CLIP folder: CLIPSIM, frame and subject consistency")
    models.add_argument("--i3d", help="Kinetics-400 I3D weights (i3d_pretrained_400.pt or .flax) for FVD; needs --real")
    models.add_argument("--c3d", help="UCF-101 C3D weights (TGANv2's conv3d_deepnetA_ucf.npz) for the Inception "
                        "Score; needs --c3d-mean")
    models.add_argument("--c3d-mean", help="the C3D's mean clip (TGANv2's mean2.npz)")
    opts = parser.add_argument_group("evaluation")
    opts.add_argument("--real", help="directory or glob of real videos (FVD reference)")
    opts.add_argument("--max-real", type=int, help="use at most this many real videos, evenly spaced in sorted order")
    opts.add_argument("--fvd-frames", type=int, default=16, help="frames per video for FVD (default 16; IS takes 16)")
    opts.add_argument("--fvd-stride", type=int, default=1, help="take every n-th frame for FVD")
    opts.add_argument("--is-splits", type=int, default=1, help="Inception Score splits (default 1)")
    opts.add_argument("--flow", choices=("farneback", "dis"), default="farneback",
                      help="OpenCV optical flow for the dynamic degree")
    opts.add_argument("--fps", type=float, help="frame rate for the dynamic degree (default: each file's own)")
    opts.add_argument("--cache", help="feature cache directory (.npz per video file and model)")
    opts.add_argument("--feature-batch-size", type=int, default=16, help="videos (I3D/C3D) or frames (CLIP) per "
                      "device batch, rounded up to a multiple of the device count")
    opts.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bars")


def _parsers() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    fmt = argparse.RawDescriptionHelpFormatter
    videos = argparse.ArgumentParser(prog="python -m vidrd_jax.evaluate", description=__doc__, formatter_class=fmt)
    videos.add_argument("--videos", required=True, help="directory (searched recursively) or glob of videos")
    videos.add_argument("--prompts", help="JSON {video name: prompt | [per-clip prompts]} for CLIPSIM")
    videos.add_argument("--clip-frames", type=int, help="frames per clip of long videos: junction metrics and "
                        "per-clip prompts")
    videos.add_argument("--first-clip-frames", type=int, help="the first clip's length when it differs")
    videos.add_argument("--out", required=True, help="results JSON (the markdown table goes beside it, .md)")
    _common(videos)
    ucf = argparse.ArgumentParser(prog="python -m vidrd_jax.evaluate ucf101", formatter_class=fmt,
                                  description="UCF-101 zero-shot: generate samples per class, then score them.")
    ucf.add_argument("--checkpoint", required=True, help="inference checkpoint directory")
    ucf.add_argument("--out", required=True, help="output directory (videos/, prompts.json, results.json/.md); "
                     "an existing one is resumed")
    ucf.add_argument("--class-prompts", default=str(protocol.UCF101_PROMPTS),
                     help="'ClassName: prompt' lines (default: ours, vidrd_jax/evaluate/ucf101_prompts.txt)")
    defaults = protocol.UCF101Settings()
    for name, kind in (("samples_per_class", int), ("batch_size", int), ("resolution", int), ("num_clips", int),
                       ("clip_frames", int), ("num_prompt_frames", int), ("num_steps", int),
                       ("guidance_scale", float), ("seed", int), ("fps", float)):
        flag = "--gen-fps" if name == "fps" else f"--{name.replace('_', '-')}"
        ucf.add_argument(flag, dest=f"gen_{name}", type=kind, default=getattr(defaults, name),
                         help=f"generation: {name} (default {getattr(defaults, name)})")
    _common(ucf)
    return videos, ucf


def _real_videos(args: argparse.Namespace) -> list[str] | None:
    if not args.real:
        return None
    real = protocol.list_videos(args.real, "--real")
    if args.max_real is not None:
        if args.max_real < 2:
            raise cli.UsageError(f"--max-real must be >= 2, got {args.max_real}")
        if args.max_real < len(real):
            real = [real[i] for i in np.linspace(0, len(real) - 1, args.max_real).round().astype(int)]
    return real


def _evaluator(args: argparse.Namespace, settings: protocol.EvalSettings) -> protocol.Evaluator:
    """Loads the models whose weights were given (user errors name the flag)."""
    from vidrd_jax.evaluate.features import weights_signature

    clip = i3d = c3d = None
    if args.clip_model:
        from vidrd_jax.evaluate.clip_metrics import CLIPEmbedder

        if not os.path.isdir(args.clip_model):
            raise cli.UsageError(f"--clip-model: {args.clip_model!r} is not a directory")
        try:
            clip = CLIPEmbedder.from_folder(args.clip_model, batch_size=args.feature_batch_size)
        except (OSError, ValueError) as e:
            raise cli.UsageError(f"--clip-model: {e}") from None
    if args.i3d:
        from vidrd_jax.evaluate import fvd

        try:
            i3d = (fvd.load_i3d_extractor(args.i3d, batch_size=args.feature_batch_size), weights_signature(args.i3d))
        except (OSError, ValueError) as e:
            raise cli.UsageError(f"--i3d: {e}") from None
    if args.c3d or args.c3d_mean:
        from vidrd_jax.evaluate import inception_score

        if not (args.c3d and args.c3d_mean):
            raise cli.UsageError("the Inception Score needs both --c3d and --c3d-mean")
        try:
            c3d = (inception_score.load_c3d_extractor(args.c3d, args.c3d_mean, batch_size=args.feature_batch_size),
                   f"{weights_signature(args.c3d)} {weights_signature(args.c3d_mean)}")
        except (OSError, ValueError) as e:
            raise cli.UsageError(f"--c3d: {e}") from None
    return protocol.Evaluator(settings, clip=clip, i3d=i3d, c3d=c3d, cache_dir=args.cache,
                              batch_size=args.feature_batch_size)


def _settings(args: argparse.Namespace, clip_frames: int | None, first_clip_frames: int | None
              ) -> protocol.EvalSettings:
    if args.feature_batch_size < 1:
        raise cli.UsageError(f"--feature-batch-size must be >= 1, got {args.feature_batch_size}")
    try:
        return protocol.EvalSettings(clip_frames=clip_frames, first_clip_frames=first_clip_frames, fps=args.fps,
                                     flow_method=args.flow, fvd_frames=args.fvd_frames, fvd_stride=args.fvd_stride,
                                     is_splits=args.is_splits)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None


def _summary(record: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    videos_parser, ucf_parser = _parsers()
    if argv[:1] == ["ucf101"]:
        args = ucf_parser.parse_args(argv[1:])
        cli.check_output_dir(args.out, "--out", overwrite=True)
        if args.i3d and not args.real:
            raise cli.UsageError("--i3d (FVD) needs --real, a folder of real UCF-101 videos")
        gen = protocol.UCF101Settings(**{k[4:]: v for k, v in vars(args).items() if k.startswith("gen_")})
        gen.sampler("-")
        settings = _settings(args, gen.clip_frames, None)
        real = _real_videos(args)
        record = protocol.run_ucf101(args.checkpoint, args.out, real, _evaluator(args, settings), gen,
                                     class_prompts=args.class_prompts, progress=args.progress,
                                     command=["python -m vidrd_jax.evaluate", *argv])
        print(f"wrote {os.path.join(args.out, 'results.json')} and results.md: {record['num_videos']} videos "
              f"({record['protocol']['generated']} generated); {_summary(record)}")
        return 0
    args = videos_parser.parse_args(argv)
    cli.check_output_file(args.out, "--out")
    settings = _settings(args, args.clip_frames, args.first_clip_frames)
    videos = protocol.list_videos(args.videos, "--videos")
    root = args.videos if os.path.isdir(args.videos) else None
    prompts = protocol.read_video_prompts(args.prompts, videos, root) if args.prompts else None
    real = _real_videos(args)
    if args.i3d and not real:
        raise cli.UsageError("--i3d (FVD) needs --real, a folder of real videos")
    record = _evaluator(args, settings).evaluate(videos, prompts, real, progress=args.progress)
    record["command"] = ["python -m vidrd_jax.evaluate", *argv]
    json_path, md_path = protocol.write_results(record, args.out)
    print(f"wrote {json_path} and {md_path}: {record['num_videos']} videos; {_summary(record)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
