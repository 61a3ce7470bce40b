"""The evaluation harness end to end: ``python -m vidrd_jax.evaluate`` on a folder of videos (CLIP + long-video
metrics, the feature cache, user errors), FVD through the evaluator, and the UCF-101 zero-shot recipe on a tiny
checkpoint."""
import json
import os
import re

import numpy as np
import pytest
import torch
import transformers
from scipy import ndimage

from vidrd_jax import cli, make_tiny_checkpoint, media
from vidrd_jax.evaluate import c3d, clip_metrics, fvd, i3d, inception_score, protocol
from vidrd_jax.evaluate.__main__ import main
from vidrd_jax.models.tokenizer import load_tokenizer

SIZE = 32


def _texture(seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).random((SIZE, SIZE, 3))
    smooth = ndimage.gaussian_filter(noise, (1.5, 1.5, 0))
    return ((smooth - smooth.min()) / (smooth.max() - smooth.min()) * 255).astype(np.uint8)


def _shifted(seed: int, shifts) -> np.ndarray:
    return np.stack([np.roll(_texture(seed), s, axis=1) for s in shifts])


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny random transformers CLIPModel folder with the CLIP tokenizer."""
    torch.manual_seed(0)
    text = dict(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=77)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32,
                  patch_size=8)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision, projection_dim=8))
    folder = tmp_path_factory.mktemp("clip")
    model.save_pretrained(folder)
    load_tokenizer(cache_dir=tmp_path_factory.mktemp("vocab"), pad_token="<|endoftext|>").save(folder)
    return str(folder)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """(folder, prompts.json, frames by name): a still, a moving and a two-clip video with a jump at the junction."""
    folder = tmp_path_factory.mktemp("videos")
    frames = {"still": _shifted(0, [0] * 16), "moving": _shifted(1, range(0, 32, 2)),
              "jump": _shifted(2, [t + (12 if t >= 8 else 0) for t in range(16)])}
    for name, video in frames.items():
        media.write_video(folder / f"{name}.mp4", video)
    prompts = folder.parent / "prompts.json"
    prompts.write_text(json.dumps({"still.mp4": "a still picture", "moving": "a pattern sliding right",
                                   "jump.mp4": ["a pattern", "the pattern jumps"]}))
    return str(folder), str(prompts)


def test_cli_scores_a_folder_and_reuses_the_cache(tmp_path, clip_dir, videos, capsys):
    folder, prompts = videos
    argv = ["--videos", folder, "--prompts", prompts, "--clip-model", clip_dir, "--clip-frames", "8",
            "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "results.json"), "--no-progress"]
    assert cli.run_cli(main, argv) == 0
    record = json.loads((tmp_path / "results.json").read_text())
    per_video = {os.path.basename(v["path"]): v for v in record["per_video"]}
    assert record["num_videos"] == 3 and record["cache"] == {"dir": str(tmp_path / "cache"), "hits": 0, "misses": 3}
    assert per_video["still.mp4"]["dynamic_degree"] == 0.0 and per_video["moving.mp4"]["dynamic_degree"] == 1.0
    assert per_video["still.mp4"]["temporal_flickering"] > 0.995 > per_video["moving.mp4"]["temporal_flickering"]
    assert per_video["jump.mp4"]["junction_ratio"] > 2 and per_video["moving.mp4"]["junction_ratio"] < 1.5
    assert per_video["still.mp4"]["frame_consistency"] > 0.999
    assert record["metrics"]["dynamic_degree"] == pytest.approx(2 / 3)
    # CLIPSIM recomputed from the decoded frames with the embedder; the jump video scores clip k against prompt k
    embedder = clip_metrics.CLIPEmbedder.from_folder(clip_dir)
    frames = media.read_video(os.path.join(folder, "jump.mp4"))
    image, text = embedder.image_embeds(frames), embedder.text_embeds(["a pattern", "the pattern jumps"])
    expected = clip_metrics.clipsim(text, image, np.repeat([0, 1], 8))
    assert per_video["jump.mp4"]["clipsim"] == pytest.approx(expected, abs=1e-6)
    table = (tmp_path / "results.md").read_text()
    assert "| subject consistency | dynamic degree |" in table and table.count("\n| generated | 3 |") == 1
    assert "wrote" in capsys.readouterr().out
    assert cli.run_cli(main, argv) == 0  # the second run reads every CLIP feature from the cache
    again = json.loads((tmp_path / "results.json").read_text())
    assert again["cache"]["hits"] == 3 and again["cache"]["misses"] == 0
    assert again["metrics"] == record["metrics"]


@pytest.mark.parametrize("args, message", [
    (["--videos", "{tmp}/none"], r"--videos: no video files"),
    (["--videos", "{folder}", "--prompts", "{tmp}/p.json"], r"--prompts: .* has no prompt for video .*still"),
    (["--videos", "{folder}", "--i3d", "{tmp}/i3d.pt"], r"--i3d \(FVD\) needs --real"),
    (["--videos", "{folder}", "--clip-model", "{tmp}/nothing"], r"--clip-model: .* is not a directory"),
    (["--videos", "{folder}", "--clip-frames", "1"], r"clip_frames must be an int >= 2"),
    (["--videos", "{folder}", "--c3d", "{tmp}/c3d.npz"], r"needs both --c3d and --c3d-mean"),
    (["ucf101", "--checkpoint", "{tmp}", "--samples-per-class", "0"], r"samples_per_class must be an int >= 1"),
])
def test_cli_user_errors_are_one_line(tmp_path, videos, capsys, args, message):
    (tmp_path / "p.json").write_text(json.dumps({"moving.mp4": "x", "jump.mp4": "y"}))
    argv = [a.format(tmp=tmp_path, folder=videos[0]) for a in args] + ["--out", str(tmp_path / "out" / "r.json")]
    assert cli.run_cli(main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert re.search(message, err[0]), err[0]


def test_fvd_and_is_through_the_evaluator_match_their_reference_functions(tmp_path):
    from tests.torch_c3d import random_c3d_npz
    from tests.torch_i3d import random_i3d

    tiny = dict(width=1 / 16, num_classes=12)
    model = random_i3d(0, logits_pool=(2, 2, 2), **tiny)
    path = str(tmp_path / "i3d.pt")
    torch.save(model.state_dict(), path)
    extractor = fvd.i3d_extractor(i3d.load_i3d_params(path, i3d.I3DConfig(**tiny)),
                                  i3d.I3DConfig(logits_pool=(2, 1, 1), **tiny), batch_size=8, resolution=32)
    c3d_tiny = c3d.C3DConfig(width=1 / 16, fc_dim=24, num_classes=10, resolution=56)
    weights, mean = random_c3d_npz(0, c3d_tiny.width, c3d_tiny.fc_dim, c3d_tiny.num_classes, c3d_tiny.resolution,
                                   fc6_in=128)
    np.savez(tmp_path / "c3d.npz", **weights)
    np.savez(tmp_path / "mean.npz", mean=mean)
    c3d_params = c3d.load_c3d_params(str(tmp_path / "c3d.npz"), str(tmp_path / "mean.npz"), c3d_tiny)
    classifier = inception_score.c3d_extractor(c3d_params, c3d_tiny, batch_size=8)
    sets = {}
    for kind, seeds in (("real", range(3)), ("fake", range(10, 13))):
        os.makedirs(tmp_path / kind)
        for seed in seeds:
            video = _shifted(seed, range(0, 3 * 18, 3)) if kind == "real" else _shifted(seed, [0] * 18)
            media.write_video(tmp_path / kind / f"{seed}.mp4", video)
        sets[kind] = protocol.list_videos(str(tmp_path / kind))
    evaluator = protocol.Evaluator(i3d=(extractor, "tiny-i3d"), c3d=(classifier, "tiny-c3d"),
                                   cache_dir=str(tmp_path / "cache"), batch_size=8)
    record = evaluator.evaluate(sets["fake"], real=sets["real"])
    decoded = {k: np.stack([media.read_video(p) for p in v]).astype(np.float32) / 127.5 - 1 for k, v in sets.items()}
    expected = fvd.compute_fvd(decoded["real"], decoded["fake"], extractor)
    assert record["metrics"]["fvd"] == pytest.approx(expected, rel=1e-6) and expected > 0
    score, std = inception_score.video_inception_score(decoded["fake"], classifier)
    assert record["metrics"]["inception_score"] == pytest.approx(score, rel=1e-6) and score > 1
    assert record["metrics"]["inception_score_std"] == std == 0.0  # one split
    again = evaluator.evaluate(sets["fake"], real=sets["real"])  # every I3D and C3D feature comes from the cache
    assert again["cache"] == {"dir": str(tmp_path / "cache"), "hits": 9, "misses": 0}
    assert again["metrics"] == record["metrics"]


def test_ucf101_prompt_file_has_the_101_classes():
    classes = dict(protocol.read_class_prompts())
    assert len(classes) == 101 and {"ApplyEyeMakeup", "YoYo", "PlayingDhol", "Skijet"} <= set(classes)
    assert all(len(prompt.split()) >= 3 for prompt in classes.values())


def test_ucf101_protocol_generates_resumes_and_scores(tmp_path, clip_dir, capsys):
    checkpoint = make_tiny_checkpoint.make_tiny_checkpoint(str(tmp_path / "ckpt"))
    prompts = tmp_path / "classes.txt"
    prompts.write_text("# two classes\nArchery: a person shooting an arrow\nRowing: a team rowing a boat\n")
    out = tmp_path / "run"
    argv = ["ucf101", "--checkpoint", checkpoint, "--class-prompts", str(prompts), "--samples-per-class", "2",
            "--batch-size", "3", "--resolution", "32", "--num-clips", "2", "--clip-frames", "4",
            "--num-prompt-frames", "2", "--num-steps", "2", "--clip-model", clip_dir, "--out", str(out),
            "--no-progress"]
    assert cli.run_cli(main, argv) == 0
    record = json.loads((out / "results.json").read_text())
    assert record["num_videos"] == 4 and record["protocol"]["generated"] == 4 and record["protocol"]["batches"] == 2
    files = sorted(str(p.relative_to(out)) for p in out.glob("videos/*/*.mp4"))
    assert files == ["videos/Archery/Archery_0000.mp4", "videos/Archery/Archery_0001.mp4",
                     "videos/Rowing/Rowing_0000.mp4", "videos/Rowing/Rowing_0001.mp4"]
    assert media.probe_video(out / files[0]).num_frames == 8  # 2 clips x 4 frames, all kept
    assert set(record["clipsim_per_class"]) == {"Archery", "Rowing"}
    assert json.loads((out / "prompts.json").read_text())[files[2]] == "a team rowing a boat"
    assert {"clipsim", "dynamic_degree", "junction_ratio"} <= set(record["metrics"])
    assert "UCF-101 zero-shot" in (out / "results.md").read_text()
    stamp, removed = os.stat(out / files[0]).st_mtime_ns, media.read_video(out / files[3])
    os.remove(out / files[3])  # the second batch (samples 3..4) is regenerated, the first is kept
    assert cli.run_cli(main, argv) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["protocol"]["generated"] == 1 and again["protocol"]["reused"] == 3
    assert os.stat(out / files[0]).st_mtime_ns == stamp
    np.testing.assert_array_equal(media.read_video(out / files[3]), removed)  # batch 2 again: same key, same video
