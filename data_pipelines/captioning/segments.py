"""Segment-then-caption for long, untrimmed classification videos (paper §4.2, Figure 4, bottom; VideoLT).

Every ``frame_stride``-th frame is scored against the class label; a frame is *kept* iff its relevance score is
>= ``threshold`` AND (when a VLM judge is given) the VLM answers "yes" to a relevance question. Maximal runs of
kept frames become segments, segments shorter than ``min_frames`` are dropped, and each remaining segment is
captioned from its middle kept frame.

Frame units (exact): sampled frames are ``s_k = k * frame_stride`` for ``s_k < num_frames``; sample ``s_k`` stands
for the original frames ``[s_k, min(s_k + frame_stride, num_frames))``. A run of kept samples ``s_i .. s_j`` is the
segment ``[start_frame, end_frame) = [s_i, min(s_j + frame_stride, num_frames))`` — start inclusive, end
exclusive, in original frame indices — of length ``end_frame - start_frame``. A segment is kept iff that length is
``>= min_frames`` (a segment exactly ``min_frames`` long is kept).

Scoring is pluggable: any ``ScoreFn(frames uint8 [T, H, W, 3], label) -> float [T]`` (``ClipFrameScorer`` is the
paper's CLIP matching score) and any ``JudgeFn(frames, label) -> bool [T]`` (``VlmRelevanceJudge`` wraps a
``Captioner``; the paper uses MiniGPT-4, we default to the BLIP-2 captioner).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Callable, Sequence

import numpy as np

from data_pipelines.captioning.captioners import (
    PROMPT_TEMPLATES,
    Captioner,
    check_model_folder,
    check_tokenizer,
    choose_template,
    format_prompt,
    label_text,
    load_local,
    torch_dtype,
)

ScoreFn = Callable[[np.ndarray, str], np.ndarray]
JudgeFn = Callable[[np.ndarray, str], np.ndarray]

CLIP_TEXT_TEMPLATE = "a video of {label}"
RELEVANCE_QUESTION = "Question: is this a picture of {label}? Answer yes or no. Answer:"


@dataclasses.dataclass(frozen=True)
class SegmentConfig:
    """Segment-then-caption settings.

    frame_stride: score every k-th frame (k >= 1).
    threshold: minimum relevance score of a kept frame (CLIP cosine similarity lies in [-1, 1]).
    min_frames: minimum segment length in original frames (inclusive; see module docstring).
    read_chunk: sampled frames decoded and scored at a time (bounds host memory on long videos).
    """

    frame_stride: int = 8
    threshold: float = 0.25
    min_frames: int = 32
    read_chunk: int = 64

    def __post_init__(self):
        if self.frame_stride < 1:
            raise ValueError(f"frame_stride: must be >= 1, got {self.frame_stride}")
        if self.min_frames < 1:
            raise ValueError(f"min_frames: must be >= 1, got {self.min_frames}")
        if self.read_chunk < 1:
            raise ValueError(f"read_chunk: must be >= 1, got {self.read_chunk}")
        if not np.isfinite(self.threshold):
            raise ValueError(f"threshold: must be finite, got {self.threshold}")


def sample_indices(num_frames: int, frame_stride: int) -> np.ndarray:
    """Original indices of the scored frames: ``0, k, 2k, ... < num_frames``."""
    if num_frames < 0 or frame_stride < 1:
        raise ValueError(f"num_frames/frame_stride: need num_frames >= 0 and frame_stride >= 1, "
                         f"got {num_frames}, {frame_stride}")
    return np.arange(0, num_frames, frame_stride, dtype=np.int64)


def keep_mask(scores: np.ndarray, threshold: float, judged: np.ndarray | None = None) -> np.ndarray:
    """``scores >= threshold`` and, when given, the judge's verdicts (bool, same length)."""
    scores = np.asarray(scores, dtype=np.float64)
    kept = scores >= threshold
    if judged is not None:
        judged = np.asarray(judged, dtype=bool)
        if judged.shape != kept.shape:
            raise ValueError(f"judged: shape {judged.shape} != scores shape {kept.shape}")
        kept &= judged
    return kept


def find_segments(kept: np.ndarray, num_frames: int, frame_stride: int, min_frames: int) -> list[tuple[int, int, int]]:
    """Maximal runs of kept samples as ``(start_frame, end_frame, middle_sample)``, end exclusive.

    ``kept[k]`` is the verdict on sample ``k * frame_stride``; ``middle_sample`` is the original index of the middle
    kept sample of the run (``s_{(i + j) // 2}``), the frame that is captioned. Runs shorter than ``min_frames``
    original frames are dropped (see module docstring for the exact units).
    """
    kept = np.asarray(kept, dtype=bool)
    expected = len(sample_indices(num_frames, frame_stride))
    if kept.shape != (expected,):
        raise ValueError(f"kept: expected shape ({expected},) for {num_frames} frames at stride {frame_stride}, "
                         f"got {kept.shape}")
    # Run boundaries from the padded 0/1 sequence: +1 where a run starts, -1 one past where it ends.
    edges = np.diff(np.concatenate([[0], kept.astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # sample k-indices, stop exclusive
    segments = []
    for i, j_excl in zip(starts.tolist(), stops.tolist()):
        start = i * frame_stride
        end = min(j_excl * frame_stride, num_frames)  # = min(s_j + stride, num_frames) with j = j_excl - 1
        if end - start >= min_frames:
            segments.append((start, end, ((i + j_excl - 1) // 2) * frame_stride))
    return segments


def parse_yes_no(answer: str) -> bool:
    """True iff the answer's first word is yes/yeah/yep (any case); anything else, unparsable included, is "no"."""
    words = re.findall(r"[a-z]+", answer.lower())
    return bool(words) and words[0] in ("yes", "yeah", "yep")


class VlmRelevanceJudge:
    """Asks a VLM a yes/no relevance question per frame (the paper's MiniGPT-4 check)."""

    def __init__(self, vlm: Captioner, question: str = RELEVANCE_QUESTION):
        if "{label}" not in question:
            raise ValueError(f"question: {question!r} does not contain '{{label}}'")
        self.vlm = vlm
        self.question = question

    def __call__(self, frames: np.ndarray, label: str) -> np.ndarray:
        prompt = format_prompt(self.question, label)
        answers = self.vlm.caption(list(frames), [prompt] * len(frames))
        return np.array([parse_yes_no(a) for a in answers], dtype=bool)


class ClipFrameScorer:
    """CLIP matching score: cosine similarity of each frame's image embedding with ``"a video of {label}"``."""

    def __init__(self, model: Any, processor: Any, device: str = "cpu", batch_size: int = 32,
                 text_template: str = CLIP_TEXT_TEMPLATE):
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        if "{label}" not in text_template:
            raise ValueError(f"text_template: {text_template!r} does not contain '{{label}}'")
        self.model = model
        self.processor = processor
        self.device = device
        self.batch_size = int(batch_size)
        self.text_template = text_template
        self._text_cache: dict[str, Any] = {}

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str = "cpu", dtype: str = "float32",
                        batch_size: int = 32, text_template: str = CLIP_TEXT_TEMPLATE) -> "ClipFrameScorer":
        """Loads ``CLIPModel`` + ``CLIPProcessor`` from a local ``save_pretrained`` folder (never the hub)."""
        from transformers import CLIPModel, CLIPProcessor

        folder = check_model_folder(folder, "clip")
        processor = load_local(CLIPProcessor, folder, "clip", "processor (image processor + tokenizer)")
        check_tokenizer(processor.tokenizer, folder, "clip")
        model = load_local(CLIPModel, folder, "clip", "model", dtype=torch_dtype(dtype))
        model.to(device).eval()
        return cls(model, processor, device=device, batch_size=batch_size, text_template=text_template)

    def text_embedding(self, label: str) -> Any:
        """Unit-norm text embedding ``[1, D]`` of ``text_template`` filled with ``label`` (cached per label)."""
        import torch

        if label not in self._text_cache:
            text = self.text_template.format(label=label_text(label))
            tokens = self.processor.tokenizer([text], padding=True, truncation=True, return_tensors="pt")
            tokens = tokens.to(self.device)
            with torch.inference_mode():
                emb = self.model.get_text_features(**tokens).pooler_output.float()
            self._text_cache[label] = torch.nn.functional.normalize(emb, dim=-1)
        return self._text_cache[label]

    def __call__(self, frames: np.ndarray, label: str) -> np.ndarray:
        import torch

        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
        text = self.text_embedding(label)
        scores = []
        for i in range(0, len(frames), self.batch_size):
            pixels = self.processor.image_processor(list(frames[i:i + self.batch_size]), return_tensors="pt")
            pixels = pixels["pixel_values"].to(self.device, self.model.dtype)
            with torch.inference_mode():
                emb = self.model.get_image_features(pixel_values=pixels).pooler_output.float()
            scores.append((torch.nn.functional.normalize(emb, dim=-1) @ text.T)[:, 0].cpu().numpy())
        return np.concatenate(scores).astype(np.float32) if scores else np.zeros((0,), np.float32)


def mark_frames(frames: np.ndarray, label: str, score_fn: ScoreFn, threshold: float,
                judge: JudgeFn | None = None) -> np.ndarray:
    """Kept/dropped verdict per frame. The (costly) judge only sees frames whose score already passes."""
    scores = np.asarray(score_fn(frames, label), dtype=np.float64)
    if scores.shape != (len(frames),):
        raise ValueError(f"score_fn: returned shape {scores.shape}, expected ({len(frames)},)")
    passing = keep_mask(scores, threshold)
    if judge is None or not passing.any():
        return passing
    verdicts = np.asarray(judge(frames[passing], label), dtype=bool)
    if verdicts.shape != (int(passing.sum()),):
        raise ValueError(f"judge: returned shape {verdicts.shape}, expected ({int(passing.sum())},)")
    judged = np.zeros_like(passing)
    judged[passing] = verdicts
    return keep_mask(scores, threshold, judged)


def segment_video(path: str, num_frames: int, label: str, score_fn: ScoreFn, config: SegmentConfig,
                  judge: JudgeFn | None = None) -> list[tuple[int, int, int]]:
    """Decodes the sampled frames chunk by chunk, marks them, returns ``find_segments`` of the video.

    Decoding errors propagate as ``vidrd_jax.media.MediaError``.
    """
    from vidrd_jax.media import read_video

    indices = sample_indices(num_frames, config.frame_stride)
    kept = np.zeros(len(indices), dtype=bool)
    for c in range(0, len(indices), config.read_chunk):
        chunk = indices[c:c + config.read_chunk]
        frames = read_video(path, chunk.tolist())
        kept[c:c + len(chunk)] = mark_frames(frames, label, score_fn, config.threshold, judge)
    return find_segments(kept, num_frames, config.frame_stride, config.min_frames)


def segment_then_caption(
    path: str,
    num_frames: int,
    label: str,
    score_fn: ScoreFn,
    captioner: Captioner,
    config: SegmentConfig,
    rng: np.random.Generator,
    judge: JudgeFn | None = None,
    templates: Sequence[str] = PROMPT_TEMPLATES,
) -> list[dict[str, Any]]:
    """Index rows ``{"path", "caption", "label", "start_frame", "end_frame"}`` (end exclusive) of one long video.

    Each kept segment is captioned from its middle kept sample with a template drawn from ``rng`` (one draw per
    segment, in segment order). An empty list means no segment survived.
    """
    from vidrd_jax.media import read_video

    segments = segment_video(path, num_frames, label, score_fn, config, judge)
    if not segments:
        return []
    chosen = [choose_template(rng, templates) for _ in segments]
    frames = read_video(path, [mid for _, _, mid in segments])
    captions = captioner.caption(list(frames), [format_prompt(t, label) for t in chosen])
    return [{"path": path, "caption": text, "label": label, "start_frame": start, "end_frame": end}
            for (start, end, _), text in zip(segments, captions)]
