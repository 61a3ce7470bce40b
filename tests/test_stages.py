"""Staged configs (``vidrd_jax.recipes``): placeholders, validation up front, skipping finished stages, the two
commands (a staged config runs with ``python -m vidrd_jax.recipes``, one training job with ``vidrd_jax.train``)."""
import re
from pathlib import Path

import ml_collections
import pytest

from vidrd_jax import checkpoints, train
from vidrd_jax.config_loading import load_config
from vidrd_jax.recipes import __main__ as recipes_main
from vidrd_jax.recipes import placeholders, stages

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _demo(arg: str = "test") -> ml_collections.ConfigDict:
    return load_config(f"configs/demo.py:{arg}" if arg else "configs/demo.py")


def test_placeholders_resolve_to_earlier_exports(tmp_path):
    config = _demo()
    resolved = placeholders.resolve(config.unet.config, str(tmp_path), ("autoencoder",), "unet.config")
    assert resolved.model.init_from == str(tmp_path / "autoencoder" / "export")
    assert config.unet.config.model.init_from == "{export:autoencoder}"  # the original is untouched
    with pytest.raises(ValueError, match=r"unet\.config\.model\.init_from.*no earlier training stage"):
        placeholders.resolve(config.unet.config, str(tmp_path), (), "unet.config")


def test_whole_demo_validates_before_anything_runs(tmp_path):
    for arg in ("", "test"):
        stages.validate_stages(_demo(arg), str(tmp_path))  # later stages' inputs do not exist yet: checked later
    config = _demo()
    config.unet.config.optimizer.learning_rate = -1.0
    with pytest.raises(ValueError, match=r"optimizer\.learning_rate"):
        stages.validate_stages(config, str(tmp_path))
    config = _demo()
    config.stages = ("autoencoder", "missing")
    with pytest.raises(ValueError, match="config.missing does not exist"):
        stages.validate_stages(config, str(tmp_path))
    config = _demo()
    config.long_video.config.sampling.vidrd.dsg_beta = 2.0
    with pytest.raises(ValueError, match=r"long_video\.config.*dsg_beta"):
        stages.validate_stages(config, str(tmp_path))
    config = _demo()
    config.evaluate.config.num_prompts = 0
    with pytest.raises(ValueError, match=r"evaluate\.config.*num_prompts"):
        stages.validate_stages(config, str(tmp_path))


def test_demo_arguments_size_seed_motion_and_the_opt_in_baseline():
    plain, full = _demo("test,seed=2"), _demo("seed=1,baseline,motion=centred_wrap")
    assert "baseline" not in plain.stages and plain.evaluate.config.baseline_checkpoint == ""
    assert plain.unet.config.seed == 2 and plain.unet.config.total_steps < full.unet.config.total_steps
    assert full.stages[:4] == ("autoencoder", "unet", "baseline", "temporal_vae")
    assert full.evaluate.config.baseline_checkpoint == "{export:baseline}" and full.baseline.config.seed == 1
    assert not full.baseline.config.model.unet.use_temporal
    assert [s.name for s in plain.unet.config.data.sources] == ["shapes", "photos"]
    assert plain.evaluate.config.render.motion == "path"
    sources = full.unet.config.data.sources
    assert [(s.name, s.weight, s.params.get("motion", "path")) for s in sources] == [
        ("shapes0", 0.5, "path"), ("shapes1", 0.5, "wrap"), ("photos", 0.1, "path")]
    assert full.evaluate.config.render.motion == "wrap"  # the last shapes source's motion is the one scored
    assert _demo("motion=continued").unet.config.data.sources[0].params.start_frames == (0, 3, 6, 9)
    mixed = _demo("motion=centred_continued").unet.config.data.sources
    assert [(s.weight, s.params.start_frames) for s in mixed[:2]] == [(0.5, (0,)), (0.5, (3, 6, 9))]
    assert not plain.evaluate.config.part_prompts and "part_stride" not in mixed[0].params
    # The full size's default, motion=parts: a quarter of the clips go on past the centred path, each captioned with
    # its part; the long videos prompt clip k with part k's. parts_35, parts_even: the same at 35 % and half.
    parts, even = _demo(""), _demo("motion=parts_even")
    assert [(s.weight, s.params.start_frames, s.params.part_stride) for s in parts.unet.config.data.sources[:2]] == [
        (0.75, (0,), 3), (0.25, (3, 6, 9), 3)]
    assert [(s.weight, s.params.part_stride) for s in even.unet.config.data.sources[:2]] == [(0.5, 3), (0.5, 3)]
    third = _demo("motion=parts_35")
    assert [(s.weight, s.params.part_stride) for s in third.unet.config.data.sources[:2]] == [(0.65, 3), (0.35, 3)]
    assert all(c.evaluate.config.part_prompts for c in (parts, third, even))
    clips = parts.long_video.config.prompts[0].split(" | ")
    assert clips[1:] == [f"{clips[0]}, part {k}" for k in (2, 3, 4)]
    assert " | " not in plain.long_video.config.prompts[0]
    for arg in ("tests", "seed=x", "baseline=1", "motion=bounce"):
        with pytest.raises(ValueError, match="unknown argument"):
            _demo(arg)


def test_a_finished_training_stage_is_skipped(tmp_path):
    config = _demo()
    config.stages = ("autoencoder",)
    # A complete export marks the stage done: nothing is trained (there is no checkpoint to resume from).
    checkpoints.save_inference_checkpoint(placeholders.export_dir(str(tmp_path), "autoencoder"), {"vae": {"w": [0.0]}},
                                          {"vae": {}})
    summary = stages.run_stages(config, str(tmp_path))
    assert summary["stages"]["autoencoder"]["skipped"] is True
    assert (tmp_path / stages.SUMMARY_FILE).is_file()


def test_each_command_rejects_the_other_kind_of_config_in_one_line(tmp_path, capsys):
    for main, config, command in ((train.main, "configs/demo.py:test", "python -m vidrd_jax.recipes"),
                                  (recipes_main.main, "configs/tiny.py", "python -m vidrd_jax.train")):
        argv = ["prog", "--config", config, "--workdir", str(tmp_path / "run")]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.match(f"error: --config .*: run it with {command} --config {config} ", err[0]), err
    assert list(tmp_path.iterdir()) == []


def test_configs_that_load_other_configs_work_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config(CONFIGS / "tpu_pod.py").batch_size == 256  # loads sd21_256.py next to it
    assert load_config(f"{CONFIGS / 'demo.py'}:test").long_video.config.sampling.num_steps == 8
    with pytest.raises(FileNotFoundError, match="config file 'missing.py' not found"):
        load_config("missing.py:test")
    (tmp_path / "empty.py").write_text("X = 1\n")
    with pytest.raises(ValueError, match="config file 'empty.py' has no get_config"):
        load_config("empty.py")
