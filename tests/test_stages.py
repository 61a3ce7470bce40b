"""Staged configs (``vidrd_jax.stages``): placeholders, validation up front, skipping finished stages."""
import ml_collections
import pytest

from vidrd_jax import checkpoints, stages


def _demo(arg: str = "test") -> ml_collections.ConfigDict:
    return stages.load_config(f"configs/demo.py:{arg}" if arg else "configs/demo.py")


def test_placeholders_resolve_to_earlier_exports(tmp_path):
    config = _demo()
    resolved = stages.resolve(config.unet.config, str(tmp_path), ("autoencoder",), "unet.config")
    assert resolved.model.init_from == str(tmp_path / "autoencoder" / "export")
    assert config.unet.config.model.init_from == "{export:autoencoder}"  # the original is untouched
    with pytest.raises(ValueError, match=r"unet\.config\.model\.init_from.*no earlier training stage"):
        stages.resolve(config.unet.config, str(tmp_path), (), "unet.config")


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


def test_a_finished_training_stage_is_skipped(tmp_path):
    config = _demo()
    config.stages = ("autoencoder",)
    # A complete export marks the stage done: nothing is trained (there is no checkpoint to resume from).
    checkpoints.save_inference_checkpoint(stages.export_dir(str(tmp_path), "autoencoder"), {"vae": {"w": [0.0]}},
                                          {"vae": {}})
    summary = stages.run_stages(config, str(tmp_path))
    assert summary["stages"]["autoencoder"]["skipped"] is True
    assert (tmp_path / stages.SUMMARY_FILE).is_file()
