r"""Text-to-long-video CLI: config + inference checkpoint + prompts -> mp4, GIF, PNG contact sheet and a JSON record.

    python -m vidrd_jax.generate --config configs/generate_default.py --checkpoint ckpt/vidrd \
        --prompt "a corgi running on the beach" --num_clips 8 --seed 0 --out out/corgi.mp4
    python -m vidrd_jax.generate ... --mode codenoise --num_frames 32 --prompt "sunrise" --prompt "noon" --out o.mp4
    python -m vidrd_jax.generate ... --batch_prompts_file prompts.txt --out out/batch.mp4 --config.num_steps=25

Prompts
  ``--prompt`` (repeatable) describes ONE video. ``--mode vidrd``: one prompt for every clip, or one per clip (as
  many as ``--num_clips``; clip i takes prompt i). ``--mode codenoise``: at most one per window; prompt p is
  anchored at window ``round(p (W-1) / (P-1))`` and each window takes the nearest anchor's prompt.
  ``--batch_prompts_file``: one video per non-empty line; all videos are sampled together as one batch through the
  model (one compiled program, B = number of lines). Within a line, ``|`` separates per-clip (per-window) prompts;
  every line must give the same number. The negative prompt (``config.negative_prompt``) is shared.

Outputs (``--out`` ends in .mp4 or .webm)
  one video:  OUT.mp4, OUT.gif, OUT.png (contact sheet) and OUT.json
  a batch:    OUT_0.mp4, OUT_0.gif, OUT_0.png, OUT_1.mp4, ... and one OUT.json
  The JSON records every setting, the seed, the prompts, the checkpoint, each clip's DSG steps and timings, and a
  SHA-256 of each video's raw frames (same seed -> same frames -> same hash). Frames are decoded one clip at a time
  and streamed to the writers; the contact sheet keeps ``config.contact_sheet.max_frames`` evenly spaced frames.

Flags ``--mode``, ``--num_clips`` (vidrd), ``--num_frames`` (codenoise) and ``--seed`` set ``config.mode``,
``config.vidrd.num_clips``, ``config.codenoise.num_frames`` and ``config.seed``; every other setting is a
``--config.FIELD=VALUE`` override (``configs/generate_default.py`` lists them; ``--config.solver=dpm_solver++``
samples either mode with DPM-Solver++(2M) instead of DDIM). Bad arguments, config values, outputs or checkpoints
print one ``error: ...`` line and exit with status 2, before any sampling. The schema and the modes live in
``vidrd_jax.generate_config``, the writers and the JSON record in ``vidrd_jax.generate_writers``.

Every output is written under a temporary name beside it and renamed into place only when all of them are complete,
so an interrupted or failed run leaves the earlier files at the same ``--out`` as they were.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections

from vidrd_jax import cli
from vidrd_jax.cli import UsageError
from vidrd_jax.generate_config import (MODES, PROMPT_SEPARATOR, check_prompt_count, co_denoise_config,
                                       data_parallel_mesh, long_video_config, read_prompts, sampler_config,
                                       validate_config)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "generate_default.py"
__all__ = ["PROMPT_SEPARATOR", "UsageError", "co_denoise_config", "long_video_config", "main", "run",
           "validate_config"]


def check_checkpoint(directory: str | None, config: ml_collections.ConfigDict, out_ext: str) -> dict[str, Any]:
    """The checkpoint's model_config; checks the resolution against its VAE and UNet downsampling."""
    from vidrd_jax import checkpoints
    from vidrd_jax.models import factory

    if not directory:
        raise UsageError("--checkpoint is required (an inference checkpoint directory)")
    if not os.path.exists(directory):
        raise UsageError(f"--checkpoint: directory {directory!r} does not exist")
    try:
        model_config = checkpoints.load_model_config(directory)
        vae = factory.config_from_dict("vae", model_config["vae"])
        unet = factory.config_from_dict("unet", model_config["unet"])
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--checkpoint: {e}") from None
    vae_factor, unet_factor = factory.downsampling_factor(vae), factory.downsampling_factor(unet)
    multiple = vae_factor * unet_factor
    if config.resolution % multiple:
        below = config.resolution // multiple * multiple
        raise UsageError(f"config.resolution={config.resolution} must be a multiple of {multiple} (VAE factor "
                         f"{vae_factor} x UNet downsampling {unet_factor}); nearest: "
                         f"{below or multiple} or {below + multiple}")
    if out_ext == ".mp4" and config.resolution % 2:
        raise UsageError(f"config.resolution={config.resolution} must be even for H.264 (.mp4) output")
    return model_config


def run(config: ml_collections.ConfigDict, checkpoint: str, rows: list[tuple[str, ...]], out: str, *,
        batched: bool = False, progress: bool = True, command: Sequence[str] = ()) -> dict[str, Any]:
    """Validates everything, generates the videos, writes them and the JSON record; returns the record.

    Raises :class:`UsageError` for bad settings, prompts, outputs or checkpoints before any sampling starts.
    """
    from vidrd_jax.generate_writers import VideoSink, chunk_record, output_paths, run_record

    started = time.perf_counter()
    validate_config(config)
    mode = MODES[config.mode]
    check_prompt_count(config, len(rows[0]), "--batch_prompts_file" if batched else "--prompt")
    sampler = sampler_config(config, rows[0])
    paths, json_path = output_paths(out, len(rows), batched)
    model_config = check_checkpoint(checkpoint, config, os.path.splitext(out)[1].lower())
    mesh = data_parallel_mesh(config, len(rows))

    import jax

    from vidrd_jax.pipeline import VideoPipeline, num_output_frames

    try:
        pipeline = VideoPipeline.from_checkpoint(checkpoint, progress=progress, mesh=mesh)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--checkpoint: {e}") from None
    setup_seconds = time.perf_counter() - started

    chunks = mode.sample(pipeline, sampler, config, jax.random.key(config.seed), rows, height=config.resolution,
                         width=config.resolution)
    total = num_output_frames(sampler)
    sheet = config.contact_sheet
    records = []
    with cli.AtomicFiles() as files, contextlib.ExitStack() as stack:  # files renamed into place after the JSON
        stack.enter_context(contextlib.closing(chunks))
        sinks = [VideoSink(p, files, config.fps, total, sheet.max_frames, sheet.columns) for p in paths]
        for writer in (w for sink in sinks for w in sink.writers):
            stack.enter_context(writer)  # on an error the files are released unfinished; close() is idempotent
        for chunk in chunks:
            start = time.perf_counter()
            for sink, frames in zip(sinks, chunk.frames):
                sink.write(frames)
            records.append(chunk_record(chunk, time.perf_counter() - start))
        videos = [{"index": b, "prompts": list(row), **sink.close()} for b, (sink, row) in enumerate(zip(sinks, rows))]
        record = run_record(
            config=config, checkpoint=checkpoint, model_config=model_config, rows=rows, sampler=sampler,
            frames_per_video=total, videos=videos, chunks_key=mode.chunks_key, chunks=records,
            extra=mode.extra_record(sampler), setup_seconds=setup_seconds,
            total_seconds=time.perf_counter() - started, command=command, jax_version=jax.__version__,
            device=str(jax.devices()[0].device_kind))
        with open(files.path(json_path), "w") as f:
            json.dump(record, f, indent=2)
    return record


# --- command line ------------------------------------------------------------------------------------------------

def _define_flags(argv: Sequence[str]):
    """A fresh absl ``FlagValues`` (no process-global flags, so ``main`` can run many times in one process)."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", str(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None,
        "Sampling config file (configs/generate_default.py); override fields with --config.FIELD=VALUE.",
        flag_values=fv, lock_config=True, sys_argv=list(argv))
    flags.DEFINE_string("checkpoint", None, "Inference checkpoint directory.", flag_values=fv)
    flags.DEFINE_multi_string("prompt", None, "A prompt (repeatable: per clip / per window) of one video.",
                              flag_values=fv)
    flags.DEFINE_string("batch_prompts_file", None, "Text file, one video per line ('|' separates per-clip prompts).",
                        flag_values=fv)
    flags.DEFINE_enum("mode", None, list(MODES), "Sets config.mode.", flag_values=fv)
    flags.DEFINE_integer("num_clips", None, "vidrd: number of clips K (sets config.vidrd.num_clips).", flag_values=fv)
    flags.DEFINE_integer("num_frames", None, "codenoise: video length L (sets config.codenoise.num_frames).",
                         flag_values=fv)
    flags.DEFINE_integer("seed", None, "Sets config.seed.", flag_values=fv)
    flags.DEFINE_string("out", None, "Output video path (.mp4 or .webm); .gif/.png/.json are written beside it.",
                        flag_values=fv)
    flags.DEFINE_boolean("progress", True, "tqdm bars over clips and denoising steps.", flag_values=fv)
    return fv


def _apply_flags(fv) -> ml_collections.ConfigDict:
    config = fv.config
    if config is None:
        raise UsageError("--config is required (e.g. configs/generate_default.py)")
    if not isinstance(config, ml_collections.ConfigDict):
        try:
            config.mode  # a config file that failed to load raises its error on first use
        except OSError as e:
            raise UsageError(f"--config: {e}") from None
        raise UsageError(f"--config: get_config() must return an ml_collections.ConfigDict, got {type(config)}")
    if fv.out is None:
        raise UsageError("--out is required (e.g. out/video.mp4)")
    if fv.mode is not None:
        config.mode = fv.mode
    for mode in MODES.values():  # --num_clips / --num_frames: the length of their own mode only
        value = getattr(fv, mode.length_flag)
        if value is None:
            continue
        if config.mode != mode.name:
            others = [f"--{m.length_flag} for {m.name}" for m in MODES.values() if m.name != mode.name]
            raise UsageError(f"--{mode.length_flag} applies to --mode {mode.name}; use {', '.join(others)}")
        config[mode.name][mode.length_flag] = value
    if fv.seed is not None:
        config.seed = fv.seed
    return config


def _main(argv: list[str]) -> int:
    try:
        fv = _define_flags(argv)
        if any(a in ("-h", "--help", "--helpfull") for a in argv[1:]):
            print(__doc__)
            print(fv.get_help())
            return 0
        extra = fv(argv)[1:]
    except (KeyError, AttributeError) as e:  # --config.FIELD=VALUE naming a field the config does not have
        message = e
        while isinstance(message, BaseException) and message.args:
            message = message.args[0]
        raise UsageError(f"--config override of an unknown field: {message}") from None
    except Exception as e:  # flag and config-file parsing: a user error, reported without a traceback
        raise UsageError(str(e)) from None
    if extra:
        raise UsageError(f"unexpected arguments {extra}")
    config = _apply_flags(fv)
    rows, batched = read_prompts(fv.prompt, fv.batch_prompts_file)
    record = run(config, fv.checkpoint, rows, fv.out, batched=batched, progress=fv.progress,
                 command=["python -m vidrd_jax.generate", *argv[1:]])
    files = [path for video in record["videos"] for path in video["files"].values()]
    print(f"wrote {len(record['videos'])} video(s) of {record['frames_per_video']} frames: {', '.join(files)}, "
          f"{os.path.splitext(fv.out)[0]}.json ({record['timings']['total_s']:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the CLI on ``argv`` (``argv[0]`` is the program name; default ``sys.argv``); returns the exit status."""
    return cli.run_cli(_main, list(sys.argv if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
