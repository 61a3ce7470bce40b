r"""Measures a demo model (``configs/demo.py``) on prompts it never saw: does the video follow the prompt, and is the
long video smooth where clips meet?

    python -m vidrd_jax.recipes.demo_evaluation --workdir workdirs/demo [--config configs/demo.py] [--stage evaluate]

Prompts are the built-in dataset's held-out (colour, shape, direction) combinations (``data_pipelines.builtin
.heldout_combos``: every word and every attribute pair was seen in training, the triple never). For each model
(``checkpoint``: the final VidRD model; ``baseline_checkpoint``: the same trained without temporal layers) and each
sampler variant, one batch of VidRD long videos (``sampling.vidrd``: ``num_clips`` clips of ``num_frames`` frames,
paper Algorithm 1; ``sampling`` has the generator's schema, ``configs/generate_default.py``) is generated per seed
(``num_prompts`` prompts for the main variant, the first ``ablation_prompts`` for the others, balanced over
directions and colours: :func:`evaluation_prompts`; with ``part_prompts`` clip k's prompt names part k + 1, as the
training clips of a longer motion are captioned: :func:`clip_prompts`), and scored on the decoded frames:

* colour accuracy: the moving object's pixels (saturation ``max(rgb) - min(rgb)`` above ``saturation_threshold``;
  the backgrounds are gray) averaged over the first clip, nearest palette colour == the prompt's colour;
* direction accuracy: the object centroid's displacement over the first clip has the prompt's sign along the
  prompt's axis and is larger there than across it (4-way; chance 1/4). ``direction_sign_accuracy``: the sign only;
  ``direction_axis_accuracy``: the motion is mostly along the prompt's axis, either way (chance 1/2). When the
  rendered data crosses the frame's edges (``render.motion == "wrap"``, or a ``"path"`` continued past its first
  clip: objects leave through one edge and re-enter through the opposite one) the frame is a torus: centroids are
  circular means, and a displacement is the sum of the frame-to-frame steps, each taken modulo the frame (a step
  under half the frame), so crossing an edge is a step, not a jump;
* smoothness: mean absolute frame-to-frame change (``[0, 1]`` pixel scale) at clip junctions (last frame of clip i
  -> first frame of clip i+1) vs inside clips, and their ratio ``junction_ratio``; and how far the object's centroid
  moves at junctions vs inside clips (``junction_jump`` / ``inside_step`` pixels, ``jump_ratio``): a small object
  that jumps back to its start changes as many pixels as one that takes an ordinary step, so only the second
  measure sees the jump;
* motion: the mean distance the centroid moves per frame (all consecutive pairs), and ``motion_ratio``: that over the
  rendered data's (``data`` row: rendered clips of the same combinations, ``num_clips · N`` frames each, drawn with
  ``render``), so a still video, perfectly smooth at every junction, fails the continuation marks;
* continuation: ``continued_junctions``, the share of junctions where the object goes on in the prompt's direction
  past clip i+1's reused prompt frames: from clip i's last frame to clip i+1's frame M (``num_prompt_frames``) it
  advances at least ``MIN_PROGRESS`` of the data's per-frame step, with no step over ``MAX_STEP`` of it. The
  jump ratio alone passes a video whose prompt frames DSG pins to clip i's last frames and which then runs back
  along the path (the reverse mapping's prompt frames are clip i's, time-reversed) or restarts it one frame later;
* the evaluation harness's generic metrics (:mod:`vidrd_jax.evaluate.long_video_metrics`, which also computes the
  junction change): VBench-style ``temporal_flickering`` and ``dynamic_degree`` (OpenCV optical flow), so a still
  video's perfect smoothness shows as dynamic degree 0.

Variants (paper §5.4's ablation on our data): ``frame_mapping`` reverse vs forward, and DSG + PNS on (``dsg_beta``,
``pns_alpha``) vs off (β = 0, α = 0: the prompt frames are reused but neither guided nor mixed), and ``co_denoise``:
the same model co-denoising overlapping windows (``sampling.codenoise``, paper 000 eq. 18-19; a video as long as the
VidRD ones, scored at the same clip positions, where it has no junction of its own). The baseline runs the
main variant. The model's row ``reconstruction`` scores rendered clips of the same combinations (drawn with
``render``, the training data's motion ranges) passed through its autoencoder (encoder mean -> decoder): how well the
decoder keeps colour and motion of real clips. Continuation marks (every variant, a second table): junction ratio
and jump ratio at most their ``thresholds``, motion ratio and continued junctions at least theirs: clip i+1 continues
clip i, and moves on. Results:
``OUT/evaluation.json``, ``OUT/evaluation.md`` (the tables, also printed) and one PNG contact sheet per model and
variant (``OUT/sheets/``; rows = videos, first ``sheet_videos`` prompts of seed 0).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import ml_collections
import numpy as np

from data_pipelines import builtin
from vidrd_jax import checkpoints, cli, generate, generate_config, media
from vidrd_jax.config_loading import load_config, load_module
from vidrd_jax.evaluate import long_video_metrics
from vidrd_jax.pipeline import VideoPipeline
from vidrd_jax.recipes.placeholders import resolve

VARIANTS: dict[str, dict[str, Any]] = {
    "reverse_dsg_pns": dict(frame_mapping="reverse"),
    "forward_dsg_pns": dict(frame_mapping="forward"),
    "reverse_no_dsg_pns": dict(frame_mapping="reverse", dsg_beta=0.0, pns_alpha=0.0),
    "forward_no_dsg_pns": dict(frame_mapping="forward", dsg_beta=0.0, pns_alpha=0.0),
}
MAIN_VARIANT = "reverse_dsg_pns"
CO_DENOISE = "co_denoise"  # the model's co-denoised videos (eq. 18-19), scored at the same clip positions
CONTINUATION = ("junction_ratio", "jump_ratio", "motion_ratio", "continued_junctions")  # marks of every variant
# A junction continues when the object goes on in the prompt's direction past clip i+1's prompt frames: at least
# MIN_PROGRESS of the rendered data's per-frame step, with no step longer than MAX_STEP of them (score_videos).
MIN_PROGRESS, MAX_STEP = 0.5, 2.0
DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.py"
OUTPUT_JSON, OUTPUT_TABLE, SHEETS_DIR = "evaluation.json", "evaluation.md", "sheets"


def get_default_config() -> ml_collections.ConfigDict:
    """Fields of an ``evaluate_demo`` stage (``configs/demo.py`` sets the checkpoints and sizes)."""
    c = ml_collections.ConfigDict()
    c.checkpoint = ""  # inference checkpoint of the model under test
    c.baseline_checkpoint = ""  # the same trained without temporal layers ("" = no baseline)
    c.holdout_fraction = 0.2  # must match the training data's shapes source
    c.holdout_seed = 0
    # render_clip's motion ranges, as the training data's shapes source (for the reconstruction row)
    c.render = ml_collections.ConfigDict(dict(size_range=builtin.SIZE_RANGE, travel_range=builtin.TRAVEL_RANGE,
                                              lateral_spread=1.0, motion="path", step_range=builtin.STEP_RANGE,
                                              trail=0.0))
    c.num_prompts = 24  # held-out combinations evaluated with the main variant (<= the number held out)
    c.ablation_prompts = 8  # the first this many of them for the other sampler variants (smoothness ablation)
    c.seeds = (0, 1)
    # True: clip k of a VidRD video is prompted with part k + 1's caption, as the training clips of a longer motion
    # are captioned (ShapesSource's part_stride); co-denoising keeps the caption in every window.
    c.part_prompts = False
    # The generator's settings (``configs/generate_default.py``'s schema; ``mode``, ``seed``, ``fps`` and
    # ``contact_sheet`` are not used): ``vidrd`` for the VidRD variants, ``codenoise`` for the co-denoising row.
    c.sampling = load_module(generate.DEFAULT_CONFIG).get_config()
    c.sampling.update(resolution=32, num_steps=25, guidance_scale=5.0, negative_prompt="")
    c.sampling.vidrd.update(num_clips=4, num_frames=4, num_prompt_frames=2)
    c.sampling.codenoise.update(num_frames=16, window_size=4, stride=2, decode_frames=4)
    c.saturation_threshold = 0.25  # object pixels: max(rgb) - min(rgb) > this ([0, 1] scale)
    c.sheet_videos = 8
    # Pass marks of the main variant, reported in the table: colour and direction accuracy at least, and continuation
    # (also reported for every variant): junction and jump ratio at most, motion ratio and continued junctions at
    # least these.
    c.thresholds = ml_collections.ConfigDict(dict(colour_accuracy=0.8, direction_accuracy=0.8, junction_ratio=1.5,
                                                  jump_ratio=1.5, motion_ratio=0.5, continued_junctions=0.6))
    return c


def validate_config(c: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError`` naming the field."""
    expected = set(get_default_config().keys())
    if set(c.keys()) != expected:
        raise ValueError(f"fields must be {sorted(expected)}; missing {sorted(expected - set(c.keys()))}, unknown "
                         f"{sorted(set(c.keys()) - expected)}")
    if not c.checkpoint:
        raise ValueError("checkpoint: must name an inference checkpoint")
    held = len(builtin.heldout_combos(c.holdout_fraction, c.holdout_seed))
    if not 1 <= c.num_prompts <= held:
        raise ValueError(f"num_prompts: must be in [1, {held}] (held-out combinations), got {c.num_prompts}")
    if not 1 <= c.ablation_prompts <= c.num_prompts:
        raise ValueError(f"ablation_prompts: must be in [1, num_prompts={c.num_prompts}], got {c.ablation_prompts}")
    if not c.seeds or len(set(c.seeds)) != len(c.seeds):
        raise ValueError(f"seeds: must be distinct ints, got {c.seeds!r}")
    if not isinstance(c.sheet_videos, int) or c.sheet_videos < 1:
        raise ValueError(f"sheet_videos: must be a positive int, got {c.sheet_videos!r}")
    try:
        generate_config.validate_config(c.sampling)
    except cli.UsageError as e:
        raise ValueError(f"sampling: {e}") from None
    v = c.sampling.vidrd
    if v.num_clips < 2:
        raise ValueError(f"sampling.vidrd.num_clips: junctions need >= 2 clips, got {v.num_clips}")
    if v.num_frames < 2 or v.num_prompt_frames >= v.num_frames:
        raise ValueError(f"sampling.vidrd.num_frames / num_prompt_frames: need N >= 2 and M < N, got {v.num_frames}, "
                         f"{v.num_prompt_frames}")
    if v.output != "all_frames":
        raise ValueError(f"sampling.vidrd.output: junctions are scored on whole clips, so it must be 'all_frames', "
                         f"got {v.output!r}")
    if c.sampling.codenoise.num_frames != video_frames(c):
        raise ValueError(f"sampling.codenoise.num_frames: the co-denoised video must be as long as the VidRD one "
                         f"(num_clips x num_frames = {video_frames(c)}), got {c.sampling.codenoise.num_frames}")
    try:
        builtin.render_clip("red", "circle", "left", num_frames=2, height=c.sampling.resolution,
                            **c.render.to_dict())
    except (TypeError, ValueError) as e:
        raise ValueError(f"render: {e}") from e
    if not 0 < c.saturation_threshold < 1:
        raise ValueError(f"saturation_threshold: must be in (0, 1), got {c.saturation_threshold}")


def evaluation_prompts(c: ml_collections.ConfigDict) -> list[builtin.Combo]:
    """The first ``num_prompts`` held-out combinations in a balanced order: round-robin over the directions (each
    direction's combos in turn by colour, then shape), so any prefix covers the directions (and colours) as evenly
    as the held-out set allows (vocabulary order put 14 horizontal motions among the first 16 of holdout seed 0)."""
    held = builtin.heldout_combos(c.holdout_fraction, c.holdout_seed)
    colours = list(builtin.COLOURS)
    queues = {d: sorted((x for x in held if x[2] == d), key=lambda x: (colours.index(x[0]), x[1]))
              for d in builtin.DIRECTIONS}
    # within a direction, alternate colours: take each colour's first combo before any colour's second
    for d, combos in queues.items():
        rank = {x: sum(1 for y in combos[:i] if y[0] == x[0]) for i, x in enumerate(combos)}
        queues[d] = sorted(combos, key=lambda x: (rank[x], colours.index(x[0])))
    order: list[builtin.Combo] = []
    while len(order) < len(held):
        for d in builtin.DIRECTIONS:
            if queues[d]:
                order.append(queues[d].pop(0))
    return order[: c.num_prompts]


# --- measurements ------------------------------------------------------------------------------------------------

def object_masks(frames: np.ndarray, threshold: float) -> np.ndarray:
    """bool ``[..., H, W]``: saturated (coloured) pixels of uint8 frames ``[..., H, W, 3]``."""
    x = frames.astype(np.float32) / 255.0
    return (x.max(-1) - x.min(-1)) > threshold


def dominant_colour(frames: np.ndarray, masks: np.ndarray) -> str | None:
    """Palette name nearest to the mean colour of the masked pixels of ``frames`` ``[F, H, W, 3]`` (None: no
    object pixels)."""
    if not masks.any():
        return None
    mean = frames[masks].astype(np.float32).mean(0)
    names = list(builtin.COLOURS)
    palette = np.asarray([builtin.COLOURS[n] for n in names], np.float32)
    return names[int(np.argmin(np.sum(np.square(palette - mean), axis=1)))]


def centroids(masks: np.ndarray, torus: bool = False) -> list[np.ndarray | None]:
    """(y, x) centroid of each frame's object pixels in ``masks`` ``[F, H, W]`` (None for a frame without any);
    ``torus``: the circular mean on each axis (an object across an edge is one object), in ``[0, side)``."""
    if not torus:
        return [np.argwhere(mask).mean(0) if mask.any() else None for mask in masks]
    sides = np.asarray(masks.shape[1:], np.float64)
    points = []
    for mask in masks:
        if not mask.any():
            points.append(None)
            continue
        angles = 2 * np.pi * np.argwhere(mask) / sides
        mean = np.arctan2(np.sin(angles).mean(0), np.cos(angles).mean(0))
        points.append(np.mod(mean * sides / (2 * np.pi), sides))
    return points


def centroid_step(a: np.ndarray, b: np.ndarray, sides: tuple[int, int] | None = None) -> np.ndarray:
    """(dy, dx) from centroid ``a`` to ``b``; on a torus of ``sides`` (H, W), modulo each side into
    ``[-side/2, side/2)``."""
    step = b - a
    if sides is None:
        return step
    sides_ = np.asarray(sides, np.float64)
    return np.mod(step + 0.5 * sides_, sides_) - 0.5 * sides_


def centroid_displacement(points: Sequence[np.ndarray | None], sides: tuple[int, int] | None = None
                          ) -> np.ndarray | None:
    """(dy, dx) in pixels from the first to the last frame with an object (``points``: :func:`centroids` of a clip):
    the sum of the steps between consecutive frames with one (``sides``: on a torus, see :func:`centroid_step`);
    None if fewer than two frames have one."""
    present = [c for c in points if c is not None]
    if len(present) < 2:
        return None
    return np.sum([centroid_step(a, b, sides) for a, b in zip(present[:-1], present[1:])], axis=0)


def direction_scores(displacement: np.ndarray | None, direction: str) -> tuple[bool, bool, bool]:
    """(4-way correct, sign correct, axis correct) of a displacement for the prompt's ``direction``."""
    if displacement is None:
        return False, False, False
    dy, dx = builtin.DIRECTIONS[direction]
    along = displacement[0] * dy + displacement[1] * dx
    across = abs(displacement[1] if dy else displacement[0])
    return bool(along > 0 and along > across), bool(along > 0), bool(abs(along) > across)


def centroid_steps(points: Sequence[np.ndarray | None], clip_starts: Sequence[int],
                   sides: tuple[int, int] | None = None) -> tuple[float, float, float]:
    """Mean distance in pixels the object's centroid moves at clip junctions (t+1 in ``clip_starts``), between the
    other consecutive frames, and between all of them (``points``: :func:`centroids` of a video; ``sides``: on a
    torus, see :func:`centroid_step`); pairs with an empty frame are skipped (NaN if none)."""
    junction, inside = [], []
    for t in range(len(points) - 1):
        if points[t] is not None and points[t + 1] is not None:
            step = float(np.linalg.norm(centroid_step(points[t], points[t + 1], sides)))
            (junction if t + 1 in clip_starts else inside).append(step)
    return tuple(float(np.mean(x)) if x else float("nan") for x in (junction, inside, junction + inside))


def junction_progress(points: Sequence[np.ndarray | None], clip_starts: Sequence[int], prompt_frames: int,
                      direction: str, max_step: float, sides: tuple[int, int] | None = None) -> list[float]:
    """Per junction, how far (pixels, signed) the object's centroid goes in the prompt's ``direction`` from clip i's
    last frame to clip i+1's first new frame (``prompt_frames`` M after the junction: past the reused prompt frames,
    which DSG pins to clip i's), summing the steps between (``sides``: on a torus, see :func:`centroid_step`); NaN
    when a frame of that span has no object or a step is longer than ``max_step`` (a jump, e.g. back to the start
    of the path, is not a continuation)."""
    dy, dx = builtin.DIRECTIONS[direction]
    progress = []
    for start in clip_starts:
        span = points[start - 1: min(start + prompt_frames, len(points) - 1) + 1]
        if any(p is None for p in span):
            progress.append(float("nan"))
            continue
        steps = [centroid_step(a, b, sides) for a, b in zip(span[:-1], span[1:])]
        if max(float(np.linalg.norm(s)) for s in steps) > max_step:
            progress.append(float("nan"))
        else:
            progress.append(float(sum(s[0] * dy + s[1] * dx for s in steps)))
    return progress


def score_videos(videos: np.ndarray, combos: Sequence[builtin.Combo], clip_frames: int, threshold: float,
                 torus: bool = False, prompt_frames: int = 2, reference_step: float | None = None
                 ) -> dict[str, float]:
    """Metrics of uint8 long videos ``[B, T, H, W, 3]`` (clips of ``clip_frames`` frames) for their combos;
    ``torus``: objects wrap around the frame's edges (centroids and steps modulo the frame). ``continued_junctions``
    is the share of junctions (all videos') whose :func:`junction_progress` over ``prompt_frames`` is at least
    ``MIN_PROGRESS`` steps of ``reference_step`` pixels (the rendered data's mean per-frame motion; None: these
    videos' own) with no step longer than ``MAX_STEP`` of them."""
    colour, direction, sign, axis, junction, inside, jumps, steps, motion = [], [], [], [], [], [], [], [], []
    flickering, dynamic = [], []
    starts = list(range(clip_frames, videos.shape[1], clip_frames))
    sides = tuple(videos.shape[2:4]) if torus else None
    all_masks = [object_masks(video, threshold) for video in videos]
    all_points = [centroids(masks, torus) for masks in all_masks]
    all_steps = [centroid_steps(points, starts, sides) for points in all_points]  # (junction, inside, all) per video
    if reference_step is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # no object in any frame pair
            reference_step = float(np.nanmean([moved for _, _, moved in all_steps]))
    progress = [x for points, (_, _, d) in zip(all_points, combos)
                for x in junction_progress(points, starts, prompt_frames, d, MAX_STEP * reference_step, sides)]
    for video, masks, points, (jump, step, moved), (c, _, d) in zip(videos, all_masks, all_points, all_steps, combos):
        colour.append(dominant_colour(video[:clip_frames], masks[:clip_frames]) == c)
        four_way, signed, on_axis = direction_scores(centroid_displacement(points[:clip_frames], sides), d)
        direction.append(four_way)
        sign.append(signed)
        axis.append(on_axis)
        change = long_video_metrics.junction_change(video, starts)
        junction.append(change.junction_change)
        inside.append(change.inside_change)
        flickering.append(long_video_metrics.temporal_flickering(video))
        dynamic.append(long_video_metrics.dynamic_degree(video).dynamic)
        jumps.append(jump)
        steps.append(step)
        motion.append(moved)
    junction_change, inside_change = float(np.mean(junction)), float(np.mean(inside))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: no video showed an object across a pair
        jump, step, moved = float(np.nanmean(jumps)), float(np.nanmean(steps)), float(np.nanmean(motion))
    return {"colour_accuracy": float(np.mean(colour)), "direction_accuracy": float(np.mean(direction)),
            "direction_sign_accuracy": float(np.mean(sign)), "direction_axis_accuracy": float(np.mean(axis)),
            "junction_change": junction_change,
            "inside_change": inside_change, "junction_ratio": junction_change / max(inside_change, 1e-8),
            "junction_jump": jump, "inside_step": step, "jump_ratio": jump / max(step, 1e-8), "motion": moved,
            "continued_junctions": float(np.mean(np.nan_to_num(progress, nan=-np.inf)
                                                 >= MIN_PROGRESS * reference_step)) if progress else float("nan"),
            "temporal_flickering": float(np.mean(flickering)), "dynamic_degree": float(np.mean(dynamic)),
            "num_videos": len(combos)}


# --- generation --------------------------------------------------------------------------------------------------

def video_frames(c: ml_collections.ConfigDict) -> int:
    """Frames of every evaluated video: ``num_clips · N`` (VidRD with ``all_frames``; co-denoising's L)."""
    return c.sampling.vidrd.num_clips * c.sampling.vidrd.num_frames


def clip_prompts(c: ml_collections.ConfigDict, combo: builtin.Combo) -> tuple[str, ...]:
    """A VidRD video's prompts for ``combo``: its caption for every clip, or with ``part_prompts`` one per clip, clip
    k's naming part k + 1 (:func:`data_pipelines.builtin.caption_for`)."""
    if not c.part_prompts:
        return (builtin.caption_for(*combo),)
    return tuple(builtin.caption_for(*combo, part=k + 1) for k in range(c.sampling.vidrd.num_clips))


def generate_videos(pipeline, c: ml_collections.ConfigDict, combos: Sequence[builtin.Combo], seed: int,
                    variant: str) -> np.ndarray:
    """uint8 ``[P, num_clips·N, H, W, 3]``: one video per combo (one batch) by the sampler of ``variant`` (VidRD:
    :func:`clip_prompts`; co-denoising: the caption in every window)."""
    import jax

    size = dict(key=jax.random.key(seed), height=c.sampling.resolution, width=c.sampling.resolution)
    if variant == CO_DENOISE:
        prompts = [(builtin.caption_for(*combo),) for combo in combos]
        chunks = pipeline.co_denoise(generate_config.co_denoise_config(c.sampling, prompts[0]), **size,
                                     prompts=prompts, decode_frames=c.sampling.codenoise.decode_frames)
    else:
        prompts = [clip_prompts(c, combo) for combo in combos]
        config = generate_config.long_video_config(c.sampling, prompts[0], **VARIANTS[variant])
        chunks = pipeline.generate_long_video(config, **size, prompts=prompts)
    return np.concatenate([chunk.frames for chunk in chunks], axis=1)


def rendered_clips(c: ml_collections.ConfigDict) -> tuple[np.ndarray, list[builtin.Combo]]:
    """uint8 ``[P·seeds, num_clips·N, H, W, 3]``: rendered clips of the evaluated combinations (``num_clips · N``
    frames of one continuous motion each, drawn with ``render``; a ``"path"`` spans the first N frames, as in a
    training clip, and goes on after them), and their combos."""
    combos = evaluation_prompts(c)
    clips = np.stack([builtin.render_clip(*combo, num_frames=video_frames(c), height=c.sampling.resolution,
                                          background=builtin.BACKGROUNDS[i % 2], seed=1000 * seed + i,
                                          path_frames=c.sampling.vidrd.num_frames, **c.render.to_dict())
                      for seed in c.seeds for i, combo in enumerate(combos)])
    return clips, list(combos) * len(c.seeds)


def wraps(c: ml_collections.ConfigDict) -> bool:
    """Whether the rendered data's objects cross the frame's edges (a wrapping motion, or a path continued past its
    first clip): score on a torus."""
    return builtin.crosses_edges(c.render.motion, 0, video_frames(c), c.sampling.vidrd.num_frames)


def score(videos: np.ndarray, combos: Sequence[builtin.Combo], c: ml_collections.ConfigDict,
          reference_step: float | None) -> dict[str, float]:
    """:func:`score_videos` with the evaluation's settings (clips, prompt frames, threshold, torus)."""
    v = c.sampling.vidrd
    return score_videos(videos, combos, v.num_frames, c.saturation_threshold, wraps(c), v.num_prompt_frames,
                        reference_step)


def data_scores(c: ml_collections.ConfigDict) -> dict[str, float]:
    """The scores of :func:`rendered_clips` themselves: the reference of ``motion_ratio`` and of the steps of
    ``continued_junctions`` (and what a continuing video scores)."""
    return score(*rendered_clips(c), c, None)


def reconstruction_scores(pipeline, c: ml_collections.ConfigDict, reference_step: float) -> dict[str, float]:
    """The autoencoder's fidelity: the scores of :func:`rendered_clips` after the pipeline's encoder (posterior mean)
    and decoder. A decoder that washes a colour out of real clips limits the generator too (loosely: the UNet may
    learn latents that decode more saturated than encoded ones)."""
    clips, combos = rendered_clips(c)
    videos = pipeline.decode_clip(pipeline.encode_clip(clips), c.sampling.vidrd.num_frames)
    return score(videos, combos, c, reference_step)


def evaluate_model(checkpoint: str, c: ml_collections.ConfigDict, variants: Sequence[str], out_dir: str,
                   label: str, reference_step: float, reconstruction: bool = False) -> dict[str, dict[str, float]]:
    """Scores of ``checkpoint`` for each variant (all prompts x seeds), and under ``"reconstruction"`` its
    autoencoder's fidelity when asked; writes a contact sheet per variant. ``reference_step``: the rendered data's
    per-frame motion (:func:`data_scores`' ``motion``)."""
    pipeline = VideoPipeline.from_checkpoint(checkpoint)
    results = {"reconstruction": reconstruction_scores(pipeline, c, reference_step)} if reconstruction else {}
    for name in variants:
        start = time.perf_counter()
        count = c.num_prompts if name == MAIN_VARIANT else c.ablation_prompts
        combos = evaluation_prompts(c)[:count]
        per_seed = [generate_videos(pipeline, c, combos, seed, name) for seed in c.seeds]
        videos = np.concatenate(per_seed, axis=0)
        results[name] = score(videos, list(combos) * len(c.seeds), c, reference_step)
        results[name]["seconds"] = round(time.perf_counter() - start, 1)
        sheet = per_seed[0][: c.sheet_videos]
        os.makedirs(os.path.join(out_dir, SHEETS_DIR), exist_ok=True)
        media.write_contact_sheet(os.path.join(out_dir, SHEETS_DIR, f"{label}_{name}.png"),
                                  sheet.reshape((-1,) + sheet.shape[2:]), columns=sheet.shape[1])
    return results


def add_motion_ratios(results: dict[str, Any]) -> None:
    """Sets ``motion_ratio`` (``motion`` over the rendered data's, ``results["data"]["rendered"]``) in every row."""
    reference = results["data"]["rendered"]["motion"]
    for rows in results.values():
        for scores in rows.values():
            scores["motion_ratio"] = scores["motion"] / reference if reference > 0 else float("nan")


def continuation_marks(scores: dict[str, float], thresholds: ml_collections.ConfigDict) -> dict[str, bool]:
    """Junction and jump ratio at most, motion ratio and continued junctions at least their marks (NaN fails)."""
    return {"junction_ratio": bool(scores["junction_ratio"] <= thresholds.junction_ratio),
            "jump_ratio": bool(scores["jump_ratio"] <= thresholds.jump_ratio),
            "motion_ratio": bool(scores["motion_ratio"] >= thresholds.motion_ratio),
            "continued_junctions": bool(scores["continued_junctions"] >= thresholds.continued_junctions)}


def passes(results: dict[str, Any], thresholds: ml_collections.ConfigDict) -> dict[str, bool]:
    """Which pass marks the main variant of the model under test meets."""
    main = results["model"][MAIN_VARIANT]
    return {"colour_accuracy": main["colour_accuracy"] >= thresholds.colour_accuracy,
            "direction_accuracy": main["direction_accuracy"] >= thresholds.direction_accuracy,
            **continuation_marks(main, thresholds)}


def format_table(results: dict[str, Any]) -> str:
    """Markdown table: one row per (model, variant)."""
    columns = ("colour_accuracy", "direction_accuracy", "direction_sign_accuracy", "direction_axis_accuracy",
               "junction_change", "inside_change", "junction_ratio", "jump_ratio", "motion", "motion_ratio",
               "continued_junctions", "temporal_flickering", "dynamic_degree")
    lines = ["| model | variant | " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) + 2)]
    for model in ("model", "baseline", "data"):
        for variant, scores in results.get(model, {}).items():
            lines.append(f"| {model} | {variant} | " + " | ".join(f"{scores[k]:.3f}" for k in columns) + " |")
    return "\n".join(lines)


def format_marks(results: dict[str, Any], thresholds: ml_collections.ConfigDict) -> str:
    """Markdown table of the continuation marks for every sampler variant of the model under test."""
    head = (f"junction ratio <= {thresholds.junction_ratio}", f"jump ratio <= {thresholds.jump_ratio}",
            f"motion ratio >= {thresholds.motion_ratio}", f"continued junctions >= {thresholds.continued_junctions}")
    lines = ["| variant | " + " | ".join(head) + " | continues |", "|" + "---|" * (len(head) + 2)]
    for variant in (v for v in (*VARIANTS, CO_DENOISE) if v in results["model"]):
        scores = results["model"][variant]
        marks = continuation_marks(scores, thresholds)
        cells = [f"{scores[k]:.3f} ({'pass' if marks[k] else 'FAIL'})" for k in CONTINUATION]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {'yes' if all(marks.values()) else 'no'} |")
    return "\n".join(lines)


def run(c: ml_collections.ConfigDict, out_dir: str) -> dict[str, Any]:
    """Evaluates the model (every variant) and the baseline (main variant); writes JSON + table; returns a summary
    for ``summary.json``. Both checkpoints are checked before anything is generated."""
    validate_config(c)
    for field in ("checkpoint", "baseline_checkpoint"):
        if c[field]:
            try:
                checkpoints.load_model_config(c[field])
            except (OSError, ValueError) as e:
                raise cli.UsageError(f"{field}: {e}") from None
    start = time.perf_counter()
    data = data_scores(c)
    results: dict[str, Any] = {"model": evaluate_model(c.checkpoint, c, [*VARIANTS, CO_DENOISE], out_dir, "model",
                                                       data["motion"], reconstruction=True)}
    if c.baseline_checkpoint:
        results["baseline"] = evaluate_model(c.baseline_checkpoint, c, [MAIN_VARIANT], out_dir, "baseline",
                                             data["motion"])
    results["data"] = {"rendered": data}
    add_motion_ratios(results)
    verdict = passes(results, c.thresholds)
    table = (format_table(results) + "\n\nContinuation marks (clip i+1 continues clip i, and moves on):\n\n"
             + format_marks(results, c.thresholds))
    record = {"config": c.to_dict(), "results": results, "passes": verdict,
              "prompts": [" | ".join(clip_prompts(c, x)) for x in evaluation_prompts(c)],
              "seconds": round(time.perf_counter() - start, 1)}
    os.makedirs(out_dir, exist_ok=True)
    with cli.atomic_write(os.path.join(out_dir, OUTPUT_JSON)) as f:
        json.dump(record, f, indent=2)
    thresholds = ", ".join(f"{k} {'<=' if k in ('junction_ratio', 'jump_ratio') else '>='} {v} "
                           f"({'pass' if verdict[k] else 'FAIL'})" for k, v in c.thresholds.items())
    with cli.atomic_write(os.path.join(out_dir, OUTPUT_TABLE)) as f:
        f.write(table + f"\n\nPass marks ({MAIN_VARIANT}): {thresholds}\n")
    print(table)
    print(f"pass marks ({MAIN_VARIANT}): {thresholds}")
    return {"evaluation": os.path.join(out_dir, OUTPUT_JSON), "table": os.path.join(out_dir, OUTPUT_TABLE),
            "sheets": os.path.join(out_dir, SHEETS_DIR), "passes": verdict,
            "main": results["model"][MAIN_VARIANT]}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Runs the stage's evaluation; bad input raises (``python -m`` reports it as one ``error: ...`` line, status 2)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the demo's workdir (holds the stage exports)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG),
                        help="staged config file[:arg] (default: the repository's configs/demo.py)")
    parser.add_argument("--stage", default="evaluate", help="name of the evaluate_demo stage in the config")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    if args.stage not in config or config[args.stage].kind != "evaluate_demo":
        raise cli.UsageError(f"--stage {args.stage!r} is not an evaluate_demo stage of {args.config}")
    workdir = os.path.abspath(args.workdir)
    earlier = tuple(n for n in config.stages[: list(config.stages).index(args.stage)] if config[n].kind == "train")
    resolved = resolve(config[args.stage].config, workdir, earlier, f"{args.stage}.config")
    return run(resolved, os.path.join(workdir, args.stage))


if __name__ == "__main__":
    sys.exit(cli.run_cli(main))
