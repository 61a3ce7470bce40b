"""Per-sample transforms (paper §5.1 sampling) and image -> pseudo-video zoom/pan geometry (paper §4.2)."""
import numpy as np
import pytest
import skimage.data
from numerics import assert_close

from data_pipelines import pseudo_video as pv
from data_pipelines import stats, transforms


def test_frame_indices_every_stride_inside_segment():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(300):
        idx = transforms.sample_frame_indices(rng, 10, 50, num_frames=8, stride=4)
        assert idx.shape == (8,)
        np.testing.assert_array_equal(np.diff(idx), 4)
        assert idx[0] >= 10 and idx[-1] < 50
        starts.add(int(idx[0]))
    assert starts == set(range(10, 50 - 29 + 1))  # every admissible start is drawn (span = 7 * 4 + 1 = 29)


def test_frame_indices_exact_fit_and_too_short():
    idx = transforms.sample_frame_indices(np.random.default_rng(0), 0, 29, 8, 4)
    np.testing.assert_array_equal(idx, np.arange(0, 29, 4))
    with pytest.raises(stats.SkipError) as e:
        transforms.sample_frame_indices(np.random.default_rng(0), 0, 28, 8, 4)
    assert e.value.reason == stats.TOO_SHORT


def test_shorter_side_resize_and_crop():
    assert transforms.shorter_side_size(480, 640, 256, 256) == (256, 341)
    assert transforms.shorter_side_size(640, 480, 256, 256) == (341, 256)
    assert transforms.shorter_side_size(100, 100, 128, 256) == (256, 256)  # covers a non-square target
    frames = np.arange(2 * 10 * 12 * 3, dtype=np.uint8).reshape(2, 10, 12, 3)
    offsets = set()
    for seed in range(50):
        crop = transforms.random_crop(np.random.default_rng(seed), frames, 8, 8)
        assert crop.shape == (2, 8, 8, 3)
        y, x = np.argwhere(frames[0, ..., 0] == crop[0, 0, 0, 0])[0]
        np.testing.assert_array_equal(crop, frames[:, y:y + 8, x:x + 8])  # same window in every frame
        offsets.add((int(y), int(x)))
    assert len(offsets) > 5


def test_caption_choice_and_dropout():
    rng = np.random.default_rng(0)
    picks = [transforms.choose_caption(rng, ("a", "b", "c")) for _ in range(600)]
    counts = np.array([picks.count(c) for c in "abc"])
    assert (np.abs(counts - 200) < 50).all()
    dropped = [transforms.drop_caption(rng, "x", 0.1) for _ in range(2000)]
    assert 0.07 < dropped.count("") / 2000 < 0.13
    assert transforms.drop_caption(rng, "x", 0.0) == "x"


def test_model_range():
    out = transforms.to_model_range(np.array([0, 255, 128], np.uint8))
    assert out.dtype == np.float32
    assert_close(out, [-1.0, 1.0, 128 / 127.5 - 1], ops=2)  # x / 127.5 - 1 in float32


@pytest.fixture(scope="module")
def photo():
    return skimage.data.astronaut()[::4, ::4].copy()  # 128 x 128 x 3


def test_crop_resize_integer_box_is_exact_slice(photo):
    out = pv.crop_resize(photo, (10, 20, 42, 60), (32, 40))
    np.testing.assert_array_equal(out[0], photo[10:42, 20:60])


def test_crop_resize_subpixel_box_is_bilinear(photo):
    img = photo.astype(np.float64)
    out = pv.crop_resize(photo, (10.5, 20.25, 26.5, 36.25), (16, 16))[0].astype(np.float64)
    # Output pixel (i, j) samples source position (10.5 + i, 20.25 + j) (pixel centres at integers).
    rows = 0.5 * img[10:26] + 0.5 * img[11:27]
    expected = 0.75 * rows[:, 20:36] + 0.25 * rows[:, 21:37]
    assert np.abs(out - expected).max() <= 0.51


def test_pseudo_video_first_and_last_frames_are_the_configured_boxes(photo):
    start, end = (0.0, 0.0, 128.0, 128.0), (40.3, 17.7, 104.3, 81.7)
    frames = pv.zoom_pan_frames(photo, start, end, 8, (32, 32))
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], pv.crop_resize(photo, start, (32, 32))[0])
    np.testing.assert_array_equal(frames[-1], pv.crop_resize(photo, end, (32, 32))[0])
    boxes = pv.interpolate_boxes(start, end, 8)
    np.testing.assert_array_equal(boxes[0], start)
    np.testing.assert_array_equal(boxes[-1], end)
    sizes = boxes[:, 2] - boxes[:, 0]
    assert (np.diff(sizes) < 0).all()  # monotone zoom in
    ratios = sizes[1:] / sizes[:-1]
    assert ratios[0] > ratios[3] < ratios[-1]  # eased: slow at both ends, fastest in the middle
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    direction = centres[-1] - centres[0]
    steps = np.diff(centres, axis=0)
    # a straight pan path: float64 boxes (~8 roundings: easing, interpolation, centres, differences, cross product);
    # a step is a difference of centres, so its rounding error is relative to the centres' size, not the step's
    assert_close(np.cross(steps, direction), 0.0, ops=8, dtype=np.float64,
                 scale=np.abs(centres).max() * np.abs(direction).max())


def test_random_zoom_pan_boxes_stay_inside_with_configured_ranges():
    rng = np.random.default_rng(0)
    params = pv.ZoomPan(zoom_range=(1.2, 1.6), pan_range=(0.1, 0.3))
    image_size, out = (90, 160), (32, 32)
    base_h, base_w = pv.base_box_size(image_size, out)
    assert (base_h, base_w) == (90.0, 90.0)
    for _ in range(200):
        start, end = pv.sample_zoom_pan(rng, image_size, out, params)
        boxes = pv.interpolate_boxes(start, end, 8)
        assert (boxes[:, :2] >= -1e-9).all() and (boxes[:, 2] <= 90 + 1e-9).all()
        assert (boxes[:, 3] <= 160 + 1e-9).all()
        for box in (start, end):
            zoom = base_h / (box[2] - box[0])
            assert 1.2 - 1e-9 <= zoom <= 1.6 + 1e-9
            assert (box[3] - box[1]) == pytest.approx(box[2] - box[0])  # output aspect kept


def test_random_pseudo_video_shape_and_determinism(photo):
    a = pv.random_pseudo_video(np.random.default_rng(3), photo, 4, (32, 32), pv.ZoomPan())
    b = pv.random_pseudo_video(np.random.default_rng(3), photo, 4, (32, 32), pv.ZoomPan())
    assert a.shape == (4, 32, 32, 3)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a[0].astype(int) - a[-1]).mean() > 1  # it moves


def test_zoom_pan_validation():
    with pytest.raises(ValueError, match="zoom_range"):
        pv.ZoomPan(zoom_range=(0.5, 1.0))
    with pytest.raises(ValueError, match="pan_range"):
        pv.ZoomPan(pan_range=(0.3, 0.1))
    with pytest.raises(ValueError, match="end"):
        pv.interpolate_boxes((0, 0, 1, 1), (0, 0, 0, 1), 4)
