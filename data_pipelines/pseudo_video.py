"""Image -> pseudo-video by random zooming and panning (paper §4.2, "Image-text datasets"; Figure 4, top).

The paper does this with FFmpeg; here it is array ops. A crop box ``(y0, x0, y1, x1)`` is in continuous pixel
coordinates (pixel ``i`` covers ``[i, i + 1)``). Frame ``k`` of ``F`` shows the box at eased time
``s_k = smoothstep(k / (F - 1))``: the box centre moves linearly in ``s`` and its height/width change geometrically
(constant zoom speed), so frame 0 is exactly the start box and frame ``F - 1`` exactly the end box. Each box is
resampled to the output size by bilinear interpolation at sub-pixel positions.

Random boxes: the *base box* is the largest box with the output's aspect ratio inside the image; the box at zoom
``z`` is the base box scaled by ``1 / z``. Start and end zooms are drawn from ``zoom_range``; the start centre is
uniform over the positions keeping the box inside the image; the end centre is the start centre moved by a random
direction and a magnitude drawn from ``pan_range`` (fraction of the base box's height/width), clamped inside the
image. Every intermediate box stays inside the image too (its edges are linear-minus-convex / linear-plus-convex in
``s``, so they are bounded by the endpoints).
"""
from __future__ import annotations

import dataclasses
import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]  # (y0, x0, y1, x1), continuous pixel coordinates


@dataclasses.dataclass(frozen=True)
class ZoomPan:
    """Random zoom/pan ranges: zoom factors >= 1 (1 = base box), pan as a fraction of the base box size."""

    zoom_range: tuple[float, float] = (1.0, 1.4)
    pan_range: tuple[float, float] = (0.0, 0.2)

    def __post_init__(self):
        lo, hi = self.zoom_range
        if not 1.0 <= lo <= hi:
            raise ValueError(f"zoom_range: need 1 <= low <= high, got {self.zoom_range}")
        lo, hi = self.pan_range
        if not 0.0 <= lo <= hi:
            raise ValueError(f"pan_range: need 0 <= low <= high, got {self.pan_range}")


def smoothstep(t: np.ndarray) -> np.ndarray:
    """``3t^2 - 2t^3``: eases in and out, 0 -> 0 and 1 -> 1."""
    return t * t * (3.0 - 2.0 * t)


def interpolate_boxes(start: Box, end: Box, num_frames: int) -> np.ndarray:
    """``[num_frames, 4]`` boxes from ``start`` to ``end`` (smooth ramp; centres linear, sizes geometric)."""
    if num_frames < 1:
        raise ValueError(f"num_frames: must be >= 1, got {num_frames}")
    start, end = np.asarray(start, np.float64), np.asarray(end, np.float64)
    for name, box in (("start", start), ("end", end)):
        if box.shape != (4,) or not (box[2] > box[0] and box[3] > box[1]):
            raise ValueError(f"{name}: box must be (y0, x0, y1, x1) with y1 > y0 and x1 > x0, got {box.tolist()}")
    t = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)
    s = smoothstep(t)[:, None]
    centre0, centre1 = (start[:2] + start[2:]) / 2, (end[:2] + end[2:]) / 2
    size0, size1 = start[2:] - start[:2], end[2:] - end[:2]
    centre = centre0 + s * (centre1 - centre0)
    size = size0 * (size1 / size0) ** s
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    boxes[0] = start  # exact endpoints (no rounding drift)
    if num_frames > 1:
        boxes[-1] = end
    return boxes


def _sample_positions(lo: np.ndarray, hi: np.ndarray, count: int, limit: int) -> tuple[np.ndarray, ...]:
    """Per-frame source rows (or columns) for ``count`` output pixels spanning ``[lo, hi)``: indices and weight."""
    pos = lo[:, None] + (np.arange(count) + 0.5)[None, :] * ((hi - lo) / count)[:, None] - 0.5
    pos = np.clip(pos, 0.0, limit - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, limit - 1)
    return i0, i1, (pos - i0).astype(np.float32)


def crop_resize(image: np.ndarray, boxes: np.ndarray | Box, out_size: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of ``boxes`` (one ``(4,)`` or ``[F, 4]``) of uint8 ``[H, W, 3]`` to ``[F, h, w, 3]``.

    Separable: rows are interpolated first (``[F, h, W, 3]``), then columns. A box aligned to integer pixels and of
    exactly the output size reproduces those pixels exactly.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    out_h, out_w = out_size
    height, width = image.shape[:2]
    img = image.astype(np.float32)
    y0, y1, wy = _sample_positions(boxes[:, 0], boxes[:, 2], out_h, height)
    x0, x1, wx = _sample_positions(boxes[:, 1], boxes[:, 3], out_w, width)
    rows = img[y0] * (1.0 - wy[..., None, None]) + img[y1] * wy[..., None, None]  # [F, h, W, 3]
    f = np.arange(len(boxes))[:, None, None]
    h = np.arange(out_h)[None, :, None]
    left = rows[f, h, x0[:, None, :]]
    right = rows[f, h, x1[:, None, :]]
    out = left * (1.0 - wx[:, None, :, None]) + right * wx[:, None, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def zoom_pan_frames(image: np.ndarray, start: Box, end: Box, num_frames: int,
                    out_size: tuple[int, int]) -> np.ndarray:
    """Pseudo-video uint8 ``[num_frames, h, w, 3]`` moving from crop ``start`` to crop ``end`` of ``image``."""
    return crop_resize(image, interpolate_boxes(start, end, num_frames), out_size)


def base_box_size(image_size: tuple[int, int], out_size: tuple[int, int]) -> tuple[float, float]:
    """(height, width) of the largest box with the output's aspect ratio that fits in the image."""
    height, width = image_size
    aspect = out_size[1] / out_size[0]
    box_h = min(float(height), width / aspect)
    return box_h, box_h * aspect


def sample_zoom_pan(rng: np.random.Generator, image_size: tuple[int, int], out_size: tuple[int, int],
                    params: ZoomPan) -> tuple[Box, Box]:
    """Random start and end boxes (see module docstring); both lie inside the image."""
    height, width = image_size
    base = np.array(base_box_size(image_size, out_size))
    limit = np.array([height, width], np.float64)
    zoom0, zoom1 = rng.uniform(*params.zoom_range, size=2)
    size0, size1 = base / zoom0, base / zoom1
    centre0 = size0 / 2 + rng.uniform(0.0, 1.0, size=2) * (limit - size0)
    angle = rng.uniform(0.0, 2.0 * np.pi)
    shift = rng.uniform(*params.pan_range) * base * np.array([np.sin(angle), np.cos(angle)])
    centre1 = np.clip(centre0 + shift, size1 / 2, limit - size1 / 2)
    start = tuple(np.concatenate([centre0 - size0 / 2, centre0 + size0 / 2]).tolist())
    end = tuple(np.concatenate([centre1 - size1 / 2, centre1 + size1 / 2]).tolist())
    return start, end


def fit_for_zoom(image: np.ndarray, out_size: tuple[int, int], max_zoom: float) -> np.ndarray:
    """Downscales (never upscales) so the base box is ``max_zoom`` x the output size (antialiased, PIL).

    The most zoomed-in crop is then sampled about 1:1 and wider crops shrink by at most ``max_zoom``, which
    bilinear sampling handles without visible aliasing.
    """
    box_h, _ = base_box_size(image.shape[:2], out_size)
    scale = out_size[0] * max_zoom / box_h
    if scale >= 1.0:
        return image
    height, width = image.shape[:2]
    new = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    return np.asarray(Image.fromarray(image).resize(new, Image.Resampling.BILINEAR, reducing_gap=2.0))


def random_pseudo_video(rng: np.random.Generator, image: np.ndarray, num_frames: int, out_size: tuple[int, int],
                        params: ZoomPan) -> np.ndarray:
    """Paper §4.2 pseudo-video of uint8 ``[H, W, 3]`` image: ``[num_frames, h, w, 3]`` with random zoom/pan."""
    image = fit_for_zoom(image, out_size, params.zoom_range[1])
    start, end = sample_zoom_pan(rng, image.shape[:2], out_size, params)
    return zoom_pan_frames(image, start, end, num_frames, out_size)

