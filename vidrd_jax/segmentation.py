"""Foreground / background masks of generated frames (paper 000 eq. 9: ``[m_fg, m_bg] = F_1(r)``).

A segmenter maps a clip (uint8 ``[F, H, W, 3]``) and its prompt to a boolean foreground mask ``[F, H, W]``; the
background is its complement. Three are provided:

* :class:`FileMasks`: masks stored beside the frames, a ``.npy`` file (bool or 0/1 ``[F, H, W]``) or a folder of
  PNGs (``frame_00000.png``, …; non-zero = foreground); :func:`save_masks` writes either.
* :class:`BuiltinMasks`: the built-in dataset's exact masks: the renderer knows every object's pixels, so the masks
  of a rendered clip are exact, not estimated (the renderer, ``data_pipelines.builtin.object_alpha``, is passed in:
  the core does not import the data package).
* :class:`SamMasks`: Segment Anything (the paper's F_1) through transformers' ``SamModel`` from a local folder,
  prompted with one point per frame at the pixel farthest in colour from the frame's median (the most salient one).

:func:`latent_mask` carries a pixel mask to the latent grid (a latent cell is foreground when any of its pixels is).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Protocol

import jax.numpy as jnp
import numpy as np

KINDS = ("files", "builtin", "sam")


class Segmenter(Protocol):
    """``segmenter(frames uint8 [F, H, W, 3], prompt) -> bool [F, H, W]`` foreground mask."""

    def __call__(self, frames: np.ndarray, prompt: str) -> np.ndarray: ...


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [F, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames


def _check_masks(masks: np.ndarray, frames: np.ndarray, where: str) -> np.ndarray:
    if masks.shape != frames.shape[:3]:
        raise ValueError(f"{where}: masks have shape {masks.shape}, the frames need {frames.shape[:3]}")
    return masks


def save_masks(path: str, masks: np.ndarray) -> None:
    """Writes bool ``[F, H, W]`` masks as ``path`` ending in ``.npy``, else as a folder of PNGs (255 = foreground)."""
    masks = np.asarray(masks)
    if masks.dtype != np.bool_ or masks.ndim != 3:
        raise ValueError(f"masks must be bool [F, H, W], got {masks.dtype} {masks.shape}")
    if path.endswith(".npy"):
        np.save(path, masks, allow_pickle=False)
        return
    from PIL import Image  # pylint: disable=import-outside-toplevel

    os.makedirs(path, exist_ok=True)
    for i, mask in enumerate(masks):
        Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(path, f"frame_{i:05d}.png"))


class FileMasks:
    """Masks read from ``path`` (``.npy`` or a PNG folder, see :func:`save_masks`); the prompt is ignored."""

    def __init__(self, path: str):
        if not os.path.exists(path):
            raise FileNotFoundError(f"masks: {path!r} does not exist")
        self.path = path

    def load(self) -> np.ndarray:
        """bool ``[F, H, W]``; raises naming the file for anything that is not a 0/1 mask."""
        if self.path.endswith(".npy"):
            try:
                masks = np.load(self.path, allow_pickle=False)
            except ValueError as e:
                raise ValueError(f"masks: {self.path!r} is not a plain .npy array ({e})") from None
            if masks.ndim != 3 or not np.isin(masks, (0, 1)).all():
                raise ValueError(f"masks: {self.path!r} must hold 0/1 values [F, H, W], got {masks.dtype} "
                                 f"{masks.shape}")
            return masks.astype(bool)
        from PIL import Image  # pylint: disable=import-outside-toplevel

        files = sorted(f for f in os.listdir(self.path) if f.lower().endswith(".png"))
        if not files:
            raise ValueError(f"masks: folder {self.path!r} holds no .png files")
        masks = []
        for name in files:
            image = np.asarray(Image.open(os.path.join(self.path, name)))
            if image.ndim != 2:
                raise ValueError(f"masks: {os.path.join(self.path, name)!r} is not a single-channel image")
            masks.append(image > 0)
        return np.stack(masks)

    def __call__(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        return _check_masks(self.load(), _check_frames(frames), f"masks {self.path!r}")


# ``render_alpha(prompt, num_frames, height, width, **render) -> [F, H, W]`` object coverage of a rendered clip.
RenderAlpha = Callable[..., np.ndarray]


class BuiltinMasks:
    """Exact masks of the built-in renderer: the prompt names the combo (``"a red circle moving left"``) and
    ``render`` the other renderer arguments (seed, background, size/travel ranges …) of the rendered clip;
    ``render_alpha`` is the renderer's coverage function (``data_pipelines.builtin.object_alpha``)."""

    def __init__(self, render_alpha: RenderAlpha, **render: Any):
        self.render_alpha = render_alpha
        self.render = render

    def __call__(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        frames = _check_frames(frames)
        f, h, w = frames.shape[:3]
        return self.render_alpha(prompt, f, h, w, **self.render) > 0


class SamMasks:
    """Segment Anything (``transformers.SamModel`` + ``SamProcessor``) loaded from the local folder ``path``.

    Each frame is prompted with one point, the pixel farthest (RGB distance) from the frame's median colour; of
    SAM's three candidate masks the one with the highest predicted IoU is kept.
    """

    def __init__(self, path: str):
        from transformers import SamModel, SamProcessor  # pylint: disable=import-outside-toplevel

        if not os.path.isdir(path):
            raise FileNotFoundError(f"sam: {path!r} is not a folder holding a SamModel and its SamProcessor")
        try:
            self.model = SamModel.from_pretrained(path, use_safetensors=True).eval()
            self.processor = SamProcessor.from_pretrained(path)
        except (OSError, ValueError) as e:
            raise ValueError(f"sam: cannot load a SamModel / SamProcessor from {path!r}: {e}") from None

    @staticmethod
    def salient_points(frames: np.ndarray) -> np.ndarray:
        """int ``[F, 2]`` (x, y) of the pixel farthest in colour from each frame's median colour."""
        pixels = frames.reshape(len(frames), -1, 3).astype(np.float32)
        distance = np.linalg.norm(pixels - np.median(pixels, axis=1, keepdims=True), axis=-1)
        flat = np.argmax(distance, axis=1)
        return np.stack([flat % frames.shape[2], flat // frames.shape[2]], axis=1)

    def __call__(self, frames: np.ndarray, prompt: str) -> np.ndarray:
        import torch  # pylint: disable=import-outside-toplevel

        frames = _check_frames(frames)
        points = [[[int(x), int(y)]] for x, y in self.salient_points(frames)]
        inputs = self.processor(images=list(frames), input_points=points, return_tensors="pt")
        with torch.no_grad():
            out = self.model(pixel_values=inputs["pixel_values"], input_points=inputs["input_points"],
                             multimask_output=True)
        masks = self.processor.image_processor.post_process_masks(out.pred_masks, inputs["original_sizes"],
                                                                  inputs["reshaped_input_sizes"])
        best = out.iou_scores[:, 0].argmax(-1)  # [F]: the candidate with the highest predicted IoU
        return np.stack([m[0, int(b)].numpy() for m, b in zip(masks, best)]).astype(bool)


def make_segmenter(kind: str, path: str = "", render: dict[str, Any] | None = None,
                   render_alpha: RenderAlpha | None = None) -> Segmenter:
    """``files`` (``path``: .npy or PNG folder), ``builtin`` (``render_alpha`` with ``render``'s arguments) or
    ``sam`` (``path``: a local SamModel folder)."""
    if kind == "files":
        return FileMasks(path)
    if kind == "builtin":
        if render_alpha is None:
            raise ValueError("segmenter.kind 'builtin' needs the renderer's render_alpha function")
        return BuiltinMasks(render_alpha, **(render or {}))
    if kind == "sam":
        return SamMasks(path)
    raise ValueError(f"segmenter.kind must be one of {KINDS}, got {kind!r}")


def latent_mask(mask: Any, factor: int) -> jnp.ndarray:
    """Pixel mask ``[..., H, W]`` (bool or 0/1) -> float32 ``[..., H/factor, W/factor, 1]`` on the latent grid: 1
    where any pixel of the ``factor x factor`` cell is foreground, else 0 (so the background ``1 - m`` stays binary)."""
    mask = jnp.asarray(mask).astype(jnp.float32)
    *lead, h, w = mask.shape
    if h % factor or w % factor:
        raise ValueError(f"mask height/width {(h, w)} must be multiples of the latent factor {factor}")
    cells = mask.reshape(*lead, h // factor, factor, w // factor, factor)
    return jnp.max(cells, axis=(-3, -1))[..., None]
