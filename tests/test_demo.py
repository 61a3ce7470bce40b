"""End to end: README's main command at test size (``configs/demo.py:test``), in a subprocess on one CPU device.

Every stage runs for real: autoencoder -> UNet3D + text encoder -> temporal decoder -> VidRD long video and
co-denoised video -> evaluation on held-out prompts (the baseline without temporal layers is opt-in, argument
``baseline``). Asserted: every output exists, the sampler ablation's junction smoothness (a pass mark), and the
temporal decoder's lower flicker; colour and direction accuracy are measured and reported (the full demo's numbers:
BENCHMARKS.md). The run starts when the suite is collected and overlaps the other tests.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ABLATION_MARGIN = 0.09  # junction ratio of every other sampler variant above the main one's
FLICKER_MARGIN = 4e-4  # fall of the temporal decoder's flicker
TIMEOUT_S = 1800  # the run takes 4-6 min alone (host speed varies), longer beside the rest of the suite
_RUN = pytest.StashKey[tuple[subprocess.Popen, Path]]()


def start(config: pytest.Config) -> tuple[subprocess.Popen, Path]:
    """Starts the demo run once per session (``conftest.py`` calls this at collection, so the run, which keeps about
    1.5 of 2 cores busy alone, overlaps the rest of the suite); returns (process, workdir)."""
    if _RUN not in config.stash:
        workdir = Path(tempfile.mkdtemp(prefix="vidrd_demo_"))
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user's machine
        env["JAX_PLATFORMS"] = "cpu"
        with open(workdir / "stdout.txt", "w") as stdout, open(workdir / "stderr.txt", "w") as stderr:
            process = subprocess.Popen([sys.executable, "-m", "vidrd_jax.recipes", "--config", "configs/demo.py:test",
                                        "--workdir", str(workdir / "run")], cwd=REPO, env=env, stdout=stdout,
                                       stderr=stderr)
        config.stash[_RUN] = process, workdir
    return config.stash[_RUN]


def stop(config: pytest.Config) -> None:
    """Ends the run (if the session ends before waiting for it) and removes its workdir."""
    if _RUN in config.stash:
        process, workdir = config.stash[_RUN]
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def demo(request):
    process, root = start(request.config)
    try:
        process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop(request.config)
        pytest.fail(f"the demo run took over {TIMEOUT_S} s")
    stdout, stderr = ((root / name).read_text() for name in ("stdout.txt", "stderr.txt"))
    assert process.returncode == 0, stderr[-5000:]
    workdir = root / "run"
    return workdir, json.loads((workdir / "summary.json").read_text()), stdout


def test_every_stage_ran_and_wrote_its_outputs(demo):
    workdir, summary, _ = demo
    assert list(summary["stages"]) == ["autoencoder", "unet", "temporal_vae", "long_video", "co_denoise", "evaluate"]
    for name in ("autoencoder", "unet", "temporal_vae"):
        assert (Path(summary["stages"][name]["export"]) / "model_config.json").is_file()
    assert summary["stages"]["autoencoder"]["evaluation"]["mean/image_decoder/psnr"] > 20.0
    # The image autoencoder trained encoder and 2-D decoder only: its Temp-Convs kept their zero-initialised last
    # conv for the temporal stage, which trained exactly those.
    from vidrd_jax import checkpoints, train_state

    image_ae = train_state.flatten(checkpoints.load_inference_checkpoint(summary["stages"]["autoencoder"]["export"])[0])
    final = train_state.flatten(checkpoints.load_inference_checkpoint(summary["stages"]["temporal_vae"]["export"])[0])
    # 3 sub-layers: convs_11 is the last conv of each Temp-Conv
    last_convs = [p for p in image_ae if p.startswith("vae/") and "temp_convs_" in p and "/convs_11/" in p]
    assert last_convs and all(not image_ae[p].any() for p in last_convs)
    assert any(final[p].any() for p in last_convs)
    # The final model is the UNet stage's UNet and text encoder (as exported) with the fine-tuned decoder.
    unet_stage = train_state.flatten(checkpoints.load_inference_checkpoint(summary["stages"]["unet"]["export"])[0])
    kept = [p for p in unet_stage if not p.startswith("vae/")]
    assert kept and all((final[p] == unet_stage[p]).all() for p in kept)
    for name in ("long_video", "co_denoise"):
        for video in summary["stages"][name]["videos"]:
            for kind in ("video", "gif", "png"):
                assert Path(video[kind]).stat().st_size > 0
    assert (workdir / "evaluate" / "evaluation.md").is_file()


def test_evaluation_table_and_sampler_ablation(demo):
    workdir, summary, stdout = demo
    evaluation = json.loads((workdir / "evaluate" / "evaluation.json").read_text())
    print("\n" + (workdir / "evaluate" / "evaluation.md").read_text())
    assert "| model | reverse_dsg_pns |" in stdout and "baseline" not in evaluation["results"]  # opt-in
    assert "| model | co_denoise |" in stdout  # the co-denoised videos of the ablation prompts, scored alike
    assert evaluation["results"]["model"]["co_denoise"]["num_videos"] == \
        evaluation["results"]["model"]["forward_dsg_pns"]["num_videos"]
    model = evaluation["results"]["model"]
    main = model["reverse_dsg_pns"]
    assert main["num_videos"] >= 32  # 16 held-out prompts x 2 seeds
    # The autoencoder's fidelity: the same held-out combinations, rendered and passed through encoder and decoder.
    assert model["reconstruction"]["num_videos"] == main["num_videos"]
    for scores in model.values():
        assert 0.0 <= scores["colour_accuracy"] <= 1.0 and 0.0 <= scores["direction_accuracy"] <= 1.0
    # The paper's ablation (§5.4) on our data: reused, guided prompt frames (DSG + PNS, reverse mapping) make the
    # clip junctions as smooth as the frames inside a clip; without DSG/PNS the junctions jump.
    # Margins: half or less of the smallest measured over training seeds 0-2 x two float paths (default, AVX2 cap)
    # with benchmarks/demo_seeds.py --size test (BENCHMARKS.md, "Test size"): main ratio 0.16-0.25 against the mark
    # of 1.5, every other variant at least 0.27 above it.
    assert evaluation["passes"]["junction_ratio"] and main["junction_ratio"] <= 1.5
    for variant in ("forward_dsg_pns", "reverse_no_dsg_pns", "forward_no_dsg_pns"):
        assert model[variant]["junction_ratio"] > main["junction_ratio"] + ABLATION_MARGIN, (variant, model[variant],
                                                                                             main)
    # The colour / direction pass marks (0.8 / 0.8) are reported pass/FAIL in the table and belong to the full demo:
    # this size's minute of training reaches neither (colour 0.00-0.06, direction 0.00-0.28 over seeds 0-2 x two
    # float paths; its autoencoder keeps almost no object colour), so they are not asserted here.
    assert set(evaluation["passes"]) == {"colour_accuracy", "direction_accuracy", "junction_ratio", "jump_ratio",
                                         "motion_ratio", "continued_junctions"}


def test_temporal_decoder_lowers_flicker(demo):
    _, summary, _ = demo
    evaluation = summary["stages"]["temporal_vae"]["evaluation"]  # held-out clips, after vs before fine-tuning
    # Over seeds 0-2 x two float paths flicker fell by at least 0.0012 (mean latents) / 0.0017 (samples) and PSNR
    # rose by 0.04 dB or more; the test asks for a third of the smallest fall and allows PSNR to drop by 0.5 dB.
    for latents in ("mean", "sample"):
        assert evaluation[f"{latents}/delta/flicker"] < -FLICKER_MARGIN, evaluation
        assert evaluation[f"{latents}/delta/psnr"] > -0.5, evaluation
