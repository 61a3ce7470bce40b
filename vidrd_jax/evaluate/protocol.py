"""Evaluation protocols: score a set of video files, and the UCF-101 zero-shot recipe that generates one first.

:class:`Evaluator` reads each video once (PyAV, :mod:`vidrd_jax.media`) and computes every metric whose model it was
given, streaming with bounded memory:

* always: VBench temporal flickering and dynamic degree (+ mean top-5% flow, ``motion_score``), and, with
  ``clip_frames``, the junction vs inside-clip change of long videos (:mod:`.long_video_metrics`);
* with a CLIP model: frame consistency and subject consistency on CLIP image embeddings, and CLIPSIM when prompts
  are given (per-clip prompts score each clip's frames) (:mod:`.clip_metrics`);
* with an I3D extractor and real videos: FVD (:mod:`.fvd`) on ``fvd_frames`` frames of every video; with a C3D
  model: the Inception Score (:mod:`.inception_score`).

Model features (CLIP per frame, I3D and C3D per video) are extracted on all devices and cached per video file
(:class:`.features.FeatureCache`, keyed by the file's SHA-256 and the extractor), so a rerun, or a second model
scored against the same real videos, only extracts what is new. Results are one JSON record (means over videos,
per-video values, settings, models, cache use) and a markdown table in which the dynamic degree always stands next
to the consistency scores (a still video is perfectly consistent).

The UCF-101 zero-shot recipe (:func:`run_ucf101`): a class -> prompt file (ours, ``ucf101_prompts.txt``, by
default), ``samples_per_class`` videos per class generated with :class:`vidrd_jax.pipeline.VideoPipeline` in
batches of ``batch_size`` (VidRD clip by clip; batch ``b`` always holds the same samples and uses key
``fold_in(seed, b)``, so an interrupted run resumes by regenerating only batches with missing files), written to
``OUT/videos/<Class>/<Class>_<k>.mp4``, then scored against the user's folder of real UCF-101 videos.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from vidrd_jax import media
from vidrd_jax.cli import AtomicFiles, UsageError, atomic_write
from vidrd_jax.evaluate import long_video_metrics as lvm
from vidrd_jax.evaluate.features import FeatureCache

VIDEO_EXTENSIONS = (".mp4", ".webm", ".avi", ".mov", ".mkv", ".gif")
UCF101_PROMPTS = Path(__file__).with_name("ucf101_prompts.txt")
C3D_FRAMES = 16  # the UCF-101 C3D of the Inception Score takes 16-frame clips
# Table columns in order (the dynamic degree beside the consistency scores), with their headers.
COLUMNS = {
    "fvd": "FVD ↓", "inception_score": "IS ↑", "clipsim": "CLIPSIM ↑", "frame_consistency": "frame consistency",
    "subject_consistency": "subject consistency", "dynamic_degree": "dynamic degree",
    "motion_score": "motion (px)", "temporal_flickering": "temporal flickering", "junction_change": "junction Δ",
    "inside_change": "inside Δ", "junction_ratio": "junction ratio",
}


# --- inputs ------------------------------------------------------------------------------------------------------

def list_videos(spec: str, flag: str = "--videos") -> list[str]:
    """Video files (by extension) under directory ``spec`` (recursively) or matching glob ``spec``, sorted."""
    if os.path.isdir(spec):
        paths = [os.path.join(root, name) for root, _, names in os.walk(spec) for name in names]
    else:
        paths = [p for p in glob.glob(spec, recursive=True) if os.path.isfile(p)]
    paths = sorted(p for p in paths if p.lower().endswith(VIDEO_EXTENSIONS)
                   and not os.path.basename(p).startswith("."))
    if not paths:
        raise UsageError(f"{flag}: no video files ({', '.join(VIDEO_EXTENSIONS)}) in or matching {spec!r}")
    return paths


def read_video_prompts(path: str, videos: Sequence[str], root: str | None = None) -> list[tuple[str, ...]]:
    """Each video's prompts from a JSON object ``{name: prompt | [per-clip prompts]}``; a video's name is its path
    relative to ``root`` (the ``--videos`` directory), its file name, or its file name without extension."""
    if not os.path.isfile(path):
        raise UsageError(f"--prompts: {path!r} is not a file")
    try:
        with open(path, encoding="utf-8") as f:
            table = json.load(f)
    except json.JSONDecodeError as e:
        raise UsageError(f"--prompts: {path!r} is not valid JSON ({e})") from None
    if not isinstance(table, dict):
        raise UsageError(f"--prompts: {path!r} must hold a JSON object {{video name: prompt or [prompts]}}")
    rows, used = [], set()
    for video in videos:
        names = [os.path.relpath(video, root)] if root else []
        names += [os.path.basename(video), os.path.splitext(os.path.basename(video))[0]]
        name = next((n for n in names if n in table), None)
        if name is None:
            raise UsageError(f"--prompts: {path!r} has no prompt for video {video!r} (keys tried: {names})")
        value = table[name]
        row = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, list) else ()
        if not row or not all(isinstance(p, str) and p.strip() for p in row):
            raise UsageError(f"--prompts: {path!r}[{name!r}] must be a non-empty prompt or list of prompts")
        rows.append(row)
        used.add(name)
    unused = sorted(set(table) - used)
    if unused:
        raise UsageError(f"--prompts: {path!r} names {len(unused)} video(s) not among the videos, e.g. {unused[:3]}")
    return rows


def read_class_prompts(path: str | os.PathLike = UCF101_PROMPTS) -> list[tuple[str, str]]:
    """``[(class, prompt)]`` from lines ``ClassName: prompt`` (``#`` comment lines and blank lines skipped)."""
    if not os.path.isfile(path):
        raise UsageError(f"--class-prompts: {os.fspath(path)!r} is not a file")
    pairs: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, prompt = (part.strip() for part in line.partition(":"))
            if not sep or not name or not prompt or not name.isidentifier():
                raise UsageError(f"--class-prompts: {os.fspath(path)!r} line {n}: expected 'ClassName: prompt', "
                                 f"got {line!r}")
            if any(name == c for c, _ in pairs):
                raise UsageError(f"--class-prompts: {os.fspath(path)!r} line {n}: class {name!r} appears twice")
            pairs.append((name, prompt))
    if not pairs:
        raise UsageError(f"--class-prompts: {os.fspath(path)!r} has no classes")
    return pairs


# --- evaluation --------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How videos are read and scored."""

    clip_frames: int | None = None  # frames per clip of long videos: junction metrics and per-clip prompts
    first_clip_frames: int | None = None  # the first clip's length when it differs (VidRD drop_prompt_frames)
    fps: float | None = None  # frame rate for the dynamic degree (default: each file's own)
    flow_method: str = "farneback"
    fvd_frames: int = 16  # frames per video for FVD (16: the standard FVD; 128: long-video FVD)
    fvd_stride: int = 1
    is_splits: int = 1  # Inception Score parts (TGANv2: 1 split of 2048 videos); IS takes the C3D's 16 frames

    def __post_init__(self) -> None:
        for name in ("clip_frames", "first_clip_frames"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 2):
                raise ValueError(f"{name} must be an int >= 2 (an inside-clip change needs two frames), got {value!r}")
        if self.first_clip_frames is not None and self.clip_frames is None:
            raise ValueError("first_clip_frames needs clip_frames")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"fps must be > 0, got {self.fps!r}")
        if self.flow_method not in lvm.FLOW_METHODS:
            raise ValueError(f"flow_method must be one of {lvm.FLOW_METHODS}, got {self.flow_method!r}")
        for name in ("fvd_frames", "fvd_stride", "is_splits"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")


class VideoFeatures:
    """Per-video features of a detector (I3D for FVD, C3D for IS) on the first ``num_frames`` frames taken every
    ``stride``, in batches, cached.

    ``extract(videos float32 [N, T, H, W, 3] in [-1, 1]) -> [N, D]``; videos of one batch share their size (a batch
    is cut whenever the size changes).
    """

    def __init__(self, name: str, extract: Callable[[np.ndarray], np.ndarray], identity: str,
                 cache_dir: str | None, num_frames: int, stride: int = 1, batch_size: int = 16):
        self.name = name
        self.extract = extract
        self.num_frames, self.stride = num_frames, stride
        self.batch_size = batch_size
        self.cache = FeatureCache(cache_dir, f"{name} {identity} frames={num_frames} stride={stride}")
        self.features: dict[str, np.ndarray] = {}
        self._pending: list[tuple[str, np.ndarray]] = []

    def add(self, path: str, frames: Callable[[int], np.ndarray]) -> None:
        """Queues video ``path``; ``frames(n)`` returns (at least) its first ``n`` uint8 frames if they are needed."""
        cached = self.cache.load(path)
        if cached is not None:
            self.features[path] = cached["features"]
            return
        span = (self.num_frames - 1) * self.stride + 1
        video = frames(span)
        if len(video) < span:
            raise UsageError(f"{path}: {len(video)} frames, but {self.name} takes {self.num_frames} frames every "
                             f"{self.stride} ({span} frames)")
        clip = video[:span:self.stride]
        if self._pending and self._pending[0][1].shape != clip.shape:
            self.flush()
        self._pending.append((path, clip))
        if len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        batch = np.stack([clip for _, clip in self._pending]).astype(np.float32) / 127.5 - 1.0
        for (path, _), feature in zip(self._pending, self.extract(batch)):
            self.features[path] = feature
            self.cache.save(path, {"features": feature})
        self._pending = []

    def matrix(self, paths: Sequence[str]) -> np.ndarray:
        """``[len(paths), D]`` features of queued videos, in order."""
        self.flush()
        return np.stack([self.features[p] for p in paths])


def _read(path: str, count: int | None = None) -> tuple[np.ndarray, float]:
    """(uint8 frames — all, or the first ``count`` — , fps) of a video; unreadable files are user errors."""
    try:
        with media.VideoReader(path) as reader:
            info = reader.info
            indices = None if count is None else range(min(count, info.num_frames))
            return reader.read(indices), info.fps
    except media.MediaError as e:
        raise UsageError(str(e)) from None


class Evaluator:
    """Scores video sets with the models it was given (any of them may be None)."""

    def __init__(self, settings: EvalSettings = EvalSettings(), *, clip: Any = None, i3d: Any = None,
                 c3d: Any = None, cache_dir: str | None = None, batch_size: int = 16):
        """``clip``: a :class:`.clip_metrics.CLIPEmbedder`; ``i3d`` / ``c3d``: ``(extract, identity)`` pairs, where
        ``extract`` maps float videos ``[N, T, H, W, 3]`` in [-1, 1] to per-video logits (:mod:`.fvd`'s
        ``FeatureExtractor`` of the Kinetics I3D; of the UCF-101 C3D, which takes 16 frames) and ``identity`` names
        the weights (for the cache)."""
        self.settings = settings
        self.clip = clip
        self.clip_cache = FeatureCache(cache_dir, clip.identity) if clip is not None else None
        self.i3d, self.c3d = i3d, c3d
        self.cache_dir = cache_dir
        self.batch_size = batch_size

    def _detectors(self) -> dict[str, VideoFeatures]:
        s, detectors = self.settings, {}
        if self.i3d is not None:
            detectors["i3d"] = VideoFeatures("i3d", *self.i3d, self.cache_dir, s.fvd_frames, s.fvd_stride,
                                             self.batch_size)
        if self.c3d is not None:
            detectors["c3d"] = VideoFeatures("c3d", *self.c3d, self.cache_dir, C3D_FRAMES, 1, self.batch_size)
        return detectors

    def _clip_scores(self, path: str, frames: np.ndarray, prompts: tuple[str, ...] | None,
                     starts: list[int] | None, texts: dict[str, np.ndarray]) -> dict[str, float]:
        from vidrd_jax.evaluate import clip_metrics

        embeds = self.clip_cache.get(path, lambda: {"image_embeds": self.clip.image_embeds(frames)})["image_embeds"]
        scores = {"frame_consistency": clip_metrics.frame_consistency(embeds),
                  "subject_consistency": lvm.subject_consistency(embeds)}
        if prompts is not None and self.clip.has_text:
            missing = [p for p in dict.fromkeys(prompts) if p not in texts]
            if missing:
                texts.update(zip(missing, self.clip.text_embeds(missing)))
            index = None
            if len(prompts) > 1:
                if starts is None or len(prompts) != len(starts) + 1:
                    raise UsageError(f"{path}: {len(prompts)} per-clip prompts but "
                                     f"{'no --clip-frames' if starts is None else f'{len(starts) + 1} clips'}")
                index = np.searchsorted(np.asarray(starts), np.arange(len(frames)), side="right")
            scores["clipsim"] = clip_metrics.clipsim(np.stack([texts[p] for p in prompts]), embeds, index)
        return scores

    def evaluate(self, videos: Sequence[str], prompts: Sequence[tuple[str, ...]] | None = None,
                 real: Sequence[str] | None = None, *, progress: bool = False) -> dict[str, Any]:
        """Scores ``videos`` (paths; ``prompts[i]``: video i's prompt(s)); FVD needs ``real`` video paths."""
        started = time.perf_counter()
        s = self.settings
        if not videos:
            raise UsageError("no videos to evaluate")
        if prompts is not None and len(prompts) != len(videos):
            raise UsageError(f"{len(prompts)} prompt rows for {len(videos)} videos")
        if self.i3d is not None and not real:
            raise UsageError("FVD needs real videos (--real) besides the I3D weights")
        detectors = self._detectors()
        texts: dict[str, np.ndarray] = {}
        per_video = []
        for i, path in enumerate(_progress(videos, progress, "videos")):
            frames, fps = _read(path)
            fps = s.fps or fps
            starts = lvm.clip_starts(len(frames), s.clip_frames, s.first_clip_frames) if s.clip_frames else None
            try:
                record = {"path": path, "num_frames": len(frames), "fps": fps,
                          **lvm.long_video_report(frames, fps=fps, starts=starts, flow_method=s.flow_method)}
            except ValueError as e:
                raise UsageError(f"{path}: {e}") from None
            if prompts is not None:
                record["prompts"] = list(prompts[i])
            if self.clip is not None:
                record.update(self._clip_scores(path, frames, prompts[i] if prompts else None, starts, texts))
            for detector in detectors.values():
                detector.add(path, lambda n: frames)
            per_video.append(record)
        metrics = {name: float(np.mean([r[name] for r in per_video])) for name in COLUMNS if name in per_video[0]}
        if "i3d" in detectors:
            metrics["fvd"] = self._fvd(detectors["i3d"], videos, real, progress)
        if "c3d" in detectors:
            metrics.update(self._inception_score(detectors["c3d"], videos))
        caches = [c for c in (self.clip_cache, *(d.cache for d in detectors.values())) if c is not None]
        return {
            "num_videos": len(videos), "num_real_videos": len(real) if real else 0,
            "metrics": {name: metrics[name] for name in [*COLUMNS, "inception_score_std"] if name in metrics},
            "settings": dataclasses.asdict(s),
            "models": {"clip": None if self.clip is None else self.clip.identity,
                       "i3d": None if self.i3d is None else self.i3d[1],
                       "c3d": None if self.c3d is None else self.c3d[1]},
            "cache": {"dir": self.cache_dir, "hits": sum(c.hits for c in caches),
                      "misses": sum(c.misses for c in caches)},
            "per_video": per_video,
            "seconds": round(time.perf_counter() - started, 3),
        }

    def _fvd(self, i3d: VideoFeatures, videos: Sequence[str], real: Sequence[str], progress: bool) -> float:
        from vidrd_jax.evaluate import fvd

        for path in _progress(real, progress, "real videos"):
            i3d.add(path, lambda n, path=path: _read(path, n)[0])
        fake, reference = i3d.matrix(videos), i3d.matrix(real)
        if min(len(fake), len(reference)) < 2:
            raise UsageError(f"FVD needs >= 2 videos per set, got {len(fake)} generated and {len(reference)} real")
        return fvd.fvd_from_stats(fvd.FeatureStats.from_features(reference), fvd.FeatureStats.from_features(fake))

    def _inception_score(self, c3d: VideoFeatures, videos: Sequence[str]) -> dict[str, float]:
        from vidrd_jax.evaluate import inception_score

        logits = c3d.matrix(videos)
        if not 1 <= self.settings.is_splits <= len(logits):
            raise UsageError(f"--is-splits {self.settings.is_splits} must be in [1, {len(logits)}] (the video count)")
        mean, std = inception_score.inception_score(inception_score.softmax64(logits), self.settings.is_splits)
        return {"inception_score": float(mean), "inception_score_std": float(std)}


def _progress(items: Sequence[Any], enabled: bool, desc: str) -> Iterable[Any]:
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=desc, leave=False)


# --- reports -----------------------------------------------------------------------------------------------------

def markdown_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per named result (``{name: evaluate() record}``), one column per metric any of them has."""
    present = [k for k in COLUMNS if any(k in r["metrics"] for r in rows.values())]
    lines = ["| set | videos | " + " | ".join(COLUMNS[k] for k in present) + " |",
             "|---|---:|" + "---:|" * len(present)]
    for name, record in rows.items():
        metrics = record["metrics"]
        cells = []
        for k in present:
            value = metrics.get(k)
            if value is None:
                cells.append("–")
            elif k == "inception_score" and "inception_score_std" in metrics:
                cells.append(f"{value:.2f} ± {metrics['inception_score_std']:.2f}")
            else:
                cells.append(f"{value:.2f}" if k in ("fvd", "motion_score") else f"{value:.4f}")
        lines.append(f"| {name} | {record['num_videos']} | " + " | ".join(cells) + " |")
    notes = ["", "Consistency and flickering are perfect for a still video: read them beside the dynamic degree "
             "(fraction of videos VBench's flow test calls dynamic). CLIPSIM is the mean text-frame cosine (not x100)."]
    return "\n".join(lines + notes) + "\n"


def write_results(record: Mapping[str, Any], out: str, title: str = "generated") -> tuple[str, str]:
    """Writes ``out`` (JSON) and ``out`` with ``.md`` (the table) atomically; returns both paths."""
    markdown = os.path.splitext(out)[0] + ".md"
    with AtomicFiles() as files:
        with open(files.path(out), "w") as f:
            json.dump(record, f, indent=2)
        with open(files.path(markdown), "w") as f:
            f.write(markdown_table({title: record}))
    return out, markdown


# --- UCF-101 zero-shot ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class UCF101Settings:
    """Generation settings of the UCF-101 zero-shot recipe (VidRD clip by clip, all frames kept)."""

    samples_per_class: int = 100
    batch_size: int = 8
    resolution: int = 256
    num_clips: int = 2  # 2 clips of N = 8 frames: the 16 frames FVD takes
    clip_frames: int = 8
    num_prompt_frames: int = 4
    num_steps: int = 50
    guidance_scale: float = 10.0
    seed: int = 0
    fps: float = 8.0

    def __post_init__(self) -> None:
        lows = {"samples_per_class": 1, "batch_size": 1, "resolution": 1, "num_clips": 1, "clip_frames": 2,
                "num_prompt_frames": 0, "num_steps": 1, "seed": 0}
        for name, low in lows.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        for name, positive in (("guidance_scale", False), ("fps", True)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 or
                                                                                       not positive and value == 0):
                raise ValueError(f"{name} must be a number {'>' if positive else '>='} 0, got {value!r}")

    def sampler(self, prompt: str):
        """The :class:`~vidrd_jax.diffusion.LongVideoConfig` of one sample (paper defaults for the rest)."""
        from vidrd_jax.diffusion import LongVideoConfig

        try:
            return LongVideoConfig(prompts=(prompt,), num_clips=self.num_clips, num_frames=self.clip_frames,
                                   num_prompt_frames=self.num_prompt_frames, num_steps=self.num_steps,
                                   guidance_scale=self.guidance_scale)
        except ValueError as e:
            raise UsageError(f"generation settings: {e}") from None


def ucf101_samples(classes: Sequence[tuple[str, str]], samples_per_class: int) -> list[tuple[str, str, str]]:
    """``[(class, prompt, relative path)]``: ``samples_per_class`` per class, class by class."""
    if isinstance(samples_per_class, bool) or not isinstance(samples_per_class, int) or samples_per_class < 1:
        raise UsageError(f"--samples-per-class must be a positive int, got {samples_per_class!r}")
    return [(name, prompt, os.path.join("videos", name, f"{name}_{k:04d}.mp4"))
            for name, prompt in classes for k in range(samples_per_class)]


def generate_samples(pipeline: Any, samples: Sequence[tuple[str, str, str]], settings: UCF101Settings, out_dir: str,
                     *, progress: bool = False) -> dict[str, int]:
    """Generates the missing videos of ``samples`` into ``out_dir`` (see the module docstring); returns counts."""
    import jax

    try:
        pipeline.check_size(settings.resolution, settings.resolution)
    except ValueError as e:
        raise UsageError(f"--resolution: {e}") from None
    size = settings.batch_size
    batches = [samples[i:i + size] for i in range(0, len(samples), size)]
    config = settings.sampler(samples[0][1])
    generated = 0
    for b, batch in enumerate(_progress(batches, progress, "batches")):
        if all(os.path.isfile(os.path.join(out_dir, rel)) for _, _, rel in batch):
            continue
        rows = [(prompt,) for _, prompt, _ in batch]
        rows += [rows[-1]] * (size - len(rows))  # a full last batch: one compiled shape
        key = jax.random.fold_in(jax.random.key(settings.seed), b)
        chunks = pipeline.generate_long_video(config, key=key, height=settings.resolution, width=settings.resolution,
                                              prompts=rows)
        videos = np.concatenate([chunk.frames for chunk in chunks], axis=1)
        with AtomicFiles() as files:
            for (_, _, rel), frames in zip(batch, videos):
                media.write_video(files.path(os.path.join(out_dir, rel)), frames, fps=settings.fps)
        generated += len(batch)
    return {"generated": generated, "reused": len(samples) - generated, "batches": len(batches)}


def run_ucf101(checkpoint: str, out_dir: str, real: Sequence[str], evaluator: Evaluator, settings: UCF101Settings,
               *, class_prompts: str | os.PathLike = UCF101_PROMPTS, progress: bool = False,
               command: Sequence[str] = ()) -> dict[str, Any]:
    """Generates the samples (resuming), scores them against ``real`` and writes ``OUT/results.{json,md}`` and
    ``OUT/prompts.json``; returns the JSON record."""
    from vidrd_jax.pipeline import VideoPipeline

    started = time.perf_counter()
    classes = read_class_prompts(class_prompts)
    samples = ucf101_samples(classes, settings.samples_per_class)
    settings.sampler(classes[0][1])  # validates before the checkpoint loads
    try:
        pipeline = VideoPipeline.from_checkpoint(checkpoint, progress=progress)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(f"--checkpoint: {e}") from None
    os.makedirs(out_dir, exist_ok=True)
    counts = generate_samples(pipeline, samples, settings, out_dir, progress=progress)
    generation_seconds = time.perf_counter() - started
    prompts_json = os.path.join(out_dir, "prompts.json")
    with atomic_write(prompts_json) as f:
        json.dump({rel: prompt for _, prompt, rel in samples}, f, indent=1)
    videos = [os.path.join(out_dir, rel) for _, _, rel in samples]
    record = evaluator.evaluate(videos, [(prompt,) for _, prompt, _ in samples], real, progress=progress)
    by_class = {}
    for (name, _, _), video in zip(samples, record["per_video"]):
        by_class.setdefault(name, []).append(video.get("clipsim"))
    if record["per_video"] and "clipsim" in record["per_video"][0]:
        record["clipsim_per_class"] = {name: float(np.mean(values)) for name, values in by_class.items()}
    record["command"] = list(command)
    record["protocol"] = {"name": "ucf101_zero_shot", "checkpoint": os.path.abspath(checkpoint),
                          "class_prompts": os.path.abspath(class_prompts), "num_classes": len(classes),
                          **dataclasses.asdict(settings), **counts,
                          "generation_seconds": round(generation_seconds, 3)}
    write_results(record, os.path.join(out_dir, "results.json"), title="UCF-101 zero-shot")
    return record
