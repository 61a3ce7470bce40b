"""The generator's outputs: per-video paths, the streaming writers (video, GIF, PNG contact sheet, frame hash) and
the JSON record of a run.

    one video:  OUT.mp4, OUT.gif, OUT.png (contact sheet) and OUT.json
    a batch:    OUT_0.mp4, OUT_0.gif, OUT_0.png, OUT_1.mp4, ... and one OUT.json
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Sequence

import ml_collections
import numpy as np

from vidrd_jax import cli, media
from vidrd_jax.cli import UsageError

VIDEO_EXTENSIONS = (".mp4", ".webm")


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
        media.write_contact_sheet(self._sheet_path, np.stack(self._sheet), columns=self.columns)
        return {"files": dict(self.paths), "num_frames": self.num_frames, "frames_sha256": self._hash.hexdigest()}


def chunk_record(chunk: Any, write_seconds: float) -> dict[str, Any]:
    """The JSON record of one :class:`~vidrd_jax.pipeline.VideoChunk` (a clip or a decode chunk)."""
    return {"index": chunk.index, "num_frames": int(chunk.frames.shape[1]),
            "guided_steps": None if chunk.guided_steps is None else list(chunk.guided_steps),
            "sample_s": round(chunk.sample_seconds, 4), "decode_s": round(chunk.decode_seconds, 4),
            "write_s": round(write_seconds, 4)}


def run_record(*, config: ml_collections.ConfigDict, checkpoint: str, model_config: dict[str, Any],
               rows: Sequence[tuple[str, ...]], sampler: Any, frames_per_video: int, videos: list[dict[str, Any]],
               chunks_key: str, chunks: list[dict[str, Any]], extra: dict[str, Any], setup_seconds: float,
               total_seconds: float, command: Sequence[str], jax_version: str, device: str) -> dict[str, Any]:
    """The run's JSON record: every setting, the seed, the prompts, the checkpoint, per-chunk timings, the hashes."""
    return {
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
        "frames_per_video": frames_per_video,
        "config": config.to_dict(),
        "sampler": {"type": type(sampler).__name__, **dataclasses.asdict(sampler)},
        "videos": videos,
        chunks_key: chunks,
        "timings": {"setup_s": round(setup_seconds, 4),
                    "sample_s": round(sum(r["sample_s"] for r in chunks), 4),
                    "decode_s": round(sum(r["decode_s"] for r in chunks), 4),
                    "write_s": round(sum(r["write_s"] for r in chunks), 4),
                    "total_s": round(total_seconds, 4)},
        "jax_version": jax_version,
        "device": device,
        **extra,
    }
