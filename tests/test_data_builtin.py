"""Built-in offline dataset: renderer, vocabulary, held-out combinations, determinism."""
import re

import numpy as np
import pytest

from data_pipelines import builtin, transforms


def _mask(frames: np.ndarray, colour: str) -> np.ndarray:
    """Pixels close to the colour (backgrounds are neutral gray, so this isolates the shape)."""
    rgb = np.asarray(builtin.COLOURS[colour], np.int32)
    return np.abs(frames.astype(np.int32) - rgb).max(axis=-1) < 30


@pytest.mark.parametrize("direction", list(builtin.DIRECTIONS))
@pytest.mark.parametrize("background", builtin.BACKGROUNDS)
def test_render_clip_moves_in_the_stated_direction(direction, background):
    frames, centres = builtin.render_clip("red", "circle", direction, num_frames=6, height=48, width=64,
                                          background=background, seed=3, return_centers=True)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    dy, dx = builtin.DIRECTIONS[direction]
    measured = []
    for f in frames:
        ys, xs = np.nonzero(_mask(f, "red"))
        assert len(ys) > 20
        measured.append((ys.mean() + 0.5, xs.mean() + 0.5))
    measured = np.array(measured)
    np.testing.assert_allclose(measured, centres, atol=1.0)
    motion = measured[-1] - measured[0]
    assert motion[0] * dy > 5 or motion[1] * dx > 5
    assert abs(motion[0] if dx else motion[1]) < 1.0  # no drift across the motion axis


def test_render_clip_shapes_colours_and_determinism():
    areas = {}
    for shape in builtin.SHAPES:
        a = builtin.render_clip("blue", shape, "up", num_frames=3, height=40, seed=1)
        np.testing.assert_array_equal(a, builtin.render_clip("blue", shape, "up", num_frames=3, height=40, seed=1))
        areas[shape] = int(_mask(a[0], "blue").sum())
    assert len(set(areas.values())) == len(builtin.SHAPES)  # shapes differ
    assert min(areas.values()) > 30
    for colour in builtin.COLOURS:
        frame = builtin.render_clip(colour, "square", "left", num_frames=1, height=32, seed=0)[0]
        assert _mask(frame, colour).sum() > 10
    other = builtin.render_clip("blue", "circle", "up", num_frames=3, height=40, seed=2)
    assert not np.array_equal(other, builtin.render_clip("blue", "circle", "up", num_frames=3, height=40, seed=1))
    with pytest.raises(ValueError, match="shape"):
        builtin.render_clip("blue", "hexagon", "up")
    with pytest.raises(ValueError, match="colour"):
        builtin.render_clip("teal", "circle", "up")


def test_captions_and_vocabulary():
    assert builtin.caption_for("red", "circle", "left") == "a red circle moving left"
    assert builtin.caption_for("orange", "cross", "up") == "an orange cross moving up"
    assert builtin.parse_combo("an orange cross moving up") == ("orange", "cross", "up")
    assert len(builtin.all_combos()) == len(builtin.COLOURS) * len(builtin.SHAPES) * len(builtin.DIRECTIONS)
    with pytest.raises(ValueError, match="holdout"):
        builtin.parse_combo("red blob left")


def test_heldout_combos_are_novel_compositions_of_seen_pairs():
    held = builtin.heldout_combos(0.2, seed=0)
    assert len(held) == 24 and held == builtin.heldout_combos(0.2, seed=0)
    assert held != builtin.heldout_combos(0.2, seed=1)
    train = builtin.split_combos("train", 0.2, 0)
    assert set(train).isdisjoint(held) and len(train) + len(held) == 120
    assert builtin.split_combos("heldout", 0.2, 0) == list(held)
    seen_pairs = {(c[i], c[j]) for c in train for i, j in ((0, 1), (0, 2), (1, 2))}
    for c in held:
        assert {(c[0], c[1]), (c[0], c[2]), (c[1], c[2])} <= seen_pairs
    explicit = builtin.split_combos("heldout", holdout=("red circle left", "blue square up"))
    assert explicit == [("red", "circle", "left"), ("blue", "square", "up")]
    with pytest.raises(ValueError, match="split"):
        builtin.split_combos("test")


def test_shapes_source_split_determinism_and_any_size():
    sampling = transforms.Sampling(num_frames=3, stride=4, height=24, width=40)
    train = builtin.ShapesSource("shapes", sampling, num_items=200, split="train", seed=5)
    held = builtin.ShapesSource("shapes_heldout", sampling, num_items=50, split="heldout", seed=5)
    heldout_captions = {builtin.caption_for(*c) for c in builtin.heldout_combos(0.2, 0)}
    train_captions = set()
    for i in range(200):
        frames, caption = train.load(i, None)
        train_captions.add(caption)
    assert frames.shape == (3, 24, 40, 3)
    assert train_captions.isdisjoint(heldout_captions) and len(train_captions) == 96
    assert {held.load(i, None)[1] for i in range(50)} <= heldout_captions
    again = builtin.ShapesSource("shapes", sampling, num_items=200, split="train", seed=5)
    for i in (0, 17, 199):
        np.testing.assert_array_equal(train.load(i, None)[0], again.load(i, None)[0])
    reseeded = builtin.ShapesSource("shapes", sampling, num_items=200, split="train", seed=6)
    assert not np.array_equal(train.load(0, None)[0], reseeded.load(0, None)[0])


def test_photos_source_pseudo_videos():
    sampling = transforms.Sampling(num_frames=4, stride=4, height=32, width=32)
    photos = builtin.PhotosSource("photos", sampling, num_items=28, seed=0)
    captions = set()
    for i in range(len(builtin.PHOTOS)):
        frames, caption = photos.load(i, None)
        assert frames.shape == (4, 32, 32, 3) and frames.dtype == np.uint8
        captions.add(caption)
    assert captions == set(builtin.PHOTOS.values())
    np.testing.assert_array_equal(photos.load(3, None)[0], photos.load(3, None)[0])
    assert not np.array_equal(photos.load(3, None)[0], photos.load(3 + len(builtin.PHOTOS), None)[0])
    cat = builtin.PhotosSource("cat", sampling, photos=("chelsea",))
    assert cat.load(0, None)[1] == "a photo of a cat"
    with pytest.raises(ValueError, match="photos"):
        builtin.PhotosSource("x", sampling, photos=("dog",))


def test_motion_ranges_are_honoured_and_checked():
    _, centres = builtin.render_clip("red", "circle", "right", num_frames=5, height=32, seed=0,
                                     travel_range=(0.5, 0.55), lateral_spread=0.0, return_centers=True)
    assert 16.0 <= centres[-1, 1] - centres[0, 1] <= 17.6  # 50-55 % of 32 px
    assert np.allclose(centres[:, 0], 16.0)  # on the centre line
    _, centres = builtin.render_clip("red", "circle", "up", num_frames=5, height=32, seed=0, size_range=(0.2, 0.2),
                                     return_centers=True)
    assert np.allclose(centres[:, 1], centres[0, 1]) and centres[-1, 0] < centres[0, 0]
    for kwargs, message in ((dict(travel_range=(0.6, 0.7)), "does not fit in a 32 x 32 frame"),
                            (dict(size_range=(0.2, 0.1)), "size_range: need 0 < low <= high"),
                            (dict(lateral_spread=1.5), "lateral_spread: must be in [0, 1]")):
        with pytest.raises(ValueError, match=re.escape(message)):
            builtin.render_clip("red", "circle", "up", num_frames=2, height=32, **kwargs)
    sampling = transforms.Sampling(num_frames=4, stride=2, height=32, width=32)
    with pytest.raises(ValueError, match="travel_range"):
        builtin.ShapesSource("shapes", sampling, num_items=4, travel_range=(0.7, 0.8))


WRAP = dict(motion="wrap", step_range=(0.16, 0.18), lateral_spread=0.0)


def _circular_centre(mask: np.ndarray) -> np.ndarray:
    """(y, x) circular mean of a mask's pixel centres (an object across an edge is one object)."""
    sides = np.asarray(mask.shape, np.float64)
    angles = 2 * np.pi * (np.argwhere(mask) + 0.5) / sides
    mean = np.arctan2(np.sin(angles).mean(0), np.cos(angles).mean(0))
    return np.mod(mean * sides / (2 * np.pi), sides)


@pytest.mark.parametrize("direction", list(builtin.DIRECTIONS))
def test_wrap_clips_continue_the_same_trajectory(direction):
    kwargs = dict(height=32, width=40, background="textured", seed=11, **WRAP)
    long, centres = builtin.render_clip("green", "cross", direction, num_frames=12, return_centers=True, **kwargs)
    for start in (0, 4, 8):  # three 4-frame clips of one 12-frame trajectory: each starts where the last ended
        clip, clip_centres = builtin.render_clip("green", "cross", direction, num_frames=4, start_frame=start,
                                                 return_centers=True, **kwargs)
        np.testing.assert_array_equal(clip, long[start:start + 4])
        np.testing.assert_array_equal(clip_centres, centres[start:start + 4])
    # the step from a clip's last frame to the next clip's first is an ordinary step (modulo the frame)
    dy, dx = builtin.DIRECTIONS[direction]
    along = 32 if dy else 40
    steps = np.mod(np.diff(centres[:, 0 if dy else 1]) * (dy or dx), along)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    assert 0.16 * along <= steps[0] <= 0.18 * along


@pytest.mark.parametrize("direction", list(builtin.DIRECTIONS))
def test_wrap_motion_keeps_the_captions_direction_across_the_edge(direction):
    dy, dx = builtin.DIRECTIONS[direction]
    crossings = 0
    for seed in range(3):
        frames, centres = builtin.render_clip("red", "circle", direction, num_frames=12, height=32, seed=seed,
                                              return_centers=True, **WRAP)
        measured = np.array([_circular_centre(_mask(f, "red")) for f in frames])
        offset = np.mod(measured - centres + 16.0, 32.0) - 16.0
        np.testing.assert_allclose(offset, 0.0, atol=0.5)  # the drawn object is where the trajectory says
        step = np.mod(np.diff(measured, axis=0) + 16.0, 32.0) - 16.0  # frame to frame, modulo the frame
        along, across = (step[:, 0], step[:, 1]) if dy else (step[:, 1], step[:, 0])
        assert np.all(along * (dy or dx) > 4.5) and np.all(np.abs(across) < 0.5)  # every step the stated way
        raw = np.diff(centres[:, 0 if dy else 1]) * (dy or dx)
        crossings += int(np.sum(raw < 0))  # wrapped around an edge
        # a frame with the object across the edge shows it on both sides
        straddling = [f for f, c in zip(frames, centres[:, 0 if dy else 1]) if min(c, 32 - c) < 2.0]
        for f in straddling:
            profile = _mask(f, "red").any(axis=1 if dy else 0)
            assert profile[0] and profile[-1]
    assert crossings >= 3  # 12 frames at 16-18 % of the frame per frame cross an edge about twice


def test_wrap_phases_cover_the_frame_and_the_source_renders_them():
    starts = [builtin.render_clip("blue", "square", "right", num_frames=1, height=32, seed=s, return_centers=True,
                                  **WRAP)[1][0, 1] for s in range(400)]
    counts = np.histogram(starts, bins=8, range=(0.0, 32.0))[0]
    assert counts.min() >= 25, counts  # uniform phase: ~50 per bin (binomial sd ~6.6)
    sampling = transforms.Sampling(num_frames=4, stride=2, height=32, width=32)
    source = builtin.ShapesSource("shapes", sampling, num_items=20, seed=2, **WRAP)
    for i in (0, 7):
        (colour, shape, direction), background, seed, start = source.item(i)
        frames, caption = source.load(i, None)
        assert caption == builtin.caption_for(colour, shape, direction) and start == 0
        np.testing.assert_array_equal(frames, builtin.render_clip(colour, shape, direction, num_frames=4, height=32,
                                                                  background=background, seed=seed, **WRAP))
    for kwargs, message in ((dict(motion="bounce"), "motion: must be one of"),
                            (dict(motion="wrap", step_range=(0.3, 0.5)), "step_range: need 0 < low <= high <= 0.45"),
                            (dict(start_frame=-1), "start_frame/path_frames: need start_frame >= 0"),
                            (dict(path_frames=0), "start_frame/path_frames: need start_frame >= 0")):
        with pytest.raises(ValueError, match=re.escape(message)):
            builtin.render_clip("red", "circle", "up", num_frames=2, height=32, **kwargs)
    for kwargs in (dict(motion="bounce"), dict(start_frames=()), dict(start_frames=(0, -3)),
                   dict(start_frames=(0.5,))):
        with pytest.raises(ValueError, match="motion|start_frames"):
            builtin.ShapesSource("shapes", sampling, num_items=4, **kwargs)


CENTRED = dict(travel_range=(0.5, 0.55), lateral_spread=0.0)


@pytest.mark.parametrize("direction", list(builtin.DIRECTIONS))
def test_a_continued_path_is_the_clip_long_path_then_the_same_steps_on_the_torus(direction):
    kwargs = dict(height=32, width=40, background="textured", seed=5, **CENTRED)
    path, path_centres = builtin.render_clip("purple", "diamond", direction, num_frames=4, return_centers=True,
                                             **kwargs)
    long, centres = builtin.render_clip("purple", "diamond", direction, num_frames=13, path_frames=4,
                                        return_centers=True, **kwargs)
    np.testing.assert_array_equal(long[:4], path)  # the first clip is the whole path, inside the frame
    np.testing.assert_allclose(centres[:4], path_centres, rtol=0, atol=1e-12)
    for start in (3, 6, 9):  # the windows a 4-clip VidRD long video covers (one frame reused per junction)
        clip, clip_centres = builtin.render_clip("purple", "diamond", direction, num_frames=4, start_frame=start,
                                                 return_centers=True, **kwargs)
        np.testing.assert_array_equal(clip, long[start:start + 4])
        np.testing.assert_allclose(clip_centres, centres[start:start + 4], rtol=0, atol=1e-12)
    dy, dx = builtin.DIRECTIONS[direction]
    along = 32 if dy else 40
    steps = np.mod(np.diff(centres[:, 0 if dy else 1]) * (dy or dx), along)  # every step the stated way
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    assert 0.5 / 3 * along <= steps[0] <= 0.55 / 3 * along
    measured = np.array([_circular_centre(_mask(f, "purple")) for f in long])
    offset = np.mod(measured - centres + 0.5 * np.array([32, 40]), [32, 40]) - 0.5 * np.array([32, 40])
    np.testing.assert_allclose(offset, 0.0, atol=0.5)  # drawn where the trajectory says, across the edges too


def test_the_source_cuts_clips_at_its_start_frames():
    sampling = transforms.Sampling(num_frames=4, stride=2, height=32, width=32)
    source = builtin.ShapesSource("shapes", sampling, num_items=40, seed=1, start_frames=(0, 3, 6, 9), **CENTRED)
    starts = []
    for i in range(40):
        (colour, shape, direction), background, seed, start = source.item(i)
        starts.append(start)
        if i < 4:
            frames, _ = source.load(i, None)
            np.testing.assert_array_equal(frames, builtin.render_clip(
                colour, shape, direction, num_frames=4, height=32, background=background, seed=seed,
                start_frame=start, **CENTRED))
    assert set(starts) == {0, 3, 6, 9}


def test_part_captions_name_the_window_of_the_trajectory():
    sampling = transforms.Sampling(num_frames=4, stride=2, height=32, width=32)
    source = builtin.ShapesSource("shapes", sampling, num_items=12, seed=1, start_frames=(0, 3, 6, 9), part_stride=3,
                                  **CENTRED)
    for i in range(12):
        combo, _, _, start = source.item(i)
        _, caption = source.load(i, None)
        assert caption == builtin.caption_for(*combo) + ("" if start == 0 else f", part {start // 3 + 1}")
    assert builtin.caption_for("red", "circle", "left", 3) == "a red circle moving left, part 3"
    with pytest.raises(ValueError, match="part_stride"):
        builtin.ShapesSource("shapes", sampling, part_stride=-1)


@pytest.mark.parametrize("direction", list(builtin.DIRECTIONS))
@pytest.mark.parametrize("motion", [CENTRED, WRAP])
def test_a_trail_is_a_fading_streak_behind_the_object(direction, motion):
    kwargs = dict(num_frames=4, height=32, width=40, seed=3, return_centers=True, return_alpha=True, **motion)
    plain, centres, body = builtin.render_clip("green", "square", direction, **kwargs)
    frames, trail_centres, alpha = builtin.render_clip("green", "square", direction, trail=1.5, **kwargs)
    np.testing.assert_array_equal(trail_centres, centres)  # the trail changes the drawing, not the motion
    inside = body >= 1.0
    np.testing.assert_array_equal(frames[inside], plain[inside])  # the object itself is unchanged
    assert (alpha >= body).all()
    streak = (alpha > 0) & (body == 0)
    assert streak.any(axis=(1, 2)).all()
    assert alpha[streak].max() <= builtin.TRAIL_OPACITY + 1e-6
    dy, dx = builtin.DIRECTIONS[direction]
    sides = np.array([32, 40])
    for f in range(4):  # every streak pixel lies behind the centre, along the motion
        offset = np.argwhere(streak[f]) + 0.5 - centres[f]
        offset = np.mod(offset + 0.5 * sides, sides) - 0.5 * sides if motion is WRAP else offset
        assert (offset @ np.array([dy, dx]) < 0).all()
    step = np.hypot(*(np.diff(np.unwrap(centres * 2 * np.pi / sides, axis=0), axis=0)[0] * sides / (2 * np.pi)))
    assert np.abs(offset @ np.array([dy, dx])).max() <= 1.5 * step + 0.2 * 32 + 1  # within trail + the object's size
    with pytest.raises(ValueError, match=re.escape("trail: must be in [0, 4]")):
        builtin.render_clip("green", "square", direction, num_frames=2, height=32, trail=-1.0)
