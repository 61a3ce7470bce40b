"""CLIP metrics of generated videos: CLIPSIM (text-frame similarity) and frame consistency.

* :func:`clipsim`: the mean over frames of ``cos(text_embed, image_embed(frame))`` with CLIP's projected embeddings,
  as a raw cosine in [-1, 1] (the convention of GODIVA / Make-A-Video / VideoFactory tables, e.g. 0.30; no ×100,
  no clipping at 0). A long video with per-clip prompts scores each clip's frames against its own prompt.
* :func:`frame_consistency`: the mean cosine similarity of consecutive frames' image embeddings (1 for a still
  video: report it next to the dynamic degree of :mod:`vidrd_jax.evaluate.long_video_metrics`).

:class:`CLIPEmbedder` turns uint8 frames and prompts into those embeddings with :mod:`.clip_vision` on all devices
(:class:`.features.ShardedApply`); images are preprocessed as ``CLIPImageProcessor`` does (bicubic resize of the
shorter side, center crop, CLIP mean/std).
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import numpy as np

from vidrd_jax.evaluate import clip_vision
from vidrd_jax.evaluate.features import ShardedApply, weights_signature
from vidrd_jax.models.tokenizer import Tokenizer


def _apply(config: clip_vision.CLIPConfig, method: str, params, inputs: jax.Array) -> jax.Array:
    return clip_vision.CLIPModel(config).apply({"params": params}, inputs, method=method)


class CLIPEmbedder:
    """Projected CLIP embeddings of frames and prompts (unnormalised, float32)."""

    def __init__(self, config: clip_vision.CLIPConfig, params, tokenizer: Tokenizer | None,
                 preprocess: clip_vision.ClipPreprocess, *, batch_size: int = 64, identity: str = "in-memory"):
        self.config = config
        self.tokenizer = tokenizer
        self.preprocess = preprocess
        self.identity = f"clip {identity} {preprocess}"  # what the features depend on (for FeatureCache)
        self._images = ShardedApply(functools.partial(_apply, config, "image_features"), params, batch_size)
        self._texts = None
        if config.text is not None:
            self._texts = ShardedApply(functools.partial(_apply, config, "text_features"), params, batch_size,
                                       mesh=self._images.mesh)

    @classmethod
    def from_folder(cls, folder: str, *, batch_size: int = 64) -> "CLIPEmbedder":
        """A transformers ``CLIPModel`` (CLIPSIM and consistency) or ``CLIPVisionModelWithProjection`` folder."""
        config, params, tokenizer, preprocess = clip_vision.load_clip(folder)
        return cls(config, params, tokenizer, preprocess, batch_size=batch_size, identity=weights_signature(folder))

    @property
    def has_text(self) -> bool:
        return self._texts is not None

    def image_embeds(self, frames: np.ndarray) -> np.ndarray:
        """uint8 ``[N, H, W, 3]`` -> ``[N, projection_dim]``."""
        return self._images(clip_vision.preprocess_frames(frames, self.preprocess))

    def text_embeds(self, prompts: Sequence[str]) -> np.ndarray:
        """``[len(prompts), projection_dim]``."""
        if self._texts is None:
            raise ValueError("the CLIP model has no text tower: CLIPSIM needs a CLIPModel folder (both towers)")
        return self._texts(self.tokenizer.encode(list(prompts)))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def clipsim(text_embeds: np.ndarray, frame_embeds: np.ndarray, clip_index: np.ndarray | None = None) -> float:
    """Mean over frames of the cosine between each frame's image embedding and its prompt's text embedding.

    ``text_embeds`` ``[P, D]`` (or ``[D]``), ``frame_embeds`` ``[F, D]``; ``clip_index`` ``[F]`` gives each frame's
    prompt row (default: row 0 for every frame).
    """
    text, frames = _unit(np.atleast_2d(text_embeds)), _unit(frame_embeds)
    if frames.ndim != 2 or text.shape[1] != frames.shape[1]:
        raise ValueError(f"clipsim: text {text.shape} and frame {frames.shape} embeddings must be [P, D] and [F, D]")
    index = np.zeros(len(frames), int) if clip_index is None else np.asarray(clip_index)
    if index.shape != (len(frames),) or index.min() < 0 or index.max() >= len(text):
        raise ValueError(f"clipsim: clip_index must give one prompt row in [0, {len(text)}) per frame")
    return float(np.mean(np.sum(text[index] * frames, axis=-1)))


def frame_consistency(frame_embeds: np.ndarray) -> float:
    """Mean cosine similarity of consecutive frames' image embeddings ``[F, D]`` (F >= 2)."""
    frames = _unit(frame_embeds)
    if frames.ndim != 2 or len(frames) < 2:
        raise ValueError(f"frame_consistency needs [F >= 2, D] embeddings, got {frames.shape}")
    return float(np.mean(np.sum(frames[1:] * frames[:-1], axis=-1)))
