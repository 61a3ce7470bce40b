"""The demo evaluation's measurements, calibrated on clips drawn by the dataset's own renderer (ground truth)."""
import re

import numpy as np
import pytest

from data_pipelines import builtin
from vidrd_jax import cli
from vidrd_jax.recipes import demo_evaluation as ev

THRESHOLD = ev.get_default_config().saturation_threshold


def _long_video(combo, seed, clips=3, frames=4, size=32, background="textured"):
    """``clips`` rendered clips of one combo back to back (each restarts its path: a jump at every junction)."""
    return np.concatenate([builtin.render_clip(*combo, num_frames=frames, height=size, background=background,
                                               seed=seed + k) for k in range(clips)])


def test_rendered_clips_score_perfectly():
    combos = builtin.heldout_combos(0.2, 0)
    videos = np.stack([_long_video(c, i, background=("plain", "textured")[i % 2]) for i, c in enumerate(combos)])
    scores = ev.score_videos(videos, combos, 4, THRESHOLD)
    assert scores["colour_accuracy"] == 1.0
    assert scores["direction_accuracy"] == 1.0 and scores["direction_sign_accuracy"] == 1.0
    assert scores["direction_axis_accuracy"] == 1.0
    # Every clip restarts at a new random place: junctions change far more than frames inside a clip, and the
    # object's centroid jumps further there than it moves between frames.
    assert scores["junction_ratio"] > 2.0
    assert scores["jump_ratio"] > 2.0 and scores["inside_step"] > 2.0
    assert scores["num_videos"] == len(combos)


def test_wrong_prompts_and_reversed_time_fail():
    combos = list(builtin.heldout_combos(0.2, 0))
    videos = np.stack([_long_video(c, i) for i, c in enumerate(combos)])
    recoloured = [(next(k for k in builtin.COLOURS if k != c), s, d) for c, s, d in combos]
    assert ev.score_videos(videos, recoloured, 4, THRESHOLD)["colour_accuracy"] == 0.0
    reversed_time = videos[:, ::-1]
    scores = ev.score_videos(reversed_time, combos, 4, THRESHOLD)
    assert scores["direction_accuracy"] == 0.0 and scores["direction_sign_accuracy"] == 0.0
    assert scores["direction_axis_accuracy"] == 1.0  # the right axis, the wrong way
    transposed = videos.transpose(0, 1, 3, 2, 4)  # left/right motion becomes up/down and vice versa
    assert ev.score_videos(transposed, combos, 4, THRESHOLD)["direction_axis_accuracy"] == 0.0


def test_continuous_motion_has_no_junction_jump():
    # One 12-frame clip cut into three "clips": junction steps are ordinary steps.
    combo = builtin.heldout_combos(0.2, 0)[0]
    video = builtin.render_clip(*combo, num_frames=12, height=32, seed=3)[None]
    scores = ev.score_videos(video, [combo], 4, THRESHOLD)
    assert scores["junction_ratio"] == pytest.approx(1.0, abs=0.35)
    # steps of ~3 px: the centroid moves as far at the cuts as between the other frames
    video = builtin.render_clip(*combo, num_frames=12, height=64, seed=3, travel_range=(0.5, 0.55),
                                lateral_spread=0.0)[None]
    scores = ev.score_videos(video, [combo], 4, THRESHOLD)
    assert scores["inside_step"] > 2.5 and scores["jump_ratio"] == pytest.approx(1.0, abs=0.2)


def test_empty_frames_count_as_failures():
    gray = np.full((2, 8, 32, 32, 3), 90, np.uint8)
    scores = ev.score_videos(gray, builtin.heldout_combos(0.2, 0)[:2], 4, THRESHOLD)
    assert scores["colour_accuracy"] == 0.0 and scores["direction_accuracy"] == 0.0
    assert np.isnan(scores["jump_ratio"])  # no object, no centroid to follow
    # The harness's generic metrics: a still video is perfectly smooth and not dynamic at all.
    assert scores["temporal_flickering"] == 1.0 and scores["dynamic_degree"] == 0.0


def test_moving_objects_are_dynamic():
    combo = builtin.heldout_combos(0.2, 0)[0]
    # the demo's size: 32² px, an object crossing half the frame in 8 frames (~2 px per frame)
    video = builtin.render_clip(*combo, num_frames=8, height=32, seed=3, travel_range=(0.5, 0.55),
                                lateral_spread=0.0)[None]
    scores = ev.score_videos(video, [combo], 4, THRESHOLD)
    assert scores["dynamic_degree"] == 1.0 and 0.9 < scores["temporal_flickering"] < 1.0


def test_config_errors_name_the_field():
    c = ev.get_default_config()
    c.checkpoint = "/x"
    ev.validate_config(c)
    c.num_prompts = 1000
    with pytest.raises(ValueError, match="num_prompts"):
        ev.validate_config(c)
    c = ev.get_default_config()
    c.checkpoint = "/x"
    c.sampling.vidrd.num_clips = 1
    with pytest.raises(ValueError, match=r"sampling\.vidrd\.num_clips"):
        ev.validate_config(c)
    c.sampling.vidrd.num_clips = 3  # 12 frames, but the co-denoised video still has 16
    with pytest.raises(ValueError, match=r"sampling\.codenoise\.num_frames.*12"):
        ev.validate_config(c)
    c = ev.get_default_config()
    c.checkpoint = "/x"
    c.sampling.vidrd.dsg_beta = 2.0  # the generator's own validation, under the group's name
    with pytest.raises(ValueError, match=r"sampling: .*dsg_beta"):
        ev.validate_config(c)
    with pytest.raises(ValueError, match="checkpoint"):
        ev.validate_config(ev.get_default_config())
    c = ev.get_default_config()
    c.checkpoint = "/x"
    c.render.travel_range = (0.5, 0.9)
    with pytest.raises(ValueError, match=r"render: travel_range"):
        ev.validate_config(c)


def test_clip_prompts_name_each_part_when_asked():
    c = ev.get_default_config()
    combo = ("red", "circle", "left")
    assert ev.clip_prompts(c, combo) == ("a red circle moving left",)
    c.part_prompts = True
    assert ev.clip_prompts(c, combo) == ("a red circle moving left", "a red circle moving left, part 2",
                                         "a red circle moving left, part 3", "a red circle moving left, part 4")


def test_evaluation_prompts_are_balanced_over_directions():
    c = ev.get_default_config()
    held = builtin.heldout_combos(c.holdout_fraction, c.holdout_seed)
    c.num_prompts = len(held)
    order = ev.evaluation_prompts(c)
    assert sorted(order) == sorted(held)  # a permutation of the held-out set
    assert {d for _, _, d in order[:4]} == set(builtin.DIRECTIONS)
    c.num_prompts = 16
    first = ev.evaluation_prompts(c)
    assert first == order[:16]
    counts = {d: sum(x[2] == d for x in first) for d in builtin.DIRECTIONS}
    available = {d: sum(x[2] == d for x in held) for d in builtin.DIRECTIONS}
    # every direction gets min(its share of 16, what the held-out set has)
    assert all(counts[d] >= min(available[d], 16 // 4) for d in builtin.DIRECTIONS), counts
    # within a direction, colours alternate before repeating
    lefts = [x[0] for x in first if x[2] == "left"]
    assert len(set(lefts[:4])) == min(4, len({x[0] for x in held if x[2] == "left"}))



def test_cli_finds_its_default_config_from_any_directory_and_errors_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no configs/ here
    workdir = tmp_path / "demo"
    for args, message in ((["--workdir", str(workdir)], f"checkpoint: '{workdir}/temporal_vae/export'"),
                          (["--workdir", str(workdir), "--stage", "unet"], "--stage 'unet' is not an evaluate_demo "
                                                                           "stage of .*configs/demo.py")):
        assert cli.run_cli(ev.main, args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.match(f"error: {message}", err[0]), err
    assert list(tmp_path.iterdir()) == []  # the checkpoints are checked before anything is written


WRAP = dict(motion="wrap", step_range=(0.16, 0.18), lateral_spread=0.0)  # the demo's training motion


def _wrapping_videos(combos, frames=12):
    """One continuing trajectory per combo that wraps around the frame's edges (12 frames cross one about twice)."""
    return np.stack([builtin.render_clip(*c, num_frames=frames, height=32, seed=i,
                                         background=builtin.BACKGROUNDS[i % 2], **WRAP) for i, c in enumerate(combos)])


def test_centroids_and_steps_on_a_torus():
    frames, centres = builtin.render_clip("red", "circle", "right", num_frames=12, height=32, seed=0,
                                          return_centers=True, **WRAP)
    masks = ev.object_masks(frames, THRESHOLD)
    edge = int(np.argmin(np.minimum(centres[:, 1], 32 - centres[:, 1])))  # the frame closest to an edge
    assert min(centres[edge, 1], 32 - centres[edge, 1]) < 3.0 and masks[edge][:, 0].any() and masks[edge][:, -1].any()
    points = ev.centroids(masks, torus=True)
    # pixel-index centroids sit half a pixel before the pixel-centre coordinates of the renderer
    offset = np.mod(np.asarray(points) + 0.5 - centres + 16.0, 32.0) - 16.0
    np.testing.assert_allclose(offset, 0.0, atol=0.5)
    assert abs(ev.centroids(masks)[edge][1] - centres[edge, 1]) > 5.0  # the plain mean of both halves is elsewhere
    np.testing.assert_allclose(ev.centroid_step(np.array([16.0, 30.0]), np.array([16.0, 2.0]), (32, 32)), [0.0, 4.0])
    np.testing.assert_allclose(ev.centroid_step(np.array([1.0, 2.0]), np.array([31.0, 30.0]), (32, 32)), [-2.0, -4.0])
    np.testing.assert_allclose(ev.centroid_step(np.array([1.0, 2.0]), np.array([31.0, 30.0])), [30.0, 28.0])
    total = ev.centroid_displacement(points, (32, 32))
    assert total[1] == pytest.approx(centres[-1, 1] + 32.0 * np.sum(np.diff(centres[:, 1]) < 0) - centres[0, 1],
                                     abs=1.0)  # the path, unwrapped: more than a frame width
    assert total[1] > 32.0 and abs(total[0]) < 0.5


def test_wrapping_motion_is_scored_on_a_torus():
    combos = builtin.heldout_combos(0.2, 0)
    videos = _wrapping_videos(combos)
    scores = ev.score_videos(videos, combos, 4, THRESHOLD, torus=True)
    assert scores["direction_accuracy"] == 1.0 and scores["colour_accuracy"] == 1.0
    # crossing an edge is an ordinary step: junctions are inside steps, and the motion is the renderer's speed
    assert scores["jump_ratio"] == pytest.approx(1.0, abs=0.1)
    assert scores["junction_ratio"] == pytest.approx(1.0, abs=0.1)
    assert 0.16 * 32 - 0.3 < scores["motion"] < 0.18 * 32 + 0.3
    # Scored on the plane, an object across an edge has its centroid mid-frame: wrong directions, inflated motion.
    flat = ev.score_videos(videos, combos, 4, THRESHOLD)
    assert flat["direction_accuracy"] < 0.9 and flat["motion"] > scores["motion"] + 1.0


def _results(variants: dict, c) -> dict:
    results = {"model": variants, "data": {"rendered": ev.data_scores(c)}}
    ev.add_motion_ratios(results)
    return results


def test_continuation_marks_need_smooth_junctions_and_motion():
    c = ev.get_default_config()
    c.render.update(WRAP)
    c.update(num_prompts=8, seeds=(0,))
    c.sampling.vidrd.update(num_clips=3, num_frames=4)
    combos = ev.evaluation_prompts(c)
    continuing = _wrapping_videos(combos)
    still = np.repeat(continuing[:, :1], 12, axis=1)  # perfectly smooth at every junction, and not moving
    restarting = np.stack([_long_video(x, i, background="plain") for i, x in enumerate(combos)])
    results = _results({name: ev.score(videos, combos, c, ev.data_scores(c)["motion"])
                        for name, videos in zip(ev.VARIANTS, (continuing, still, restarting, continuing[:, ::-1]))}, c)
    marks = {name: ev.continuation_marks(scores, c.thresholds) for name, scores in results["model"].items()}
    assert results["data"]["rendered"]["motion_ratio"] == 1.0
    assert results["data"]["rendered"]["continued_junctions"] == 1.0
    assert all(marks["reverse_dsg_pns"].values())
    assert results["model"]["reverse_dsg_pns"]["motion_ratio"] == pytest.approx(1.0, abs=0.05)
    assert results["model"]["reverse_dsg_pns"]["continued_junctions"] == 1.0
    assert marks["forward_dsg_pns"] == {"junction_ratio": True, "jump_ratio": True, "motion_ratio": False,
                                        "continued_junctions": False}
    assert results["model"]["forward_dsg_pns"]["motion"] == 0.0
    assert not marks["reverse_no_dsg_pns"]["jump_ratio"]  # each clip restarts its path
    assert results["model"]["reverse_no_dsg_pns"]["continued_junctions"] == 0.0
    # Time reversed: smooth and moving, but against the prompt's direction at every junction.
    assert {k for k, v in marks["forward_no_dsg_pns"].items() if not v} == {"continued_junctions"}
    assert results["model"]["forward_no_dsg_pns"]["continued_junctions"] == 0.0
    assert ev.passes(results, c.thresholds) == {"colour_accuracy": True, "direction_accuracy": True,
                                                "junction_ratio": True, "jump_ratio": True, "motion_ratio": True,
                                                "continued_junctions": True}
    table = ev.format_marks(results, c.thresholds).splitlines()
    assert table[0] == ("| variant | junction ratio <= 1.5 | jump ratio <= 1.5 | motion ratio >= 0.5 | "
                        "continued junctions >= 0.6 | continues |")
    assert [row.split(" | ")[-1] for row in table[2:]] == ["yes |", "no |", "no |", "no |"]
    assert table[3].count("(FAIL)") == 2 and table[3].count("(pass)") == 2
    assert "| data | rendered |" in ev.format_table(results)


def test_pinned_prompt_frames_do_not_hide_a_path_that_runs_back_or_restarts():
    # What the reverse frame mapping can do when DSG pins clip i+1's prompt frames to clip i's last frames, reversed:
    # the junction itself is a still frame, and the next frames run back along the path or restart it.
    combos = ev.evaluation_prompts(ev.get_default_config())[:8]
    continuing = _wrapping_videos(combos)
    clips = continuing[:, :4]  # one forward clip each
    ping_pong = np.concatenate([clips, clips[:, ::-1], clips], axis=1)  # forward, back, forward
    pinned_restart = np.concatenate([clips, clips[:, -1:], clips[:, :3]], axis=1)  # one still frame, then restart
    step = ev.score_videos(continuing, combos, 4, THRESHOLD, torus=True)["motion"]
    for video, continued in ((ping_pong, 0.5), (pinned_restart, 0.0)):
        scores = ev.score_videos(video, combos, 4, THRESHOLD, torus=True, prompt_frames=2, reference_step=step)
        assert scores["jump_ratio"] < 1.5 and scores["junction_ratio"] < 1.5  # the old marks pass ...
        assert scores["continued_junctions"] == continued  # ... the new one does not
        assert continued < ev.get_default_config().thresholds.continued_junctions
    points = ev.centroids(ev.object_masks(ping_pong[0], THRESHOLD), torus=True)
    progress = ev.junction_progress(points, [4, 8], 2, combos[0][2], 2 * step, (32, 32))
    assert progress[0] == pytest.approx(-2 * step, rel=0.2) and progress[1] == pytest.approx(2 * step, rel=0.2)
