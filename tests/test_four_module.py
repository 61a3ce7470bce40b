"""The four-module framework end to end at test size (configs/four_module.py:test on a tiny random base model), its
resume, its CLI errors, and the evaluation's probes on rendered clips."""
import json
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from data_pipelines import builtin
from data_pipelines.array_record_source import decode_record
from vidrd_jax import checkpoints
from vidrd_jax.config_loading import load_config
from vidrd_jax.make_tiny_checkpoint import make_tiny_checkpoint
from vidrd_jax.recipes import four_module
from vidrd_jax.recipes import four_module_evaluation as probes
from vidrd_jax.segmentation import BuiltinMasks
from vidrd_jax.tasks.combined_tuning import mask_clip

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "four_module.py"
# one UNet level and a 2x VAE: the smallest models that run every module at 32 x 32
UNET = dict(block_out_channels=(32,), down_block_types=("CrossAttnDownBlock3D",),
            up_block_types=("CrossAttnUpBlock3D",), num_attention_heads=(2,), layers_per_block=1)
VAE = dict(block_out_channels=(16, 16), layers_per_block=1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("four_module")
    config = load_config(f"{CONFIG}:test")
    config.base.checkpoint = make_tiny_checkpoint(str(root / "base"), unet_overrides=UNET, vae_overrides=VAE)
    workdir = str(root / "run")
    return config, workdir, four_module.run(config, workdir)


def _npz(path):
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def test_every_module_writes_its_record_and_media(run):
    config, workdir, summary = run
    assert list(summary["modules"]) == list(four_module.MODULES)
    for name in four_module.MODULES:
        assert (Path(workdir) / name / four_module.RECORD_FILE).is_file()
    videos = [v for m in ("separate", "fusion", "consistency") for v in summary["modules"][m]["videos"]]
    videos += [v for vs in summary["modules"]["evaluate"]["videos"].values() for v in vs]
    assert len(videos) == 2 * len(config.prompts) + 4 * len(config.prompts)
    for video in videos:
        for path in video.values():
            assert Path(path).stat().st_size > 0, path


def test_separate_masks_are_the_conditions_exact_masks(run):
    config, workdir, _ = run
    clips = _npz(Path(workdir) / "separate" / "clips.npz")
    assert clips["frames"].shape == (len(config.prompts), config.separate.num_frames, 32, 32, 3)
    for frames, masks, prompt in zip(clips["frames"], clips["masks"], config.prompts):
        np.testing.assert_array_equal(masks, BuiltinMasks(builtin.object_alpha, **config.separate.render.to_dict())(frames, prompt))
        assert masks.any() and not masks.all()


def test_fusion_writes_the_fused_clips_and_masks_as_the_tuning_set(run):
    config, workdir, summary = run
    fused = _npz(Path(workdir) / "fusion" / "fused.npz")
    masks = _npz(Path(workdir) / "separate" / "clips.npz")["masks"]
    np.testing.assert_array_equal(fused["masks"], masks)
    weights = np.asarray(summary["modules"]["fusion"]["weights"])
    assert weights.shape == (len(config.prompts), 2) and np.isfinite(weights).all() and (weights > 0).all()
    from array_record.python import array_record_module

    tuning_set = Path(summary["modules"]["fusion"]["tuning_set"])
    shard = next(tuning_set.glob("*.array_record"))
    reader = array_record_module.ArrayRecordReader(str(shard))
    records = [decode_record(r) for r in reader.read_all()]
    reader.close()
    assert [r.captions for r in records] == [(p,) for p in config.prompts]
    for record, frames, mask in zip(records, fused["frames"], masks):
        np.testing.assert_array_equal(record.frames, mask_clip(frames, mask))


def _flat(tree):
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def test_combined_tuning_trains_only_the_unet(run):
    config, workdir, summary = run
    tuned, _ = checkpoints.load_inference_checkpoint(summary["modules"]["combined"]["export"])
    base, _ = checkpoints.load_inference_checkpoint(config.base.checkpoint)
    for kind in ("vae", "text_encoder"):
        tuned_flat = _flat(tuned[kind])
        for path, value in _flat(base[kind]).items():
            np.testing.assert_array_equal(tuned_flat[path], value, err_msg=f"{kind}{path}")
    tuned_unet = _flat(tuned["unet"])
    assert any(not np.array_equal(tuned_unet[p], v) for p, v in _flat(base["unet"]).items())
    records = [json.loads(line) for line in Path(summary["modules"]["combined"]["metrics"]).read_text().splitlines()]
    last = [r for r in records if "loss_fg" in r][-1]
    assert last["step"] == config.combined.total_steps
    assert last["loss_fg"] + last["loss_bg"] == pytest.approx(last["loss_l1"], rel=1e-5)
    weights = config.combined.loss_weights
    assert last["loss"] == pytest.approx(sum(w * last[k] for w, k in zip(weights, ("loss_l1", "loss_fg", "loss_bg"))),
                                         rel=1e-5)


def test_consistency_and_evaluation(run):
    config, workdir, summary = run
    frames = _npz(summary["modules"]["consistency"]["frames"])["frames"]
    assert frames.shape == (len(config.prompts), config.sampling.codenoise.num_frames, 32, 32, 3)
    evaluation = json.loads((Path(workdir) / "evaluate" / "evaluation.json").read_text())
    assert set(evaluation["methods"]) == {"four_module", "codenoise", "vidrd"}
    for row in evaluation["methods"].values():
        assert set(probes.COLUMNS) <= set(row)
        assert row["total_s"] > 0 and 0 <= row["multi_blob_frames"] <= 1
    table = (Path(workdir) / "evaluate" / "evaluation.md").read_text()
    assert all(f"| {m} |" in table for m in evaluation["methods"])


def test_a_rerun_skips_every_finished_module(run):
    config, workdir, summary = run
    again = four_module.run(config, workdir)
    assert all(record["skipped"] for record in again["modules"].values())
    assert again["modules"]["evaluate"]["methods"] == summary["modules"]["evaluate"]["methods"]


def test_cli_reports_bad_config_in_one_line(tmp_path, capsys):
    argv = ["prog", "--config", f"{CONFIG}:test", "--workdir", str(tmp_path / "w"), "--config.fusion.weights=learned"]
    assert four_module.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.match(r"error: config\.fusion\.weights must be one of", err[0]), err
    config = load_config(f"{CONFIG}:test")
    config.separate.condition = ""
    with pytest.raises(ValueError, match="segmenter.kind='builtin'.*condition='builtin'"):
        four_module.validate_config(config)
    config = load_config(f"{CONFIG}:test")
    config.fusion.step = config.sampling.num_steps
    with pytest.raises(ValueError, match="config.fusion.step"):
        four_module.validate_config(config)
    assert not (tmp_path / "w").exists()


# --- the probes ----------------------------------------------------------------------------------------------------

def _clip(colour="red", background="plain", seed=0):
    return builtin.render_clip(colour, "square", "right", num_frames=6, height=32, background=background, seed=seed,
                               size_range=(0.12, 0.14), travel_range=(0.3, 0.35))


def test_probes_on_a_rendered_clip():
    row = probes.video_probes(_clip(), "a red square moving right")
    assert row["blobs_per_frame"] == 1 and row["multi_blob_frames"] == 0 and row["empty_frames"] == 0
    assert row["bg_change"] == 0.0  # a plain background never changes
    assert row["fg_colour_error"] < 25  # the renderer's colour jitter is ±12 per channel
    assert row["fg_area_cv"] < 0.1 and row["fg_fill_std"] < 0.1


def test_probes_count_a_ghost_and_see_background_flicker():
    clip = _clip(background="textured")
    ghosted = clip.copy()
    ghosted[3:, 2:6, 2:6] = builtin.COLOURS["blue"]  # a second object appears half-way
    row = probes.video_probes(ghosted, "a red square moving right")
    assert row["multi_blob_frames"] == pytest.approx(0.5)
    assert row["blobs_per_frame"] == pytest.approx(1.5)
    flicker = clip.astype(np.int16)
    flicker[1::2] = np.clip(flicker[1::2] + 6, 0, 255)
    base = probes.video_probes(clip, "a red square moving right")
    flickered = probes.video_probes(flicker.astype(np.uint8), "a red square moving right")
    assert base["bg_change"] == 0.0 and flickered["bg_change"] == pytest.approx(6.0, abs=0.5)
    with pytest.raises(ValueError, match="uint8"):
        probes.video_probes(clip[:1], "a red square moving right")
