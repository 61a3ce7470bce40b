r"""The four-module long-video framework (paper 000 §3, eq. 9-20) as one resumable run.

    python -m vidrd_jax.four_module --config configs/four_module.py --workdir workdirs/four_module

Modules, in order, each in ``WORKDIR/<name>`` (a finished one, its ``record.json`` written, is skipped on a rerun):

0. ``base``: the model the framework starts from: ``config.base.checkpoint`` (an inference checkpoint), or, when
   that is empty, a small model trained on the built-in data (``config.base.stages``, a staged config run by
   :mod:`vidrd_jax.recipes.stages`; its training stages resume from their checkpoints).
1. ``separate`` (§3.1, eq. 1-9): one clip ``r`` of ``separate.num_frames`` frames per prompt, DDIM from the
   condition ``c`` (``separate.condition``: ``"builtin"`` starts from the built-in renderer's clip of the prompt,
   noised to ``separate.condition_strength`` of the schedule; ``""`` from pure noise), and its foreground / background
   masks from the segmenter (:mod:`vidrd_jax.segmentation`: ``files``, ``builtin`` exact masks, or ``sam``; a
   ``{i}`` in ``separate.segmenter.path`` is the prompt's index, e.g. ``masks/clip_{i}.npy``).
2. ``fusion`` (§3.2, eq. 10-12): at DDIM step ``fusion.step`` the mean of ``fusion.num_backgrounds`` stochastic
   trajectories' backgrounds and the reference's foreground (:mod:`vidrd_jax.diffusion.average_fusion`, fixed or
   fitted weights), denoised to ``r'``; the clips and their masks become the tuning set (ArrayRecord shards).
3. ``combined`` (§3.3, eq. 13-16, 20): the base model tuned on ``r'`` with ``λ1 L_1 + λ2 L_fg + λ3 L_bg``
   (task ``combined_tuning``; ``config.combined`` is its trainer config, the trainable set ``trainable_regex``),
   exported to ``WORKDIR/combined/export`` (the paper's D').
4. ``consistency`` (§3.4, eq. 17-19): co-denoising of ``sampling.codenoise.num_frames`` frames over overlapping
   windows with the tuned model (:func:`vidrd_jax.diffusion.co_denoise.co_denoise_sample`).
5. ``evaluate``: the same prompts and seed with plain co-denoising and VidRD long video on the base model, and the
   probes of :mod:`vidrd_jax.recipes.four_module_evaluation` for all three -> ``evaluation.json`` / ``.md``.

Every clip and video is written as mp4 + GIF + PNG contact sheet; ``WORKDIR/summary.json`` says where everything is.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from data_pipelines import builtin
from data_pipelines.array_record_source import ShardWriter, encode_record
from data_pipelines.base import CLIP, Raw
from data_pipelines.config import source
from vidrd_jax import checkpoints, cli, export, generate, media, train
from vidrd_jax.diffusion.average_fusion import average_fusion, fitted_weights, sample_steps, timestep_at
from vidrd_jax.diffusion.ddim import add_noise, draw_noise
from vidrd_jax.diffusion.solvers import SamplerConfig
from vidrd_jax.recipes import four_module_evaluation as probes
from vidrd_jax.recipes import stages
from vidrd_jax.recipes.placeholders import export_dir
from vidrd_jax.segmentation import KINDS as SEGMENTERS
from vidrd_jax.segmentation import latent_mask, make_segmenter
from vidrd_jax.tasks.combined_tuning import mask_clip
from vidrd_jax.train_config import validate_config as validate_train_config

MODULES = ("base", "separate", "fusion", "combined", "consistency", "evaluate")
RECORD_FILE = "record.json"
SUMMARY_FILE = "summary.json"
TUNING_SET = "tuning_set"
CONDITIONS = ("", "builtin")
WEIGHTS = ("fixed", "fitted")


# --- config ------------------------------------------------------------------------------------------------------

def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``ValueError`` naming the first bad field of a four-module config."""
    if not config.prompts or not all(isinstance(p, str) for p in config.prompts):
        raise ValueError(f"config.prompts must be a non-empty list of built-in captions, got {config.prompts!r}")
    for p in config.prompts:
        try:
            builtin.parse_combo(p)
        except ValueError as e:
            raise ValueError(f"config.prompts: {e} (the probes read the object's colour from the prompt)") from None
    try:
        generate.validate_config(config.sampling)
        generate.co_denoise_config(config.sampling, config.prompts[:1])
        generate.long_video_config(config.sampling, config.prompts[:1])
    except (ValueError, generate.UsageError) as e:
        raise ValueError(f"config.sampling: {e}") from None
    s, f = config.separate, config.fusion
    steps = config.sampling.num_steps
    if not isinstance(s.num_frames, int) or s.num_frames < 2:
        raise ValueError(f"config.separate.num_frames must be an int >= 2, got {s.num_frames!r}")
    if s.condition not in CONDITIONS:
        raise ValueError(f"config.separate.condition must be one of {CONDITIONS}, got {s.condition!r}")
    if not 0.0 < s.condition_strength <= 1.0:
        raise ValueError(f"config.separate.condition_strength must be in (0, 1], got {s.condition_strength!r}")
    if s.segmenter.kind not in SEGMENTERS:
        raise ValueError(f"config.separate.segmenter.kind must be one of {SEGMENTERS}, got {s.segmenter.kind!r}")
    if s.segmenter.kind == "builtin" and s.condition != "builtin":
        raise ValueError("config.separate.segmenter.kind='builtin' gives the rendered condition's exact masks: it "
                         "needs config.separate.condition='builtin'")
    if s.segmenter.kind != "builtin":
        paths = [s.segmenter.path.replace("{i}", str(i)) for i in range(len(config.prompts))]
        missing = [p for p in paths if not p or not os.path.exists(p)]
        if missing:
            raise ValueError(f"config.separate.segmenter.path: the {s.segmenter.kind!r} segmenter needs an existing "
                             f"path, {missing[0]!r} is not one")
    start = _start_step(config)
    if not isinstance(f.step, int) or not start <= f.step < steps:
        raise ValueError(f"config.fusion.step must be an int in [{start}, {steps}) (the DDIM step of eq. 11, not "
                         f"before the condition's start step {start}), got {f.step!r}")
    if not isinstance(f.num_backgrounds, int) or f.num_backgrounds < 1:
        raise ValueError(f"config.fusion.num_backgrounds must be an int >= 1, got {f.num_backgrounds!r}")
    if not f.eta > 0:
        raise ValueError(f"config.fusion.eta must be > 0 (the backgrounds are stochastic trajectories), got {f.eta!r}")
    if f.weights not in WEIGHTS:
        raise ValueError(f"config.fusion.weights must be one of {WEIGHTS}, got {f.weights!r}")
    if len(f.fixed_weights) != 2:
        raise ValueError(f"config.fusion.fixed_weights must be (w1, w2), got {f.fixed_weights!r}")
    if config.combined.task != "combined_tuning":
        raise ValueError(f"config.combined.task must be 'combined_tuning', got {config.combined.task!r}")
    try:
        validate_train_config(_combined_config(config, "", ""))
    except ValueError as e:
        raise ValueError(f"config.combined: {e}") from None
    if not config.base.checkpoint:
        stages.validate_stages(config.base.stages, "/nonexistent-workdir")


def _start_step(config: ml_collections.ConfigDict) -> int:
    """The DDIM step the reference trajectory starts at: 0 from noise, later from a noised condition."""
    if config.separate.condition == "":
        return 0
    return int(round((1.0 - config.separate.condition_strength) * config.sampling.num_steps))


def _combined_config(config: ml_collections.ConfigDict, base: str, tuning_set: str) -> ml_collections.ConfigDict:
    """The trainer config of module 3: ``config.combined`` on the base checkpoint and the fused tuning set."""
    c = ml_collections.ConfigDict(config.combined.to_dict())
    c.model.init_from = base
    c.data.sources = [source("fused", "array_record", 1.0, path=tuning_set)]
    c.data.num_frames, c.data.stride = 2 * config.separate.num_frames, 1
    c.data.resolution = (config.sampling.resolution, config.sampling.resolution)
    return c


# --- helpers -----------------------------------------------------------------------------------------------------

def _write_media(directory: str, name: str, frames: np.ndarray, fps: float, columns: int = 8) -> dict[str, str]:
    """``name.mp4`` / ``.gif`` / ``.png`` (contact sheet) of uint8 ``[T, H, W, 3]`` frames, written atomically."""
    paths = {ext: os.path.join(directory, f"{name}.{ext}") for ext in ("mp4", "gif", "png")}
    with cli.AtomicFiles() as files:
        media.write_video(files.path(paths["mp4"]), frames, fps)
        media.write_video(files.path(paths["gif"]), frames, fps)
        media.write_contact_sheet(files.path(paths["png"]), frames, columns)
    return paths


def _save_npz(path: str, **arrays: np.ndarray) -> None:
    with cli.atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def _load_npz(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class _Sampler:
    """A checkpoint's pipeline with the prompts' guidance conds (module 1, 2 and the baselines)."""

    def __init__(self, checkpoint: str, config: ml_collections.ConfigDict):
        from vidrd_jax.pipeline import VideoPipeline  # pylint: disable=import-outside-toplevel

        self.pipeline = VideoPipeline.from_checkpoint(checkpoint)
        self.config = config
        s = config.sampling
        prompts = list(config.prompts)
        embeddings = self.pipeline.encode_prompts(prompts + [s.negative_prompt])
        self.cond = {"text": embeddings[:len(prompts)], "negative": embeddings[len(prompts):],
                     "params": self.pipeline.params["unet"]}
        self.eps_fn = self.pipeline.eps_fn(s.guidance_scale)
        self.schedule = self.pipeline.schedule
        self.shape = self.pipeline.latent_shape(len(prompts), config.separate.num_frames, s.resolution, s.resolution)

    def steps(self, latents: Any, start: int, stop: int, eta: float = 0.0, key: jax.Array | None = None) -> jax.Array:
        """DDIM steps ``start .. stop - 1`` (eq. 7-8; stateless, so eq. 11 may replace the latent between ranges)."""
        ddim = SamplerConfig(self.config.sampling.num_steps, eta, "ddim")
        noise = draw_noise(key, self.shape, ddim)[1] if eta > 0 else None
        return sample_steps(self.eps_fn, self.schedule, ddim, self.cond, latents, start=start, stop=stop,
                            step_noise=noise)[0]


def _conditions(config: ml_collections.ConfigDict) -> np.ndarray:
    """uint8 ``[P, F, H, W, 3]``: the built-in renderer's clip of each prompt (the condition c)."""
    s, res = config.separate, config.sampling.resolution
    return np.stack([builtin.render_clip(*builtin.parse_combo(p), num_frames=s.num_frames, height=res, width=res,
                                         **s.render.to_dict()) for p in config.prompts])


# --- modules -----------------------------------------------------------------------------------------------------

def run_separate(config: ml_collections.ConfigDict, base: str, directory: str) -> dict[str, Any]:
    """Module 1: clips ``r`` (eq. 1, 7-8) and their masks (eq. 9); ``latents.npz`` holds what module 2 starts from."""
    sampler = _Sampler(base, config)
    s = config.separate
    key = jax.random.fold_in(jax.random.key(config.seed), 1)
    start = _start_step(config)
    noise = jax.random.normal(key, sampler.shape, np.float32)
    if s.condition == "builtin":
        condition = _conditions(config)
        t = timestep_at(sampler.schedule, SamplerConfig(config.sampling.num_steps), start)
        x_start = add_noise(sampler.schedule, sampler.pipeline.encode_clip(condition), noise,
                            np.full((len(condition),), t, np.int32))
    else:
        x_start = noise
    x_k = sampler.steps(x_start, start, config.fusion.step)
    frames = sampler.pipeline.decode_clip(sampler.steps(x_k, config.fusion.step, config.sampling.num_steps))
    masks = np.stack([make_segmenter(s.segmenter.kind, s.segmenter.path.replace("{i}", str(i)), s.render.to_dict(),
                                    builtin.object_alpha)(
        clip, prompt) for i, (clip, prompt) in enumerate(zip(frames, config.prompts))])
    _save_npz(os.path.join(directory, "latents.npz"), x_start=np.asarray(x_start), x_k=np.asarray(x_k))
    _save_npz(os.path.join(directory, "clips.npz"), frames=frames, masks=masks)
    videos = []
    for i, (clip, mask) in enumerate(zip(frames, masks)):
        videos.append(_write_media(directory, f"clip_{i}", clip, config.sampling.fps))
        videos.append(_write_media(directory, f"mask_{i}", mask_clip(clip, mask)[len(clip):], config.sampling.fps))
    return {"start_step": start, "foreground_fraction": float(masks.mean()), "videos": videos}


def run_fusion(config: ml_collections.ConfigDict, base: str, separate_dir: str, directory: str) -> dict[str, Any]:
    """Module 2: eq. 11 at step ``fusion.step``, eq. 12 down to ``r'``; writes the tuning set."""
    sampler = _Sampler(base, config)
    f = config.fusion
    latents = _load_npz(os.path.join(separate_dir, "latents.npz"))
    masks = _load_npz(os.path.join(separate_dir, "clips.npz"))["masks"]
    key = jax.random.fold_in(jax.random.key(config.seed), 2)
    start = _start_step(config)
    backgrounds = np.stack([np.asarray(sampler.steps(latents["x_start"], start, f.step, f.eta, k))
                            for k in jax.random.split(key, f.num_backgrounds)])
    fg_mask = latent_mask(masks, sampler.pipeline.vae_factor)
    fused, weights = [], []
    for i in range(len(config.prompts)):  # one (w1, w2) per clip
        w = fitted_weights(backgrounds[:, i], latents["x_k"][i], fg_mask[i]) if f.weights == "fitted" \
            else np.asarray(f.fixed_weights, np.float32)
        weights.append(np.asarray(w).tolist())
        fused.append(average_fusion(backgrounds[:, i], latents["x_k"][i], fg_mask[i], w))
    frames = sampler.pipeline.decode_clip(sampler.steps(np.stack(fused), f.step, config.sampling.num_steps))
    _save_npz(os.path.join(directory, "fused.npz"), frames=frames, masks=masks)
    tuning_set = os.path.join(directory, TUNING_SET)
    writer = ShardWriter(tuning_set, "fused", records_per_shard=1000)
    for i, (clip, mask, prompt) in enumerate(zip(frames, masks, config.prompts)):
        writer.write(encode_record(Raw(mask_clip(clip, mask), (prompt,), CLIP, f"fused/{i}")))
    writer.close({"kinds": [CLIP], "stride": 1, "keyframes": 2 * config.separate.num_frames,
                  "source": "vidrd_jax.recipes.four_module (video frames, then mask frames)"})
    videos = [_write_media(directory, f"fused_{i}", clip, config.sampling.fps) for i, clip in enumerate(frames)]
    return {"weights": weights, "tuning_set": tuning_set, "videos": videos}


def run_combined(config: ml_collections.ConfigDict, base: str, tuning_set: str, directory: str) -> dict[str, Any]:
    """Module 3: the trainer on eq. 20 (resumes from its checkpoints), then the export D'."""
    trainer_config = _combined_config(config, base, tuning_set)
    out = os.path.join(directory, "export")
    train.train_and_evaluate(trainer_config, directory)
    export.export(directory, out, use_ema=config.combined_export.ema, dtype=config.combined_export.dtype)
    return {"export": out, "metrics": os.path.join(directory, "metrics.jsonl")}


def _long_videos(checkpoint: str, config: ml_collections.ConfigDict, mode: str) -> tuple[np.ndarray, float, float]:
    """(uint8 [P, T, H, W, 3], sampling seconds, total seconds) of one long video per prompt on ``checkpoint``."""
    from vidrd_jax.pipeline import VideoPipeline  # pylint: disable=import-outside-toplevel

    started = time.perf_counter()
    pipeline = VideoPipeline.from_checkpoint(checkpoint)
    s, rows = config.sampling, [(p,) for p in config.prompts]
    key = jax.random.fold_in(jax.random.key(config.seed), 4)
    size = dict(height=s.resolution, width=s.resolution, prompts=rows)
    if mode == "codenoise":
        chunks = pipeline.co_denoise(generate.co_denoise_config(s, rows[0]), key=key,
                                     decode_frames=s.codenoise.decode_frames, **size)
    else:
        chunks = pipeline.generate_long_video(generate.long_video_config(s, rows[0]), key=key, **size)
    chunks = list(chunks)
    frames = np.concatenate([c.frames for c in chunks], axis=1)
    return frames, sum(c.sample_seconds + c.decode_seconds for c in chunks), time.perf_counter() - started


def run_long_video(config: ml_collections.ConfigDict, checkpoint: str, mode: str, directory: str, name: str
                   ) -> dict[str, Any]:
    """One long video per prompt (``mode``: codenoise or vidrd) -> media + ``{name}.npz`` of the exact frames."""
    frames, sample_s, total_s = _long_videos(checkpoint, config, mode)
    _save_npz(os.path.join(directory, f"{name}.npz"), frames=frames)
    columns = config.sampling.contact_sheet.columns
    videos = [_write_media(directory, f"{name}_{i}", v, config.sampling.fps, columns) for i, v in enumerate(frames)]
    return {"checkpoint": checkpoint, "mode": mode, "frames": os.path.join(directory, f"{name}.npz"),
            "sample_s": round(sample_s, 2), "total_s": round(total_s, 2), "videos": videos}


def run_evaluate(config: ml_collections.ConfigDict, base: str, summary: dict[str, Any], directory: str
                 ) -> dict[str, Any]:
    """Module 4's videos against plain co-denoising and VidRD on the base model: probes + wall times."""
    consistency = summary["modules"]["consistency"]
    framework_s = sum(summary["modules"][m]["seconds"] for m in ("separate", "fusion", "combined", "consistency"))
    methods = {"four_module": (consistency, framework_s),
               "codenoise": (run_long_video(config, base, "codenoise", directory, "codenoise"), None),
               "vidrd": (run_long_video(config, base, "vidrd", directory, "vidrd"), None)}
    e = config.evaluate
    rows: dict[str, dict[str, float]] = {}
    for name, (record, pipeline_s) in methods.items():
        frames = _load_npz(record["frames"])["frames"]
        rows[name] = probes.mean_probes(list(frames), list(config.prompts), saturation=e.saturation,
                                        min_blob_pixels=e.min_blob_pixels)
        rows[name].update(sample_s=record["sample_s"], total_s=pipeline_s if pipeline_s is not None
                          else record["total_s"])
    table = probes.markdown_table(rows)
    note = ("total_s: four_module = modules 1-4 (generation, fusion, tuning, co-denoising), the baselines = loading "
            "the base model and sampling; sample_s: the long video's sampling and decoding alone.\n")
    with cli.atomic_write(os.path.join(directory, "evaluation.md")) as f:
        f.write(f"# Four-module framework vs plain co-denoising vs VidRD ({len(config.prompts)} prompts, one run)\n\n"
                f"{table}\n{note}")
    with cli.atomic_write(os.path.join(directory, "evaluation.json")) as f:
        json.dump({"prompts": list(config.prompts), "methods": rows}, f, indent=2)
    return {"methods": rows, "table": os.path.join(directory, "evaluation.md"),
            "videos": {k: r["videos"] for k, (r, _) in methods.items() if k != "four_module"}}


# --- the run -----------------------------------------------------------------------------------------------------

def _base_checkpoint(config: ml_collections.ConfigDict, directory: str) -> dict[str, Any]:
    if config.base.checkpoint:
        return {"export": checkpoints.absolute(config.base.checkpoint)}
    staged = config.base.stages
    stages.run_stages(staged, directory)
    return {"export": export_dir(checkpoints.absolute(directory), staged.stages[-1])}


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Runs (or resumes) every module of ``config`` in ``workdir``; returns and writes the summary."""
    validate_config(config)
    workdir = checkpoints.absolute(workdir)
    summary: dict[str, Any] = {"workdir": workdir, "modules": {}}
    summary_path = epath.Path(workdir) / SUMMARY_FILE
    for name in MODULES:
        directory = os.path.join(workdir, name)
        record_path = epath.Path(directory) / RECORD_FILE
        if record_path.exists():
            logging.info("module %s: %s exists, skipping", name, record_path)
            summary["modules"][name] = {**json.loads(record_path.read_text()), "skipped": True}
            continue
        os.makedirs(directory, exist_ok=True)
        logging.info("module %s in %s", name, directory)
        start = time.perf_counter()
        base = summary["modules"].get("base", {}).get("export", "")
        if name == "base":
            record = _base_checkpoint(config, directory)
        elif name == "separate":
            record = run_separate(config, base, directory)
        elif name == "fusion":
            record = run_fusion(config, base, os.path.join(workdir, "separate"), directory)
        elif name == "combined":
            record = run_combined(config, base, summary["modules"]["fusion"]["tuning_set"], directory)
        elif name == "consistency":
            record = run_long_video(config, summary["modules"]["combined"]["export"], "codenoise", directory,
                                    "long_video")
        else:
            record = run_evaluate(config, base, summary, directory)
        record["seconds"] = round(time.perf_counter() - start, 1)
        with cli.atomic_write(str(record_path)) as f:
            json.dump(record, f, indent=2)
        summary["modules"][name] = record
        with cli.atomic_write(str(summary_path)) as f:
            json.dump(summary, f, indent=2)
    print(f"four-module run done; summary: {summary_path}; evaluation: {summary['modules']['evaluate']['table']}")
    return summary


def _run(argv: Sequence[str]) -> int:
    config, workdir = train.parse_args(argv)
    if "base" not in config or "fusion" not in config:
        raise cli.UsageError("--config is not a four-module config (no 'base' / 'fusion'): see configs/four_module.py")
    try:
        validate_config(config)
    except ValueError as e:
        raise cli.UsageError(str(e)) from None
    train.setup_logging()
    try:
        run(config, workdir)
    except train.Preempted as e:
        logging.warning("%s (exit status %d)", e, train.EXIT_PREEMPTED)
        return train.EXIT_PREEMPTED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vidrd_jax.four_module --config configs/four_module.py[:test] --workdir DIR [--config.a.b=v]``:
    flags, logging and exit statuses are the trainer's (0 done, 2 one ``error: ...`` line, 75 after a SIGTERM)."""
    return cli.run_command(_run, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
