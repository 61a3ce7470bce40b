"""Built-in offline dataset (default for demos and tests): procedurally generated captioned clips and
pseudo-videos of the real photos bundled with scikit-image.

Shapes: a coloured shape moving in a stated direction over a plain or textured neutral-gray background, captioned
``"a red circle moving left"``. Both motions are windows of an endless constant-velocity trajectory on the torus (the
object leaves through one edge and re-enters through the opposite one), so ``render_clip(start_frame=k)`` renders the
clip that continues a ``k``-frame clip of the same seed. ``"path"``: the trajectory's first ``path_frames`` frames are
a path inside the frame (so with ``start_frame=0`` a clip of ``path_frames`` frames shows the whole path, and the
position at each frame gives the direction away); ``ShapesSource(start_frames=...)`` cuts clips at a few fixed
frames of that trajectory, e.g. those a VidRD long video's clips cover. ``"wrap"``: clips are cut at a random phase.
Wrap rather than bounce: the velocity never changes, so the caption's direction word is true at every frame (a
bounce would reverse it mid-clip). An optional fading trail behind the object shows the direction in every frame.
Everything is a pure function of ``(seed, index)`` at any resolution and frame count; the (colour, shape, direction)
vocabulary is exposed, and combinations can be held out for a compositional train / evaluation split:
``heldout_combos`` picks combinations each of whose attribute *pairs* still occurs in training, so held-out prompts
are novel compositions of seen words.
``render_clip`` is the renderer an evaluator uses to draw reference clips for any combination.

Photos: ``skimage.data`` photographs (astronaut, coffee, chelsea, rocket, …) with short captions, turned into
pseudo-videos by random zoom/pan (paper §4.2). Grayscale photos are converted to RGB.

Both sources ignore the pipeline's per-element RNG: item ``i`` is drawn from ``numpy.random.default_rng([seed, i])``
so it is reproducible outside the pipeline (``source.load(i, None)``).
"""
from __future__ import annotations

import functools
import itertools
from typing import Any

import numpy as np

from data_pipelines import base, pseudo_video, transforms

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 70),
    "blue": (40, 90, 230),
    "yellow": (240, 210, 40),
    "purple": (150, 70, 200),
    "orange": (245, 140, 30),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross")
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}  # (dy, dx)
BACKGROUNDS: tuple[str, ...] = ("plain", "textured")
SIZE_RANGE = (0.10, 0.16)  # object radius, fraction of the shorter side
TRAVEL_RANGE = (0.25, 0.45)  # "path": path length, fraction of the frame along the motion
STEP_RANGE = (0.04, 0.08)  # "wrap": displacement per frame, fraction of the frame along the motion
MOTIONS: tuple[str, ...] = ("path", "wrap")
TRAIL_OPACITY = 0.6  # a streak's opacity next to the object (it fades to 0 over ``trail`` frames of motion)
Combo = tuple[str, str, str]  # (colour, shape, direction)

PHOTOS: dict[str, str] = {
    "astronaut": "a photo of an astronaut",
    "coffee": "a photo of a cup of coffee",
    "chelsea": "a photo of a cat",
    "rocket": "a photo of a rocket on a launch pad",
    "camera": "a black and white photo of a man with a camera",
    "coins": "a black and white photo of old coins",
    "hubble_deep_field": "a photo of galaxies in deep space",
    "immunohistochemistry": "a microscope image of stained tissue",
    "retina": "a photo of a human retina",
    "moon": "a black and white photo of the surface of the moon",
    "brick": "a black and white photo of a brick wall",
    "grass": "a black and white photo of grass",
    "gravel": "a black and white photo of gravel",
    "motorcycle": "a photo of a motorcycle",
}


def caption_for(colour: str, shape: str, direction: str, part: int = 1) -> str:
    """``"a red circle moving left"`` (``"an orange …"``); ``part`` k > 1 appends ``", part k"`` (the k-th clip of a
    longer motion, see :class:`ShapesSource`'s ``part_stride``)."""
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape} moving {direction}" + (f", part {part}" if part > 1 else "")


def all_combos() -> list[Combo]:
    """Every (colour, shape, direction), in vocabulary order."""
    return list(itertools.product(COLOURS, SHAPES, DIRECTIONS))


def parse_combo(text: str) -> Combo:
    """``"red circle left"`` or ``"a red circle moving left"`` -> ``("red", "circle", "left")``."""
    words = [w for w in text.lower().split() if w not in ("a", "an", "moving")]
    if len(words) != 3 or words[0] not in COLOURS or words[1] not in SHAPES or words[2] not in DIRECTIONS:
        raise ValueError(f"holdout: {text!r} is not 'colour shape direction' with colour in {list(COLOURS)}, "
                         f"shape in {list(SHAPES)}, direction in {list(DIRECTIONS)}")
    return words[0], words[1], words[2]


def _pairs(combo: Combo) -> list[tuple[int, str, str]]:
    return [(0, combo[0], combo[1]), (1, combo[0], combo[2]), (2, combo[1], combo[2])]


def _pairs_covered(heldout: set[Combo]) -> bool:
    """Every attribute pair of every held-out combo occurs in some training combo."""
    seen = {p for c in all_combos() if c not in heldout for p in _pairs(c)}
    return all(p in seen for c in heldout for p in _pairs(c))


@functools.lru_cache(maxsize=64)
def heldout_combos(fraction: float = 0.2, seed: int = 0) -> tuple[Combo, ...]:
    """``round(fraction * 120)`` combos held out for evaluation, deterministic in ``seed``.

    Drawn in a seeded random order, a combo joins the held-out set only if all attribute pairs of the set stay
    covered by the training combos (so every held-out caption is a new composition of seen pairs).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout_fraction: must be in [0, 1), got {fraction}")
    combos = all_combos()
    target = int(round(fraction * len(combos)))
    order = np.random.default_rng([seed, 7919]).permutation(len(combos))
    held: set[Combo] = set()
    for i in order:
        if len(held) == target:
            break
        if _pairs_covered(held | {combos[i]}):
            held.add(combos[i])
    if len(held) < target:
        raise ValueError(f"holdout_fraction: {fraction} is too large to keep every attribute pair in training")
    return tuple(c for c in combos if c in held)


def split_combos(split: str, holdout_fraction: float = 0.2, holdout_seed: int = 0,
                 holdout: tuple[str, ...] = ()) -> list[Combo]:
    """Combos of ``split`` ("train", "heldout" or "all"); ``holdout`` (explicit list) overrides the fraction."""
    held = {parse_combo(h) for h in holdout} if holdout else set(heldout_combos(holdout_fraction, holdout_seed))
    if split == "all":
        return all_combos()
    if split == "train":
        return [c for c in all_combos() if c not in held]
    if split == "heldout":
        if not held:
            raise ValueError("split: 'heldout' needs holdout_fraction > 0 or an explicit holdout list")
        return [c for c in all_combos() if c in held]
    raise ValueError(f"split: must be 'train', 'heldout' or 'all', got {split!r}")


def _shape_distance(shape: str, y: np.ndarray, x: np.ndarray, r: float) -> np.ndarray:
    """Signed distance (pixels, negative inside) to ``shape`` of size ``r`` centred at the origin."""
    ay, ax = np.abs(y), np.abs(x)
    if shape == "circle":
        return np.sqrt(y * y + x * x) - r
    if shape == "square":
        return np.maximum(ay, ax) - 0.85 * r
    if shape == "diamond":
        return (ay + ax - 1.2 * r) / np.sqrt(2.0)
    if shape == "cross":
        arm, half = 1.0 * r, 0.35 * r
        return np.minimum(np.maximum(ay - arm, ax - half), np.maximum(ay - half, ax - arm))
    if shape == "triangle":  # equilateral, apex up, circumradius 1.15 r (image y points down)
        outer = 1.15 * r
        normals = [(1.0, 0.0), (-0.5, np.sqrt(3) / 2), (-0.5, -np.sqrt(3) / 2)]  # (ny, nx): bottom, right, left
        return np.max([ny * y + nx * x for ny, nx in normals], axis=0) - outer / 2
    raise ValueError(f"shape: must be one of {SHAPES}, got {shape!r}")


def _background(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    """Neutral gray float32 ``[H, W]`` background: flat, or three random low-frequency gratings."""
    level = rng.uniform(50.0, 120.0)
    if kind == "plain":
        return np.full((height, width), level, np.float32)
    if kind != "textured":
        raise ValueError(f"background: must be one of {BACKGROUNDS}, got {kind!r}")
    y = np.arange(height, dtype=np.float32)[:, None] / height
    x = np.arange(width, dtype=np.float32)[None, :] / width
    texture = np.zeros((height, width), np.float32)
    for _ in range(3):
        fy, fx = rng.uniform(-6.0, 6.0, size=2)
        texture += np.sin(2 * np.pi * (fy * y + fx * x) + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return level + rng.uniform(10.0, 25.0) * texture / 3.0


def _check_motion(size_range: tuple[float, float], travel_range: tuple[float, float], lateral_spread: float,
                  height: int, width: int, motion: str = "path", step_range: tuple[float, float] = STEP_RANGE,
                  trail: float = 0.0) -> None:
    """Ranges are ordered and bounded; a ``"path"`` (the longest plus the largest object's margins, ``1.2 r + 1`` px
    each side) fits in the frame; a ``"wrap"`` step is under half the frame (so a displacement modulo the frame is
    unambiguous); a ``trail`` is 0 to 4 frames of motion."""
    if motion not in MOTIONS:
        raise ValueError(f"motion: must be one of {MOTIONS}, got {motion!r}")
    if not 0.0 <= trail <= 4.0:
        raise ValueError(f"trail: must be in [0, 4] frames of motion, got {trail}")
    if not 0.0 <= lateral_spread <= 1.0:
        raise ValueError(f"lateral_spread: must be in [0, 1], got {lateral_spread}")
    for name, (lo, hi), top in (("size_range", size_range, 0.3), ("travel_range", travel_range, 0.8),
                                ("step_range", step_range, 0.45)):
        if not 0.0 < lo <= hi <= top:
            raise ValueError(f"{name}: need 0 < low <= high <= {top}, got {(lo, hi)}")
    margin = 1.2 * size_range[1] * min(height, width) + 1.0
    if motion == "path" and any(2 * margin + travel_range[1] * side > side for side in (height, width)):
        raise ValueError(f"size_range/travel_range: the largest object ({size_range[1]}) on the longest path "
                         f"({travel_range[1]}) does not fit in a {height} x {width} frame")


def _path_centres(rng: np.random.Generator, dy: int, dx: int, start_frame: int, num_frames: int, path_frames: int,
                  height: int, width: int, margin: float, travel_range: tuple[float, float], across
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(``[num_frames, 2]`` (y, x), velocity ``[2]`` px per frame): frames ``start_frame…`` of a trajectory whose
    frames ``0 … path_frames-1`` are a straight path of ``travel_range`` of the frame, wholly inside ``margin``, and
    which goes on at the same velocity after them (unwrapped: the caller takes it modulo the frame)."""
    travel = rng.uniform(*travel_range) * (height if dy else width)
    lo_y, hi_y = margin, height - margin
    lo_x, hi_x = margin, width - margin
    # Start so that start + travel * direction stays in [lo, hi] on the motion axis.
    cy = rng.uniform(lo_y + max(0.0, -dy * travel), hi_y - max(0.0, dy * travel)) if dy else across(lo_y, hi_y)
    cx = rng.uniform(lo_x + max(0.0, -dx * travel), hi_x - max(0.0, dx * travel)) if dx else across(lo_x, hi_x)
    t = np.arange(start_frame, start_frame + num_frames) / (path_frames - 1) if path_frames > 1 else \
        np.zeros(num_frames)
    centres = np.stack([cy + dy * travel * t, cx + dx * travel * t], axis=1)
    return centres, np.array([dy, dx]) * travel / max(path_frames - 1, 1)


def _wrap_centres(rng: np.random.Generator, dy: int, dx: int, start_frame: int, num_frames: int, height: int,
                  width: int, margin: float, step_range: tuple[float, float], across
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(``[num_frames, 2]`` (y, x), velocity ``[2]`` px per frame): frames ``start_frame…`` of a constant-velocity
    trajectory, modulo the frame along the motion, from a uniformly random phase; across the motion as in
    ``"path"``."""
    along = height if dy else width
    step = rng.uniform(*step_range) * along
    phase = rng.uniform(0.0, along)
    other = across(margin, (width if dy else height) - margin)
    t = np.arange(start_frame, start_frame + num_frames, dtype=np.float64)
    position = np.mod(phase + (dy or dx) * step * t, along)
    fixed = np.full(num_frames, other)
    return np.stack([position, fixed] if dy else [fixed, position], axis=1), np.array([dy, dx]) * step


def crosses_edges(motion: str, start_frame: int, num_frames: int, path_frames: int) -> bool:
    """Whether :func:`render_clip`'s object may cross the frame's edges, so the clip is drawn (and is scored) on the
    torus: a wrapping motion, or a path rendered past its first ``path_frames`` frames."""
    return motion == "wrap" or start_frame + num_frames > path_frames


def _wrapped(offset: np.ndarray, period: float | None) -> np.ndarray:
    """``offset`` (pixels) to the nearest periodic image, in ``[-period/2, period/2)``; unchanged when None."""
    return offset if period is None else np.mod(offset + 0.5 * period, period) - 0.5 * period


def render_clip(colour: str, shape: str, direction: str, *, num_frames: int = 8, height: int = 64,
                width: int | None = None, background: str = "plain", seed: int = 0,
                size_range: tuple[float, float] = SIZE_RANGE, travel_range: tuple[float, float] = TRAVEL_RANGE,
                lateral_spread: float = 1.0, motion: str = "path", step_range: tuple[float, float] = STEP_RANGE,
                start_frame: int = 0, path_frames: int | None = None, trail: float = 0.0,
                return_centers: bool = False, return_alpha: bool = False) -> np.ndarray | tuple[np.ndarray, ...]:
    """uint8 ``[num_frames, height, width, 3]`` clip of ``caption_for(colour, shape, direction)``.

    Size (``size_range``: fraction of the shorter side), colour jitter (±12 per channel) and the motion are drawn
    from ``seed``. ``motion="path"``: frames ``0 … path_frames-1`` (default ``num_frames``) are a path of
    ``travel_range`` (fraction of the frame along the motion) from a random start, wholly inside the frame; later
    frames go on at the same velocity, modulo the frame. ``motion="wrap"``: ``step_range`` (fraction of the frame)
    per frame from a uniformly random phase, modulo the frame along the motion. Either way an object crossing an edge
    is drawn on the torus (it shows on both sides), and ``start_frame`` renders the same trajectory from that frame on
    (``start_frame=k`` continues a ``k``-frame clip of the same seed and ``path_frames``). Across the motion the
    object lies in the central ``lateral_spread`` fraction of the admissible range (1: anywhere). ``trail`` (frames of
    motion, 0: none) draws a streak behind the object, fading from ``TRAIL_OPACITY`` to 0, so that one frame shows
    the direction. Edges are anti-aliased from the signed distance. ``return_centers`` also returns the
    ``[num_frames, 2]`` (y, x) centres, ``return_alpha`` (after them) the drawn float32 coverage (object and trail)
    ``[num_frames, height, width]`` (0 outside it: its exact pixels are ``alpha > 0``).
    """
    width = width or height
    if colour not in COLOURS or direction not in DIRECTIONS:
        raise ValueError(f"colour/direction: need colour in {list(COLOURS)} and direction in {list(DIRECTIONS)}, "
                         f"got {colour!r}, {direction!r}")
    if num_frames < 1 or height < 8 or width < 8:
        raise ValueError(f"num_frames/height/width: need >= 1 frame and >= 8 pixels, got {num_frames}, "
                         f"{height}, {width}")
    _check_motion(size_range, travel_range, lateral_spread, height, width, motion, step_range, trail)
    path_frames = num_frames if path_frames is None else path_frames
    if start_frame < 0 or path_frames < 1:
        raise ValueError(f"start_frame/path_frames: need start_frame >= 0 and path_frames >= 1, got {start_frame}, "
                         f"{path_frames}")
    rng = np.random.default_rng([seed, 104729])
    bg = _background(rng, background, height, width)
    r = rng.uniform(*size_range) * min(height, width)
    rgb = np.clip(np.asarray(COLOURS[colour], np.float32) + rng.uniform(-12, 12, size=3), 0, 255)
    dy, dx = DIRECTIONS[direction]

    def across(lo: float, hi: float) -> float:  # within the central lateral_spread of [lo, hi]
        half = 0.5 * (hi - lo) * lateral_spread
        return rng.uniform(0.5 * (lo + hi) - half, 0.5 * (lo + hi) + half)

    margin = 1.2 * r + 1.0
    if motion == "wrap":
        centers, velocity = _wrap_centres(rng, dy, dx, start_frame, num_frames, height, width, margin, step_range,
                                          across)
    else:
        centers, velocity = _path_centres(rng, dy, dx, start_frame, num_frames, path_frames, height, width, margin,
                                          travel_range, across)
    torus = crosses_edges(motion, start_frame, num_frames, path_frames)
    if torus:
        centers = np.mod(centers, (height, width))
    period_y, period_x = (height if dy else None, width if dx else None) if torus else (None, None)
    yy = np.arange(height, dtype=np.float32)[None, :, None] + 0.5
    xx = np.arange(width, dtype=np.float32)[None, None, :] + 0.5

    def coverage(at: np.ndarray) -> np.ndarray:  # [F, H, W] of the shape centred at at[F, 2]
        dist = _shape_distance(shape, _wrapped(yy - at[:, 0, None, None].astype(np.float32), period_y),
                               _wrapped(xx - at[:, 1, None, None].astype(np.float32), period_x), r)
        return np.clip(0.5 - dist, 0.0, 1.0)

    alpha = coverage(centers)
    # The streak: the shape at every pixel step back along the motion, fading linearly from TRAIL_OPACITY.
    lags = np.linspace(0.0, trail, int(np.ceil(trail * np.hypot(*velocity))) + 2)[1:] if trail else ()
    for lag in lags:
        alpha = np.maximum(alpha, TRAIL_OPACITY * (1.0 - lag / trail) * coverage(centers - lag * velocity))
    alpha = alpha[..., None]
    frames = bg[None, :, :, None] * (1.0 - alpha) + rgb * alpha
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    extra = ((centers,) if return_centers else ()) + ((alpha[..., 0],) if return_alpha else ())
    return (frames,) + extra if extra else frames


def object_alpha(prompt: str, num_frames: int, height: int, width: int, **render: Any) -> np.ndarray:
    """The object's coverage ``[F, H, W]`` in the clip :func:`render_clip` draws for ``prompt`` (a combo's caption)
    with ``render``'s other arguments; ``> 0`` is its exact mask (the four-module recipe's built-in segmenter)."""
    _, alpha = render_clip(*parse_combo(prompt), num_frames=num_frames, height=height, width=width,
                           return_alpha=True, **render)
    return alpha


class ShapesSource(base.Source):
    """Synthetic captioned clips: item ``i`` shows combo ``combos[i % len(combos)]`` of its split (``motion``,
    ``step_range``, ``travel_range``, ``size_range``, ``lateral_spread``, ``trail``: :func:`render_clip`'s), starting
    at a frame drawn uniformly from ``start_frames`` of its trajectory (for ``"path"``, one clip long: ``(0,)`` shows
    whole paths, ``(0, N-1, 2(N-1), …)`` the windows that a VidRD long video of N-frame clips reusing one frame
    covers). ``part_stride`` > 0 names the window in the caption: a clip starting at frame s is part
    ``s // part_stride + 1`` (:func:`caption_for`), so each window of the trajectory has its own caption, as the
    clips of a long video can have their own prompts."""

    kind = "shapes"

    def __init__(self, name: str, sampling: transforms.Sampling, *, num_items: int = 10000, split: str = "train",
                 holdout_fraction: float = 0.2, holdout_seed: int = 0, holdout: tuple[str, ...] = (),
                 textured_prob: float = 0.5, size_range: tuple[float, float] = SIZE_RANGE,
                 travel_range: tuple[float, float] = TRAVEL_RANGE, lateral_spread: float = 1.0, motion: str = "path",
                 step_range: tuple[float, float] = STEP_RANGE, trail: float = 0.0,
                 start_frames: tuple[int, ...] = (0,), part_stride: int = 0, seed: int = 0):
        super().__init__(name, sampling)
        if not isinstance(num_items, int) or num_items < 1:
            raise ValueError(f"num_items: must be a positive int, got {num_items!r}")
        if not 0.0 <= textured_prob <= 1.0:
            raise ValueError(f"textured_prob: must be in [0, 1], got {textured_prob}")
        self.num_items = num_items
        self.combos = split_combos(split, holdout_fraction, holdout_seed, tuple(holdout))
        self.textured_prob = textured_prob
        _check_motion(tuple(size_range), tuple(travel_range), lateral_spread, sampling.height, sampling.width, motion,
                      tuple(step_range), trail)
        self.size_range, self.travel_range = tuple(size_range), tuple(travel_range)
        self.motion, self.step_range = motion, tuple(step_range)
        self.lateral_spread, self.trail = lateral_spread, trail
        start_frames = tuple(start_frames)
        if not start_frames or not all(isinstance(k, int) and k >= 0 for k in start_frames):
            raise ValueError(f"start_frames: need a non-empty sequence of ints >= 0, got {start_frames!r}")
        self.start_frames = start_frames
        if not isinstance(part_stride, int) or part_stride < 0:
            raise ValueError(f"part_stride: must be an int >= 0 (0: no part in the captions), got {part_stride!r}")
        self.part_stride = part_stride
        self.seed = seed

    def __len__(self) -> int:
        return self.num_items

    def item(self, index: int) -> tuple[Combo, str, int, int]:
        """(combo, background, render seed, start frame) of item ``index``."""
        rng = np.random.default_rng([self.seed, index])
        background = "textured" if rng.random() < self.textured_prob else "plain"
        seed = int(rng.integers(0, 2**31 - 1))
        start = self.start_frames[int(rng.integers(len(self.start_frames)))]
        return self.combos[index % len(self.combos)], background, seed, start

    def load_raw(self, index: int, rng: np.random.Generator | None, keyframes: int) -> base.Raw:
        (colour, shape, direction), background, seed, start = self.item(index)
        s = self.sampling
        frames = render_clip(colour, shape, direction, num_frames=keyframes, height=s.height, width=s.width,
                             background=background, seed=seed, size_range=self.size_range,
                             travel_range=self.travel_range, lateral_spread=self.lateral_spread, motion=self.motion,
                             step_range=self.step_range, trail=self.trail, start_frame=start)
        part = start // self.part_stride + 1 if self.part_stride else 1
        return base.Raw(frames, (caption_for(colour, shape, direction, part),), base.CLIP, f"shapes/{index}")

    def load(self, index: int, rng: np.random.Generator | None) -> tuple[np.ndarray, str]:
        return self.augment(self.load_raw(index, None, self.sampling.num_frames),
                            np.random.default_rng([self.seed, index, 1]))


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]`` of a bundled ``skimage.data`` photo (grayscale replicated to RGB)."""
    import skimage.data  # pylint: disable=import-outside-toplevel  (optional: the "test" extra)

    if name not in PHOTOS:
        raise ValueError(f"photos: {name!r} is not one of {list(PHOTOS)}")
    image = skimage.data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(skimage.data, name)()
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


@functools.lru_cache(maxsize=256)
def _fitted_photo(name: str, height: int, width: int, max_zoom: float) -> np.ndarray:
    return pseudo_video.fit_for_zoom(load_photo(name), (height, width), max_zoom)


class PhotosSource(base.Source):
    """Pseudo-videos of ``skimage.data`` photos: item ``i`` zooms/pans over photo ``photos[i % len(photos)]``."""

    kind = "photos"

    def __init__(self, name: str, sampling: transforms.Sampling, *, num_items: int = 1000,
                 photos: tuple[str, ...] = tuple(PHOTOS), seed: int = 0,
                 zoom_range: tuple[float, float] = pseudo_video.ZoomPan.zoom_range,
                 pan_range: tuple[float, float] = pseudo_video.ZoomPan.pan_range):
        super().__init__(name, sampling, zoom_pan=pseudo_video.ZoomPan(tuple(zoom_range), tuple(pan_range)))
        if not isinstance(num_items, int) or num_items < 1:
            raise ValueError(f"num_items: must be a positive int, got {num_items!r}")
        unknown = [p for p in photos if p not in PHOTOS]
        if not photos or unknown:
            raise ValueError(f"photos: need a non-empty subset of {list(PHOTOS)}, got unknown {unknown}")
        self.num_items = num_items
        self.photos = tuple(photos)
        self.seed = seed

    def __len__(self) -> int:
        return self.num_items

    def load_raw(self, index: int, rng: np.random.Generator | None, keyframes: int) -> base.Raw:
        name = self.photos[index % len(self.photos)]
        s = self.sampling
        image = _fitted_photo(name, s.height, s.width, self.zoom_pan.zoom_range[1])
        return base.Raw(image[None], (PHOTOS[name],), base.IMAGE, f"photos/{name}")

    def load(self, index: int, rng: np.random.Generator | None) -> tuple[np.ndarray, str]:
        return self.augment(self.load_raw(index, None, self.sampling.num_frames),
                            np.random.default_rng([self.seed, index]))
