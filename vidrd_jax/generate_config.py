"""The generator's config schema (``configs/generate_default.py``), its validation, the prompt inputs, and the mode
registry: each mode names its config group, builds its sampler settings, checks its prompt count and runs its
:class:`~vidrd_jax.pipeline.VideoPipeline` sampler.

Every problem is a :class:`~vidrd_jax.cli.UsageError` naming the field (``config.vidrd.dsg_beta``, ``--prompt`` …).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable, Iterator, Sequence

import ml_collections

from vidrd_jax.cli import UsageError
from vidrd_jax.diffusion import CoDenoiseConfig, LongVideoConfig, SamplerConfig

PROMPT_SEPARATOR = "|"
_SHARED = ("prompts", "num_steps", "eta", "solver", "guidance_scale", "negative_prompt")


def long_video_config(config: ml_collections.ConfigDict, prompts: Sequence[str], **overrides: Any) -> LongVideoConfig:
    """The VidRD sampler settings of ``config`` for one video's per-clip ``prompts``, with ``overrides`` on top
    (raises ``ValueError``)."""
    v = config.vidrd
    fields = dict(num_clips=v.num_clips, num_frames=v.num_frames, num_prompt_frames=v.num_prompt_frames,
                  pns_alpha=v.pns_alpha, dsg_beta=v.dsg_beta, num_steps=config.num_steps, eta=config.eta,
                  solver=config.solver, guidance_scale=config.guidance_scale, negative_prompt=config.negative_prompt,
                  frame_mapping=v.frame_mapping, output=v.output)
    return LongVideoConfig(prompts=tuple(prompts), **{**fields, **overrides})


def co_denoise_config(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> CoDenoiseConfig:
    """The co-denoising settings of ``config`` for one video's per-window ``prompts`` (raises ``ValueError``)."""
    w = config.codenoise
    return CoDenoiseConfig(
        prompts=tuple(prompts), num_frames=w.num_frames, window_size=w.window_size, stride=w.stride,
        weighting=w.weighting, gaussian_sigma=w.gaussian_sigma, window_chunk_size=w.window_chunk_size or None,
        num_steps=config.num_steps, eta=config.eta, solver=config.solver, guidance_scale=config.guidance_scale,
        negative_prompt=config.negative_prompt)


# --- modes -------------------------------------------------------------------------------------------------------

def _vidrd_prompt_problem(config: ml_collections.ConfigDict, count: int) -> str | None:
    k = config.vidrd.num_clips
    if count not in (1, k):
        return f"{count} prompts for --num_clips {k}: give 1 (every clip) or {k} (one per clip)"
    return None


def _codenoise_prompt_problem(config: ml_collections.ConfigDict, count: int) -> str | None:
    windows = co_denoise_config(config, ["-"]).num_windows
    if count > windows:
        return (f"{count} prompts but --num_frames {config.codenoise.num_frames} gives only {windows} window(s) (at "
                "most one prompt per window)")
    return None


@dataclasses.dataclass(frozen=True)
class Mode:
    """One generation mode: its config group (``config.<name>``), sampler settings, flags and pipeline call."""

    name: str
    build: Callable[[ml_collections.ConfigDict, Sequence[str]], LongVideoConfig | CoDenoiseConfig]
    length_flag: str  # the flag setting config.<name>.<length_flag> (--num_clips, --num_frames)
    prompt_problem: Callable[[ml_collections.ConfigDict, int], str | None]  # a wrong per-video prompt count
    sample: Callable[..., Iterator[Any]]  # (pipeline, sampler, config, key, rows, height, width) -> VideoChunks
    chunks_key: str  # the JSON record's key for the per-chunk records
    extra_record: Callable[[Any], dict[str, Any]]  # mode-specific JSON record entries of the sampler settings


MODES = {
    "vidrd": Mode(
        "vidrd", long_video_config, "num_clips", _vidrd_prompt_problem,
        lambda pipe, sampler, config, key, rows, **size: pipe.generate_long_video(sampler, key=key, prompts=rows,
                                                                                  **size),
        "clips", lambda sampler: {}),
    "codenoise": Mode(
        "codenoise", co_denoise_config, "num_frames", _codenoise_prompt_problem,
        lambda pipe, sampler, config, key, rows, **size: pipe.co_denoise(
            sampler, key=key, prompts=rows, decode_frames=config.codenoise.decode_frames,
            split_windows=config.codenoise.split_windows, **size),
        "decode_chunks",
        lambda sampler: {"windows": {"num_windows": sampler.num_windows,
                                     "window_prompts": list(sampler.window_prompts())}}),
}
CONFIG_FIELDS = {
    "": ("mode", "seed", "resolution", "num_steps", "eta", "solver", "guidance_scale", "negative_prompt", "fps",
         "data_parallel_devices", *MODES, "contact_sheet"),
    "vidrd": tuple(f.name for f in dataclasses.fields(LongVideoConfig) if f.name not in _SHARED),
    "codenoise": tuple(f.name for f in dataclasses.fields(CoDenoiseConfig) if f.name not in _SHARED)
    + ("decode_frames", "split_windows"),
    "contact_sheet": ("max_frames", "columns"),
}


# --- validation ----------------------------------------------------------------------------------------------------

def _check_number(name: str, value: Any, *, integer: bool = False, low: float = 0.0, low_open: bool = False) -> None:
    kind = int if integer else (int, float)
    ok = isinstance(value, kind) and not isinstance(value, bool) and math.isfinite(value) \
        and (value > low if low_open else value >= low)
    if not ok:
        what = "an int" if integer else "a finite number"
        raise UsageError(f"config.{name} must be {what} {'>' if low_open else '>='} {low:g}, got {value!r}")


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
        raise UsageError(f"config.mode must be one of {tuple(MODES)}, got {config.mode!r}")
    _check_number("seed", config.seed, integer=True)
    _check_number("resolution", config.resolution, integer=True, low_open=True)
    _check_number("num_steps", config.num_steps, integer=True, low=1)
    _check_number("eta", config.eta)
    try:
        SamplerConfig(config.num_steps, config.eta, config.solver)
    except ValueError as e:
        raise UsageError(f"config.{e}") from None
    _check_number("guidance_scale", config.guidance_scale)
    _check_number("fps", config.fps, low_open=True)
    devices = config.data_parallel_devices
    if isinstance(devices, bool) or not isinstance(devices, int) or not (devices == -1 or devices >= 1):
        raise UsageError(f"config.data_parallel_devices must be -1 (all devices) or an int >= 1, got {devices!r}")
    if not isinstance(config.negative_prompt, str):
        raise UsageError(f"config.negative_prompt must be a string, got {config.negative_prompt!r}")
    _check_number("codenoise.window_chunk_size", config.codenoise.window_chunk_size, integer=True)
    _check_number("codenoise.decode_frames", config.codenoise.decode_frames, integer=True, low=1)
    if not isinstance(config.codenoise.split_windows, bool):
        raise UsageError(f"config.codenoise.split_windows must be True or False, got "
                         f"{config.codenoise.split_windows!r}")
    _check_number("contact_sheet.max_frames", config.contact_sheet.max_frames, integer=True, low=1)
    _check_number("contact_sheet.columns", config.contact_sheet.columns, integer=True, low=1)
    for mode in MODES.values():
        try:
            mode.build(config, ["-"])
        except ValueError as e:
            raise UsageError(f"config.{mode.name}: {e}") from None


def data_parallel_mesh(config: ml_collections.ConfigDict, batch: int):
    """The mesh whose ``data`` axis splits the batch of videos (``config.data_parallel_devices``: -1 = every device,
    N = the first N), or None for one device; raises :class:`UsageError` when the batch does not split evenly
    (unless ``config.codenoise.split_windows`` splits co-denoising's windows instead)."""
    import jax

    from vidrd_jax.parallel import create_mesh

    available = jax.devices()
    count = len(available) if config.data_parallel_devices == -1 else config.data_parallel_devices
    if count > len(available):
        raise UsageError(f"config.data_parallel_devices={count} but only {len(available)} devices are available")
    if count == 1:
        return None
    if batch % count and not (config.mode == "codenoise" and config.codenoise.split_windows):
        raise UsageError(f"config.data_parallel_devices: a batch of {batch} videos does not split over {count} "
                         f"devices; give a multiple of {count} prompt lines (--batch_prompts_file)")
    return create_mesh({"data": count}, devices=available[:count])


def sampler_config(config: ml_collections.ConfigDict, prompts: Sequence[str]) -> LongVideoConfig | CoDenoiseConfig:
    """The active mode's sampler settings; prompt-count problems raise :class:`UsageError`."""
    try:
        return MODES[config.mode].build(config, prompts)
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
    problem = MODES[config.mode].prompt_problem(config, count)
    if problem:
        raise UsageError(f"{source}: {problem}")
