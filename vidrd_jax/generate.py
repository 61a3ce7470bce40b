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
``--config.FIELD=VALUE`` override (``configs/generate_default.py`` lists them). Bad arguments, config values,
outputs or checkpoints print one ``error: ...`` line and exit with status 2, before any sampling.

Every output is written under a temporary name beside it and renamed into place only when all of them are complete,
so an interrupted or failed run leaves the earlier files at the same ``--out`` as they were.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np

from vidrd_jax import cli
from vidrd_jax.cli import UsageError
from vidrd_jax.diffusion import CoDenoiseConfig, LongVideoConfig

MODES = ("vidrd", "codenoise")
VIDEO_EXTENSIONS = (".mp4", ".webm")
PROMPT_SEPARATOR = "|"
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "generate_default.py"
_SHARED = ("prompts", "num_steps", "eta", "guidance_scale", "negative_prompt")
CONFIG_FIELDS = {
    "": ("mode", "seed", "resolution", "num_steps", "eta", "guidance_scale", "negative_prompt", "fps", "vidrd",
         "codenoise", "contact_sheet"),
    "vidrd": tuple(f.name for f in dataclasses.fields(LongVideoConfig) if f.name not in _SHARED),
    "codenoise": tuple(f.name for f in dataclasses.fields(CoDenoiseConfig) if f.name not in _SHARED)
    + ("decode_frames",),
    "contact_sheet": ("max_frames", "columns"),
}


# --- config ------------------------------------------------------------------------------------------------------

def _check_number(name: str, value: Any, *, integer: bool = False, low: float = 0.0, low_open: bool = False) -> None:
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > low if low_open else value >= low)
    if not ok:
        what = "an int" if integer else "a finite number"
        raise UsageError(f"config.{name} must be {what} {'>' if low_open else '>='} {low:g}, got {value!r}")


def long_video_config(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> LongVideoConfig:
    """The VidRD sampler settings of ``config`` for one video's per-clip ``prompts`` (raises ``ValueError``)."""
    v = config.vidrd
    return LongVideoConfig(
        prompts=tuple(prompts), num_clips=v.num_clips, num_frames=v.num_frames, num_prompt_frames=v.num_prompt_frames,
        pns_alpha=v.pns_alpha, dsg_beta=v.dsg_beta, num_steps=config.num_steps, eta=config.eta,
        guidance_scale=config.guidance_scale, negative_prompt=config.negative_prompt,
        frame_mapping=v.frame_mapping, output=v.output)


def co_denoise_config(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> CoDenoiseConfig:
    """The co-denoising settings of ``config`` for one video's per-window ``prompts`` (raises ``ValueError``)."""
    w = config.codenoise
    return CoDenoiseConfig(
        prompts=tuple(prompts), num_frames=w.num_frames, window_size=w.window_size, stride=w.stride,
        weighting=w.weighting, gaussian_sigma=w.gaussian_sigma, window_chunk_size=w.window_chunk_size or None,
        num_steps=config.num_steps, eta=config.eta, guidance_scale=config.guidance_scale,
        negative_prompt=config.negative_prompt)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises :class:`UsageError` naming the first bad field (``config.vidrd.dsg_beta`` ...)."""
    for group, names in CONFIG_FIELDS.items():
        node = config[group] if group else config
        prefix = f"config.{group}" if group else "config"
        if not isinstance(node, (ml_collections.ConfigDict, dict)):
            raise UsageError(f"{prefix} must be a group of fields, got {node!r}")
        unknown, missing = sorted(set(node.keys()) - set(names)), sorted(set(names) - set(node.keys()))
        if unknown or missing:
            raise UsageError(f"{prefix}: unknown field(s) {unknown}, missing field(s) {missing}")
    if config.mode not in MODES:
        raise UsageError(f"config.mode must be one of {MODES}, got {config.mode!r}")
    _check_number("seed", config.seed, integer=True)
    _check_number("resolution", config.resolution, integer=True, low_open=True)
    _check_number("num_steps", config.num_steps, integer=True, low=1)
    _check_number("eta", config.eta)
    _check_number("guidance_scale", config.guidance_scale)
    _check_number("fps", config.fps, low_open=True)
    if not isinstance(config.negative_prompt, str):
        raise UsageError(f"config.negative_prompt must be a string, got {config.negative_prompt!r}")
    _check_number("codenoise.window_chunk_size", config.codenoise.window_chunk_size, integer=True)
    _check_number("codenoise.decode_frames", config.codenoise.decode_frames, integer=True, low=1)
    _check_number("contact_sheet.max_frames", config.contact_sheet.max_frames, integer=True, low=1)
    _check_number("contact_sheet.columns", config.contact_sheet.columns, integer=True, low=1)
    for group, build in (("vidrd", long_video_config), ("codenoise", co_denoise_config)):
        try:
            build(config, ["-"])
        except ValueError as e:
            raise UsageError(f"config.{group}: {e}") from None


def sampler_config(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> LongVideoConfig | CoDenoiseConfig:
    """The active mode's sampler settings; prompt-count problems raise :class:`UsageError`."""
    build = long_video_config if config.mode == "vidrd" else co_denoise_config
    try:
        return build(config, prompts)
    except ValueError as e:
        raise UsageError(f"config.{config.mode}: {e}") from None


# --- prompts -----------------------------------------------------------------------------------------------------

def read_prompts(prompts: Sequence[str] | None, batch_file: str | None) -> tuple[list[tuple[str, ...]], bool]:
    """``([B][P] prompts, batched)`` from ``--prompt`` values (one video) or ``--batch_prompts_file``."""
    if prompts and batch_file:
        raise UsageError("give --prompt or --batch_prompts_file, not both")
    if batch_file:
        if not os.path.isfile(batch_file):
            raise UsageError(f"--batch_prompts_file: {batch_file!r} is not a file")
        with open(batch_file, encoding="utf-8") as f:
            lines = [(n, line.strip()) for n, line in enumerate(f, 1) if line.strip()]
        if not lines:
            raise UsageError(f"--batch_prompts_file: {batch_file!r} has no prompts")
        rows = []
        for n, line in lines:
            row = tuple(p.strip() for p in line.split(PROMPT_SEPARATOR))
            if not all(row):
                raise UsageError(f"--batch_prompts_file: line {n} has an empty prompt: {line!r}")
            if rows and len(row) != len(rows[0]):
                raise UsageError(f"--batch_prompts_file: line {n} has {len(row)} prompts but line {lines[0][0]} has "
                                 f"{len(rows[0])}: every video needs the same number of per-clip prompts")
            rows.append(row)
        return rows, True
    if not prompts:
        raise UsageError("no prompt: give --prompt (repeatable) or --batch_prompts_file")
    for i, prompt in enumerate(prompts):
        if not prompt.strip():
            raise UsageError(f"--prompt: prompt {i + 1} of {len(prompts)} is empty")
    return [tuple(prompts)], False


def check_prompt_count(config: ml_collections.ConfigDict, count: int, source: str) -> None:
    """Per-video prompt count against the mode: 1 or num_clips (vidrd), at most the window count (codenoise)."""
    if config.mode == "vidrd":
        k = config.vidrd.num_clips
        if count not in (1, k):
            raise UsageError(f"{source}: {count} prompts for --num_clips {k}: give 1 (every clip) or {k} (one per "
                             "clip)")
    else:
        windows = co_denoise_config(config, ["-"]).num_windows
        if count > windows:
            raise UsageError(f"{source}: {count} prompts but --num_frames {config.codenoise.num_frames} gives only "
                             f"{windows} window(s) (at most one prompt per window)")


# --- checkpoint --------------------------------------------------------------------------------------------------

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
    vae_factor = 2 ** (len(vae.block_out_channels) - 1)
    multiple = vae_factor * 2 ** (len(unet.block_out_channels) - 1)
    if config.resolution % multiple:
        below = config.resolution // multiple * multiple
        raise UsageError(f"config.resolution={config.resolution} must be a multiple of {multiple} (VAE factor "
                         f"{vae_factor} x UNet downsampling {multiple // vae_factor}); nearest: "
                         f"{below or multiple} or {below + multiple}")
    if out_ext == ".mp4" and config.resolution % 2:
        raise UsageError(f"config.resolution={config.resolution} must be even for H.264 (.mp4) output")
    return model_config


# --- outputs -----------------------------------------------------------------------------------------------------

def output_paths(out: str, num_videos: int, batched: bool) -> tuple[list[dict[str, str]], str]:
    """Per-video ``{"video", "gif", "png"}`` paths and the JSON path (module docstring); each must be writable."""
    stem, ext = os.path.splitext(out)
    if ext.lower() not in VIDEO_EXTENSIONS:
        raise UsageError(f"--out must end in one of {VIDEO_EXTENSIONS}, got {out!r}")
    stems = [f"{stem}_{b}" for b in range(num_videos)] if batched else [stem]
    paths = [{"video": s + ext, "gif": s + ".gif", "png": s + ".png"} for s in stems]
    for path in [p for video in paths for p in video.values()] + [stem + ".json"]:
        cli.check_output_file(path, "--out")
    return paths, stem + ".json"


class VideoSink:
    """One video's writers: streams frames to the video file and the GIF, hashes them, keeps contact-sheet frames.

    The files are written to temporary names from ``files`` (renamed into place when the whole run succeeds).
    """

    def __init__(self, paths: dict[str, str], files: cli.AtomicFiles, fps: float, total_frames: int,
                 sheet_frames: int, columns: int):
        from vidrd_jax import media

        self._media = media
        self.paths = paths
        self.columns = columns
        self.writers = [media.VideoWriter(files.path(paths["video"]), fps),
                        media.VideoWriter(files.path(paths["gif"]), fps)]
        self._sheet_path = files.path(paths["png"])
        count = min(total_frames, sheet_frames)
        self._sheet_indices = set(np.round(np.linspace(0, total_frames - 1, count)).astype(int).tolist())
        self._sheet: list[np.ndarray] = []
        self._hash = hashlib.sha256()
        self.num_frames = 0

    def write(self, frames: np.ndarray) -> None:
        """Appends uint8 ``[F, H, W, 3]`` frames."""
        frames = np.ascontiguousarray(frames)
        for writer in self.writers:
            writer.write(frames)
        self._hash.update(frames.tobytes())
        self._sheet.extend(frame for i, frame in enumerate(frames, self.num_frames) if i in self._sheet_indices)
        self.num_frames += len(frames)

    def close(self) -> dict[str, Any]:
        for writer in self.writers:
            writer.close()
        self._media.write_contact_sheet(self._sheet_path, np.stack(self._sheet), columns=self.columns)
        return {"files": dict(self.paths), "num_frames": self.num_frames, "frames_sha256": self._hash.hexdigest()}


# --- the run -----------------------------------------------------------------------------------------------------

def run(config: ml_collections.ConfigDict, checkpoint: str, rows: list[tuple[str, ...]], out: str, *,
        batched: bool = False, progress: bool = True, command: Sequence[str] = ()) -> dict[str, Any]:
    """Validates everything, generates the videos, writes them and the JSON record; returns the record.

    Raises :class:`UsageError` for bad settings, prompts, outputs or checkpoints before any sampling starts.
    """
    started = time.perf_counter()
    validate_config(config)
    source = "--batch_prompts_file" if batched else "--prompt"
    check_prompt_count(config, len(rows[0]), source)
    sampler = sampler_config(config, rows[0])
    paths, json_path = output_paths(out, len(rows), batched)
    model_config = check_checkpoint(checkpoint, config, os.path.splitext(out)[1].lower())

    import jax

    from vidrd_jax.pipeline import VideoPipeline, num_output_frames

    try:
        pipeline = VideoPipeline.from_checkpoint(checkpoint, progress=progress)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--checkpoint: {e}") from None
    setup_seconds = time.perf_counter() - started

    key = jax.random.key(config.seed)
    size = dict(height=config.resolution, width=config.resolution)
    if config.mode == "vidrd":
        chunks = pipeline.generate_long_video(sampler, key=key, prompts=rows, **size)
    else:
        chunks = pipeline.co_denoise(sampler, key=key, prompts=rows, decode_frames=config.codenoise.decode_frames,
                                     **size)
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
            records.append({"index": chunk.index, "num_frames": int(chunk.frames.shape[1]),
                            "guided_steps": None if chunk.guided_steps is None else list(chunk.guided_steps),
                            "sample_s": round(chunk.sample_seconds, 4), "decode_s": round(chunk.decode_seconds, 4),
                            "write_s": round(time.perf_counter() - start, 4)})
        videos = [{"index": b, "prompts": list(row), **sink.close()} for b, (sink, row) in enumerate(zip(sinks, rows))]
        record = {
            "command": list(command),
            "checkpoint": os.path.abspath(checkpoint),
            "checkpoint_source": model_config.get("source"),
            "mode": config.mode,
            "seed": config.seed,
            "prompts": [list(row) for row in rows],
            "negative_prompt": config.negative_prompt,
            "height": config.resolution,
            "width": config.resolution,
            "fps": config.fps,
            "frames_per_video": total,
            "config": config.to_dict(),
            "sampler": {"type": type(sampler).__name__, **dataclasses.asdict(sampler)},
            "videos": videos,
            ("clips" if config.mode == "vidrd" else "decode_chunks"): records,
            "timings": {"setup_s": round(setup_seconds, 4),
                        "sample_s": round(sum(r["sample_s"] for r in records), 4),
                        "decode_s": round(sum(r["decode_s"] for r in records), 4),
                        "write_s": round(sum(r["write_s"] for r in records), 4),
                        "total_s": round(time.perf_counter() - started, 4)},
            "jax_version": jax.__version__,
            "device": str(jax.devices()[0].device_kind),
        }
        if config.mode == "codenoise":
            record["windows"] = {"num_windows": sampler.num_windows, "window_prompts": list(sampler.window_prompts())}
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
    if fv.num_clips is not None:
        if config.mode != "vidrd":
            raise UsageError("--num_clips applies to --mode vidrd; use --num_frames for codenoise")
        config.vidrd.num_clips = fv.num_clips
    if fv.num_frames is not None:
        if config.mode != "codenoise":
            raise UsageError("--num_frames applies to --mode codenoise; use --num_clips for vidrd")
        config.codenoise.num_frames = fv.num_frames
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
