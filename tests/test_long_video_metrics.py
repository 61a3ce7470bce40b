"""Long-video metrics (VBench definitions on the CPU): flickering, subject consistency, dynamic degree, junctions."""
import numpy as np
import pytest
from scipy import ndimage

from vidrd_jax.evaluate import long_video_metrics as lvm


def _texture(size: int = 64, seed: int = 0) -> np.ndarray:
    """A smooth random RGB texture (optical flow needs gradients to lock on)."""
    noise = np.random.default_rng(seed).random((size, size, 3))
    smooth = ndimage.gaussian_filter(noise, (2.0, 2.0, 0))
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def _moving(frames: int = 16, step: int = 4) -> np.ndarray:
    return np.stack([np.roll(_texture(), t * step, axis=1) for t in range(frames)])


def test_temporal_flickering_of_constant_and_noise_videos():
    still = np.repeat(_texture()[None], 8, axis=0)
    assert lvm.temporal_flickering(still) == 1.0
    noise = np.random.default_rng(1).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    # uniform noise: E|a - b| = 85.3 of 255, so the score is about 1 - 1/3
    assert lvm.temporal_flickering(noise) == pytest.approx(1 - 85.33 / 255, abs=0.02)
    two = np.zeros((2, 4, 4, 3), np.uint8)
    two[1] = 51
    assert lvm.temporal_flickering(two) == pytest.approx(0.8, abs=1e-6)  # (255 - 51) / 255


def test_subject_consistency_definition():
    same = np.tile(np.array([[1.0, 2.0, 3.0]]), (5, 1))
    assert lvm.subject_consistency(same) == pytest.approx(1.0)
    # e0 = x, e1 = y, e2 = x: t=1 prev 0 first 0; t=2 prev 0 first 1 -> (0 + 0.5) / 2
    assert lvm.subject_consistency(np.array([[1.0, 0], [0, 1], [1, 0]])) == pytest.approx(0.25)
    # negative cosines count as 0 (VBench clamps at 0)
    assert lvm.subject_consistency(np.array([[1.0, 0], [-1, 0]])) == 0.0


@pytest.mark.parametrize("method", lvm.FLOW_METHODS)
def test_dynamic_degree_still_vs_moving(method):
    still = lvm.dynamic_degree(np.repeat(_texture()[None], 16, axis=0), fps=8, method=method)
    assert not still.dynamic and max(still.scores) < 0.1
    assert still.threshold == pytest.approx(6 * 64 / 256) and still.pairs_needed == 4
    moving = lvm.dynamic_degree(_moving(step=4), fps=8, method=method)
    assert moving.dynamic
    assert np.median(moving.scores) == pytest.approx(4.0, abs=1.0)  # the flow finds the 4-pixel shift


def test_dynamic_degree_keeps_about_8_fps():
    video = _moving(frames=24, step=1)  # 1 px per frame at 24 fps: every 3rd frame kept -> 3 px per kept pair
    degree = lvm.dynamic_degree(video, fps=24)
    assert degree.frame_step == 3 and len(degree.scores) == 7 and degree.pairs_needed == 2
    assert degree.dynamic and np.median(degree.scores) == pytest.approx(3.0, abs=1.0)
    with pytest.raises(ValueError, match="fps"):
        lvm.dynamic_degree(video, fps=0)


def test_junction_change_sees_a_jump_between_clips():
    video = _moving(frames=16, step=1)
    video[8:] = np.roll(video[8:], 20, axis=2)  # clip 2 starts 20 px away from where clip 1 ended
    starts = lvm.clip_starts(16, 8)
    assert starts == [8]
    result = lvm.junction_change(video, starts)
    assert result.junction_ratio > 3 and result.junction_change > result.inside_change
    smooth = lvm.junction_change(_moving(frames=16, step=1), starts)
    assert smooth.junction_ratio == pytest.approx(1.0, abs=0.2)
    # later clips that dropped M=2 prompt frames: junctions at 8, 14
    assert lvm.clip_starts(20, 6, first_clip_frames=8) == [8, 14]
    with pytest.raises(ValueError, match="clip starts"):
        lvm.junction_change(video, [16])


def test_report_puts_dynamic_degree_beside_consistency():
    still = np.repeat(_texture()[None], 8, axis=0)
    report = lvm.long_video_report(still, embeds=np.ones((8, 4)), starts=[4])
    assert report["subject_consistency"] == pytest.approx(1.0) and report["temporal_flickering"] == 1.0
    assert report["dynamic_degree"] == 0.0 and report["junction_ratio"] == 0.0
    with pytest.raises(ValueError, match="uint8"):
        lvm.temporal_flickering(still.astype(np.float32))
