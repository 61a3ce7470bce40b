"""Generation CLI and pipeline: outputs, frame counts, determinism, argument errors, one compile for any clip count.

Everything runs the real CLI in-process (``generate.main(argv)``) on a tiny random checkpoint written by
``python -m vidrd_jax.make_tiny_checkpoint`` at 32 x 32 pixels, N = 4, M = 2, 3 DDIM steps.
"""
import dataclasses
import hashlib
import inspect
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest
from PIL import Image

from vidrd_jax import generate, make_tiny_checkpoint, media
from vidrd_jax import pipeline as pipeline_lib
from vidrd_jax.config_loading import load_config
from vidrd_jax.diffusion import CoDenoiseConfig, LongVideoConfig, NoiseSchedule

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "generate_default.py")
SMALL = ["--config.resolution=32", "--config.num_steps=3", "--config.guidance_scale=3.0",
         "--config.vidrd.num_frames=4", "--config.vidrd.num_prompt_frames=2"]
# Traces of the denoiser without a progress callback, by the latent shape the UNet sees (guidance doubles the
# batch): B=1 VidRD clips; co-denoising windows (K=6); a batch of B=2 videos.
VIDRD_SHAPE, WINDOW_SHAPE, BATCH2_SHAPE = (((2, 4, 16, 16, 4), False), ((2, 6, 16, 16, 4), False),
                                           ((4, 4, 16, 16, 4), False))


@dataclasses.dataclass(frozen=True)
class CountingDenoiser:
    """The pipeline's denoiser plus a record of every trace (a Python call is a trace): the latent shape and
    whether a progress callback is attached.

    Equal for equal inner denoisers, so runs of this module share compiled programs exactly as the plain
    ``UNetDenoiser`` does, and never share them with anything outside this module.
    """

    inner: Any
    traces: list = dataclasses.field(compare=False, hash=False)

    def __call__(self, z, t, text, params):
        self.traces.append((tuple(z.shape), self.inner.step_callback is not None))
        return self.inner(z, t, text, params)


@pytest.fixture(scope="module", autouse=True)
def traces():
    recorded = []
    original = pipeline_lib.UNetDenoiser
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline_lib, "UNetDenoiser",
                   lambda config, step_callback=None: CountingDenoiser(original(config, step_callback), recorded))
        yield recorded


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_ckpt")
    assert make_tiny_checkpoint.main(["--out", str(out), "--seed", "0"]) == 0
    return str(out)


def argv(checkpoint, out, *extra, prompts=("a red square",)):
    args = ["generate", "--config", CONFIG, "--checkpoint", checkpoint, "--out", str(out), "--noprogress", *SMALL]
    for prompt in prompts:
        args += ["--prompt", prompt]
    return args + list(extra)


def run_cli(*args, **kwargs):
    code = generate.main(argv(*args, **kwargs))
    assert code == 0
    return json.loads(Path(args[1]).with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def vidrd_run(checkpoint, tmp_path_factory):
    """3 clips, all frames, seed 0; records every VideoWriter.write call (file extension, frame count)."""
    out = tmp_path_factory.mktemp("vidrd") / "video.mp4"
    writes = []
    original = media.VideoWriter.write
    with pytest.MonkeyPatch.context() as mp:
        def recording_write(self, frames):
            writes.append((self.ext, len(frames)))
            original(self, frames)
        mp.setattr(media.VideoWriter, "write", recording_write)
        record = run_cli(checkpoint, out, "--num_clips", "3", "--seed", "0")
    return out, record, writes


def test_default_config_holds_the_paper_settings():
    config = load_config(CONFIG)
    generate.validate_config(config)
    assert (config.num_steps, config.guidance_scale, config.negative_prompt, config.resolution) == \
        (50, 10.0, "watermark", 256)
    assert generate.long_video_config(config, ["p"]) == LongVideoConfig(prompts=("p",))  # N=8 M=4 a=4 b=0.4
    assert generate.co_denoise_config(config, ["p"]) == CoDenoiseConfig(prompts=("p",), num_frames=32)  # K=8, S=4
    config.contact_sheet.columns = 0
    with pytest.raises(generate.UsageError, match="config.contact_sheet.columns"):
        generate.validate_config(config)


def test_tiny_checkpoint_loads_and_param_check_names_problems(checkpoint):
    pipe = pipeline_lib.VideoPipeline.from_checkpoint(checkpoint)
    assert pipe.schedule == NoiseSchedule.sd21_base() and pipe.vae_factor == 2 and pipe.spatial_multiple == 4
    assert len(pipe.tokenizer) == 49408
    leaves = jax.tree_util.tree_leaves_with_path(pipe.params["unet"])
    assert all(np.all(np.isfinite(np.asarray(x))) for _, x in leaves)
    broken = {**pipe.params, "vae": dict(pipe.params["vae"])}
    del broken["vae"]["decoder"]
    broken["text_encoder"] = jax.tree.map(lambda x: x[:1], pipe.params["text_encoder"])
    with pytest.raises(ValueError, match=r"vae: \d+ missing: decoder/.*text_encoder: \d+ misshaped"):
        pipeline_lib.check_params(broken, pipe.configs)
    assert pipeline_lib.resolve_schedule({}) == NoiseSchedule.sd21_base()


def test_vidrd_cli_writes_every_output_streaming_clip_by_clip(vidrd_run, traces):
    out, record, writes = vidrd_run
    for path in (out, out.with_suffix(".gif")):
        info = media.probe_video(path)
        assert (info.num_frames, info.height, info.width) == (12, 32, 32)
    assert media.read_video(out).shape == (12, 32, 32, 3)
    assert Image.open(out.with_suffix(".png")).size == (8 * 32 + 7 * 2, 2 * 32 + 2)  # 12 frames, 8 per row
    # Each clip reaches both writers as soon as it is decoded: 3 writes of 4 frames each, never the whole video.
    assert sorted(writes) == sorted([(".mp4", 4)] * 3 + [(".gif", 4)] * 3)
    assert record["seed"] == 0 and record["prompts"] == [["a red square"]] and record["mode"] == "vidrd"
    assert record["checkpoint"] == str(Path(record["checkpoint"]).resolve())
    assert record["config"]["vidrd"]["num_clips"] == 3 and record["config"]["num_steps"] == 3
    assert record["sampler"]["dsg_beta"] == 0.4 and record["sampler"]["num_prompt_frames"] == 2
    assert [c["guided_steps"] for c in record["clips"]] == [[0, 0], [2, 1], [2, 1]]  # ceil(0.4·3·(2-m)/2)
    assert [c["num_frames"] for c in record["clips"]] == [4, 4, 4]
    assert set(record["timings"]) == {"setup_s", "sample_s", "decode_s", "write_s", "total_s"}
    assert record["videos"][0]["num_frames"] == 12 and record["frames_per_video"] == 12
    assert traces.count(VIDRD_SHAPE) == 1


def test_drop_prompt_frames_keeps_the_new_frames_of_each_clip(checkpoint, vidrd_run, tmp_path):
    out_all, _, _ = vidrd_run
    out = tmp_path / "drop.mp4"
    record = run_cli(checkpoint, out, "--num_clips", "3", "--seed", "0", "--config.vidrd.output=drop_prompt_frames")
    assert media.probe_video(out).num_frames == 8 and [c["num_frames"] for c in record["clips"]] == [4, 2, 2]
    # Whole clips are decoded in both modes, so the kept frames are identical (GIF: lossless given its palette).
    full, dropped = media.read_video(out_all.with_suffix(".gif")), media.read_video(out.with_suffix(".gif"))
    np.testing.assert_array_equal(dropped, full[[0, 1, 2, 3, 6, 7, 10, 11]])


def test_same_seed_same_frames_other_seed_other_frames(checkpoint, vidrd_run, tmp_path, traces):
    out0, record0, _ = vidrd_run
    again = run_cli(checkpoint, tmp_path / "again.mp4", "--num_clips", "3", "--seed", "0")
    other = run_cli(checkpoint, tmp_path / "other.mp4", "--num_clips", "3", "--seed", "1")
    sha = [r["videos"][0]["frames_sha256"] for r in (record0, again, other)]
    assert sha[0] == sha[1] != sha[2]
    # The frames themselves are compared exactly by their sha256 above; x264 with several threads may encode the
    # same frames slightly differently from run to run, so the decoded mp4s are compared up to codec noise.
    first, repeat, other_video = (media.read_video(p).astype(np.float32)
                                  for p in (out0, tmp_path / "again.mp4", tmp_path / "other.mp4"))
    assert np.abs(repeat - first).mean() < 1.0
    assert np.abs(other_video - first).mean() > 5 * max(np.abs(repeat - first).mean(), 0.2)
    assert traces.count(VIDRD_SHAPE) == 1  # three runs, one compiled clip program


def test_pipeline_decodes_and_yields_one_clip_at_a_time(checkpoint, vidrd_run, monkeypatch):
    """The library entry: the sampler has produced exactly clips 0..i when clip i's frames come out."""
    produced = []
    sampler = pipeline_lib.generate_long_video

    def spy(*args, **kwargs):
        for clip in sampler(*args, **kwargs):
            produced.append(clip.index)
            yield clip

    monkeypatch.setattr(pipeline_lib, "generate_long_video", spy)
    pipe = pipeline_lib.VideoPipeline.from_checkpoint(checkpoint)
    config = LongVideoConfig(prompts=("a red square",), num_clips=3, num_frames=4, num_prompt_frames=2, num_steps=3,
                             guidance_scale=3.0)
    chunks = pipe.generate_long_video(config, key=jax.random.key(0), height=32, width=32)
    assert inspect.isgenerator(chunks) and produced == []
    frames = []
    for i, chunk in enumerate(chunks):
        assert produced == list(range(i + 1)) and chunk.index == i
        assert chunk.frames.shape == (1, 4, 32, 32, 3) and chunk.frames.dtype == np.uint8
        frames.append(chunk.frames[0])
    # The library and the CLI (same prompt, seed 0) give the same frames.
    assert hashlib.sha256(np.concatenate(frames).tobytes()).hexdigest() == vidrd_run[1]["videos"][0]["frames_sha256"]


def test_pipeline_encodes_clips_to_the_posterior_mean(checkpoint):
    """``encode_clip``: frame-by-frame encoder mean times the scaling factor (what the denoising task trains on)."""
    from vidrd_jax.models.vae import AutoencoderKL

    pipe = pipeline_lib.VideoPipeline.from_checkpoint(checkpoint)
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    latents = np.asarray(pipe.encode_clip(frames))
    vae = pipe.configs["vae"]
    mean, _ = AutoencoderKL(vae).apply({"params": pipe.params["vae"]},
                                       frames.reshape(6, 32, 32, 3).astype(np.float32) / 127.5 - 1.0, method="encode")
    assert latents.shape == (2, 3, 32 // pipe.vae_factor, 32 // pipe.vae_factor, mean.shape[-1])
    np.testing.assert_allclose(latents, np.asarray(mean).reshape(latents.shape) * vae.scaling_factor, rtol=1e-5,
                               atol=1e-5)
    assert pipe.decode_clip(latents).shape == frames.shape
    for bad in (frames.astype(np.float32), frames[0], frames[:, :, :31, :31]):
        with pytest.raises(ValueError, match="frames must be uint8"):
            pipe.encode_clip(bad)


def test_codenoise_cli_spreads_prompts_over_windows(checkpoint, tmp_path, traces):
    out = tmp_path / "long.mp4"
    record = run_cli(checkpoint, out, "--mode", "codenoise", "--num_frames", "12", "--config.codenoise.window_size=6",
                     "--config.codenoise.stride=3", "--config.codenoise.decode_frames=4",
                     prompts=("sunrise", "noon"))
    assert media.probe_video(out).num_frames == 12 and media.probe_video(out.with_suffix(".gif")).num_frames == 12
    assert record["windows"] == {"num_windows": 3, "window_prompts": [0, 0, 1]}  # anchors 0 and 2; a tie -> prompt 0
    assert [c["num_frames"] for c in record["decode_chunks"]] == [4, 4, 4]
    assert record["sampler"]["type"] == "CoDenoiseConfig" and record["sampler"]["window_size"] == 6
    assert traces.count(WINDOW_SHAPE) == 1


@pytest.mark.parametrize("mode_args", [("--num_clips", "2"), ("--mode", "codenoise", "--num_frames", "8",
                                                             "--config.codenoise.window_size=4",
                                                             "--config.codenoise.stride=2",
                                                             "--config.codenoise.decode_frames=4")])
def test_both_modes_run_with_dpm_solver(checkpoint, tmp_path, mode_args):
    """``--config.solver=dpm_solver++`` reaches the sampler of either mode: other frames than DDIM's."""
    runs = [run_cli(checkpoint, tmp_path / f"{name}.mp4", *mode_args, "--seed", "0", f"--config.solver={solver}")
            for name, solver in (("dpm", "dpm_solver++"), ("ddim", "ddim"))]
    assert [r["sampler"]["solver"] for r in runs] == ["dpm_solver++", "ddim"]
    assert runs[0]["videos"][0]["frames_sha256"] != runs[1]["videos"][0]["frames_sha256"]
    frames = media.read_video(tmp_path / "dpm.gif")
    assert frames.shape[0] == runs[0]["frames_per_video"] == 8 and frames.std() > 0


def test_batch_file_one_video_per_line_and_one_trace_for_1_or_6_clips(checkpoint, tmp_path, traces):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red square\n\na blue circle\n")
    for clips in (1, 6):
        out = tmp_path / f"batch{clips}.mp4"
        assert generate.main(argv(checkpoint, out, "--batch_prompts_file", str(prompts), "--num_clips", str(clips),
                                  prompts=())) == 0
        assert traces.count(BATCH2_SHAPE) == 1  # one trace of the clip function, for 1 clip and for 6
        record = json.loads(out.with_suffix(".json").read_text())
        assert [v["prompts"] for v in record["videos"]] == [["a red square"], ["a blue circle"]]
        videos = [media.read_video(tmp_path / f"batch{clips}_{b}.mp4") for b in range(2)]
        assert [len(v) for v in videos] == [4 * clips] * 2
        assert all((tmp_path / f"batch{clips}_{b}{ext}").is_file() for b in range(2) for ext in (".gif", ".png"))
        assert not np.array_equal(videos[0], videos[1])
        assert record["videos"][0]["frames_sha256"] != record["videos"][1]["frames_sha256"]
    assert len(record["clips"]) == 6
    # The same batch split over 2 devices (one video each): the same videos up to float rounding.
    out = tmp_path / "parallel.mp4"
    assert generate.main(argv(checkpoint, out, "--batch_prompts_file", str(prompts), "--num_clips", "6",
                              "--config.data_parallel_devices=2", prompts=())) == 0
    for b in range(2):
        parallel, single = (media.read_video(tmp_path / f"{name}_{b}.mp4").astype(float)
                            for name in ("parallel", "batch6"))
        assert parallel.shape == single.shape and np.abs(parallel - single).mean() < 0.5


@pytest.mark.parametrize("extra,prompts,message", [
    (["--config.vidrd.num_prompt_frames=9"], None, r"config\.vidrd: num_prompt_frames must be an int in \[0, 4\]"),
    (["--config.vidrd.dsg_beta=1.5"], None, r"config\.vidrd: dsg_beta"),
    (["--config.vidrd.pns_alpha=-1"], None, r"config\.vidrd: pns_alpha"),
    (["--mode", "codenoise", "--num_frames", "14"], None, r"L=14 .*K=8 .*S=4.*nearest valid lengths are 12 and 16"),
    (["--config.codenoise.weighting=cosine"], None, r"config\.codenoise: weighting"),
    (["--config.vidrd.output=drop_prompt_frames", "--config.vidrd.num_prompt_frames=4"], None, r"drop_prompt_frames"),
    (["--config.resolution=30"], None, r"config\.resolution=30 must be a multiple of 4 .*28 or 32"),
    (["--config.num_steps=0"], None, r"config\.num_steps"),
    (["--config.eta=-0.5"], None, r"config\.eta"),
    (["--config.guidance_scale=-1"], None, r"config\.guidance_scale"),
    (["--config.fps=0"], None, r"config\.fps"),
    (["--config.data_parallel_devices=0"], None, r"config\.data_parallel_devices must be -1"),
    (["--config.data_parallel_devices=3"], None, r"config\.data_parallel_devices: a batch of 1 videos does not split"),
    (["--config.num_step=3"], None, r"unknown field: 'num_step' Did you mean \"num_steps\""),
    (["--config.num_steps=many"], None, r"--config\.num_steps=many"),
    (["--num_clips", "3"], ("a", "b"), r"--prompt: 2 prompts for --num_clips 3"),
    ([], ("a", " "), r"--prompt: prompt 2 of 2 is empty"),
    ([], (), r"no prompt"),
    (["--mode", "codenoise", "--num_clips", "2"], None, r"--num_clips applies to --mode vidrd"),
    (["--mode", "codenoise", "--num_frames", "8"], ("a", "b"), r"2 prompts but --num_frames 8 gives only 1 window"),
    (["--mode", "sideways"], None, r"--mode"),
    (["--config.solver=euler"], None, r"config\.solver must be one of \('ddim', 'dpm_solver\+\+'\)"),
    (["--config.solver=dpm_solver++", "--config.eta=0.5"], None, r"config\.eta must be 0 with solver='dpm_solver\+\+'"),
    (["--batch_prompts_file", "/nonexistent/prompts.txt"], None, r"--batch_prompts_file"),
    (["--checkpoint", "/nonexistent/ckpt"], None, r"--checkpoint: directory '/nonexistent/ckpt' does not exist"),
    (["stray"], None, r"unexpected arguments"),
])
def test_bad_arguments_exit_2_with_one_message(checkpoint, tmp_path, capsys, extra, prompts, message):
    out = tmp_path / "never.mp4"
    args = argv(checkpoint, out, *extra, prompts=("a",) if prompts is None else prompts)
    assert generate.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert list(tmp_path.iterdir()) == []


def test_bad_output_and_missing_checkpoint_files(checkpoint, tmp_path, capsys):
    assert generate.main(argv(checkpoint, tmp_path / "video.avi")) == 2
    assert "--out must end in one of ('.mp4', '.webm')" in capsys.readouterr().err
    not_a_checkpoint = tmp_path / "empty"
    not_a_checkpoint.mkdir()
    assert generate.main(argv(str(not_a_checkpoint), tmp_path / "v.mp4")) == 2
    err = capsys.readouterr().err
    assert "--checkpoint:" in err and "model_config.json not found" in err
    assert generate.main(["generate", "--config", str(tmp_path / "missing.py"), "--checkpoint", checkpoint,
                          "--prompt", "a", "--out", str(tmp_path / "v.mp4")]) == 2
    assert "--config:" in capsys.readouterr().err


def test_step_progress_counts_each_denoising_step_once():
    progress = pipeline_lib.StepProgress()
    progress.reset(3)
    for t in (901, 601, 601, 601, 301, 901, 601, 301):  # two clips; repeated t = windows of one step
        progress(np.int32(t))
    assert progress.steps_seen == 6 and progress._bar is None  # both bars closed after 3 steps


def test_pipeline_progress_reports_every_denoising_step(checkpoint):
    """With progress on, a host callback inside the compiled clip program counts each DDIM step of each clip."""
    pipe = pipeline_lib.VideoPipeline.from_checkpoint(checkpoint, progress=True)
    config = LongVideoConfig(prompts=("a",), num_clips=2, num_frames=4, num_prompt_frames=2, num_steps=3,
                             guidance_scale=3.0)
    chunks = list(pipe.generate_long_video(config, key=jax.random.key(0), height=32, width=32))
    assert [c.index for c in chunks] == [0, 1]
    assert pipe.step_progress.steps_seen == 2 * 3


def test_help_exits_0(capsys):
    assert generate.main(["generate", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--batch_prompts_file" in out and "--num_clips" in out


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_interrupted_or_failed_run_keeps_the_earlier_outputs(checkpoint, tmp_path, monkeypatch, capsys):
    out = tmp_path / "video.mp4"
    run_cli(checkpoint, out, "--num_clips", "2", "--seed", "0")
    before = _files(tmp_path)
    assert sorted(before) == ["video.gif", "video.json", "video.mp4", "video.png"]
    sample = pipeline_lib.VideoPipeline.generate_long_video

    def interrupted(self, *args, **kwargs):  # Ctrl-C once the first clip has reached the writers
        chunks = sample(self, *args, **kwargs)
        yield next(chunks)
        raise KeyboardInterrupt

    with monkeypatch.context() as mp:
        mp.setattr(pipeline_lib.VideoPipeline, "generate_long_video", interrupted)
        with pytest.raises(KeyboardInterrupt):
            generate.main(argv(checkpoint, out, "--num_clips", "2", "--seed", "1"))
    assert _files(tmp_path) == before  # byte-identical; no temporary file left behind

    def full_disk(path, frames, columns=8):  # the contact sheet, written after both videos are complete
        raise OSError(28, "No space left on device", path)

    with monkeypatch.context() as mp:
        mp.setattr(media, "write_contact_sheet", full_disk)
        assert generate.main(argv(checkpoint, out, "--num_clips", "2", "--seed", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "No space left on device" in err[0], err
    assert _files(tmp_path) == before
    record = run_cli(checkpoint, out, "--num_clips", "2", "--seed", "1")
    after = _files(tmp_path)
    assert sorted(after) == sorted(before) and record["seed"] == 1
    assert all(after[name] != before[name] for name in before)


def test_unwritable_out_fails_before_any_work(checkpoint, tmp_path, monkeypatch, capsys):
    def no_work(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded although --out cannot be written")

    monkeypatch.setattr(pipeline_lib.VideoPipeline, "from_checkpoint", no_work)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "clash.gif").mkdir()
    (tmp_path / "read_only").mkdir()
    if os.geteuid() == 0:  # root writes wherever permission bits forbid: sysfs takes no new files
        read_only = Path("/sys")
        with pytest.raises(OSError):
            tempfile.TemporaryFile(dir=read_only)
    else:
        read_only = tmp_path / "read_only"
        read_only.chmod(0o555)
    for out, message in ((tmp_path / "a_file" / "v.mp4", r"cannot write .*: '.*a_file' is not a directory"),
                         (tmp_path / "clash.mp4", r"'.*clash\.gif' is a directory"),
                         (read_only / "v.mp4", r"cannot write .*: directory '.*' is not writable")):
        assert generate.main(argv(checkpoint, out)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.search(f"error: --out: .*{message}", err[0]), err


def test_long_prompts_warn_once_naming_the_prompt_and_its_length(checkpoint, caplog):
    pipe = pipeline_lib.VideoPipeline.from_checkpoint(checkpoint)
    long_prompt = "a red square moving right " * 20  # 100 one-token words: 102 tokens with BOS and EOS
    with caplog.at_level(logging.WARNING):
        pipe.encode_prompts([long_prompt, "a blue circle"])
        pipe.encode_prompts([long_prompt])
    warnings = [r.getMessage() for r in caplog.records if "tokens long" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert repr(long_prompt) in warnings[0] and "is 102 tokens long" in warnings[0] and "first 77" in warnings[0]


def test_split_windows_takes_any_batch_on_many_devices():
    """``codenoise.split_windows`` splits co-denoising's windows over the devices, so one video may use them all;
    VidRD mode (clip by clip, no windows) still needs a batch that splits."""
    from vidrd_jax.generate_config import UsageError, data_parallel_mesh, validate_config

    config = load_config(CONFIG)
    config.update(mode="codenoise", data_parallel_devices=4)
    config.codenoise.split_windows = True
    validate_config(config)
    assert data_parallel_mesh(config, 1).shape["data"] == 4
    config.mode = "vidrd"
    with pytest.raises(UsageError, match="a batch of 1 videos does not split over 4"):
        data_parallel_mesh(config, 1)
    config.codenoise.split_windows = None
    with pytest.raises(UsageError, match="config.codenoise.split_windows must be True or False"):
        validate_config(config)
