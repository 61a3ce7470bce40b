"""Offline captioning tools (paper §4.2): BLIP-2 label captioning, CLIP frame scoring, segment-then-caption, CLI.

Models are tiny, randomly initialised BLIP-2 / CLIP built from configs and saved to temporary folders with
offline tokenizers (a byte-level GPT-2 style vocabulary; the real CLIP BPE vocabulary from ``openai-clip``).
"""
from __future__ import annotations

import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from data_pipelines import caption as caption_cli
from data_pipelines.captioning.captioners import (
    PROMPT_TEMPLATES,
    Blip2Captioner,
    choose_template,
    format_prompt,
    label_text,
    pick_frame_and_template,
    validate_templates,
    video_rng,
)
from data_pipelines.captioning.segments import (
    ClipFrameScorer,
    SegmentConfig,
    VlmRelevanceJudge,
    find_segments,
    keep_mask,
    mark_frames,
    parse_yes_no,
    sample_indices,
    segment_then_caption,
)
from vidrd_jax import cli
from vidrd_jax.media import read_video, write_video
from vidrd_jax.models.tokenizer import bytes_to_unicode


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _opt_style_tokenizer():
    from transformers import GPT2Tokenizer

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for ch in bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    return GPT2Tokenizer(vocab=vocab, merges=[], unk_token="<unk>", bos_token="</s>", eos_token="</s>",
                         pad_token="<pad>")


def _clip_tokenizer():
    """The real CLIP BPE tokenizer, built offline from openai-clip's vocabulary file (clip is not imported)."""
    from transformers import CLIPTokenizer

    (clip_dir,) = importlib.util.find_spec("clip").submodule_search_locations
    with gzip.open(os.path.join(clip_dir, "bpe_simple_vocab_16e6.txt.gz")) as f:
        merges = [tuple(m.split()) for m in f.read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]]
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)


@pytest.fixture(scope="module")
def blip2_dir(tmp_path_factory) -> str:
    from transformers import Blip2Config, Blip2ForConditionalGeneration, Blip2Processor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    folder = str(tmp_path_factory.mktemp("blip2"))
    tok = _opt_style_tokenizer()
    processor = Blip2Processor(image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
                               tokenizer=tok, num_query_tokens=4)  # adds the "<image>" token to `tok`
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = Blip2Config(
        vision_config=dict(tiny, image_size=32, patch_size=8),
        qformer_config=dict(tiny, vocab_size=64, max_position_embeddings=64, cross_attention_frequency=1),
        text_config=dict(model_type="opt", vocab_size=len(tok), hidden_size=32, ffn_dim=64, num_hidden_layers=1,
                         num_attention_heads=2, word_embed_proj_dim=32, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=1, eos_token_id=1),
        num_query_tokens=4, image_token_index=tok.convert_tokens_to_ids("<image>"))
    torch.manual_seed(0)
    Blip2ForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    folder = str(tmp_path_factory.mktemp("clip"))
    tok = _clip_tokenizer()
    tiny = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=dict(tiny, vocab_size=len(tok), max_position_embeddings=77, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=dict(tiny, image_size=32, patch_size=8), projection_dim=16)
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def blip2(blip2_dir) -> Blip2Captioner:
    return Blip2Captioner.from_pretrained(blip2_dir, max_new_tokens=5, batch_size=2)


class RecordingCaptioner:
    """Deterministic Captioner: answers ``"<prompt>|<mean pixel value>"`` and records every query."""

    def __init__(self):
        self.queries: list[tuple[np.ndarray, str]] = []

    def caption(self, images, prompts):
        self.queries += list(zip(images, prompts))
        return [f"{p}|{float(np.mean(im)):.1f}" for im, p in zip(images, prompts)]


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (24 + 4 * i, 40, 3)).astype(np.uint8) for i in range(n)]


# ---------------------------------------------------------------------------------------------------- BLIP-2

def test_blip2_from_folder_captions_and_batches_like_single_calls(blip2):
    images = _images(3)
    prompts = [format_prompt(PROMPT_TEMPLATES[0], "abseiling"), "Question: what? Answer:",
               format_prompt(PROMPT_TEMPLATES[3], "playing_guitar")]
    batched = blip2.caption(images, prompts)  # batch_size=2: one padded batch of 2 (different lengths) + 1
    assert len(batched) == 3 and all(isinstance(c, str) for c in batched)
    # Left padding is right: each caption equals the one generated for that image/prompt alone.
    assert batched == [blip2.caption([im], [p])[0] for im, p in zip(images, prompts)]
    with pytest.raises(ValueError, match="images/prompts"):
        blip2.caption(images, prompts[:2])
    with pytest.raises(ValueError, match="uint8"):
        blip2.caption([images[0].astype(np.float32)], prompts[:1])


def test_blip2_missing_or_incomplete_folder_errors(tmp_path, blip2_dir):
    with pytest.raises(FileNotFoundError, match="blip2: model folder .* does not exist"):
        Blip2Captioner.from_pretrained(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="blip2: model folder .* is empty"):
        Blip2Captioner.from_pretrained(str(tmp_path / "empty"))
    partial = tmp_path / "model_only"
    partial.mkdir()
    for name in ("config.json", "model.safetensors"):
        (partial / name).write_bytes(open(os.path.join(blip2_dir, name), "rb").read())
    with pytest.raises(FileNotFoundError, match="blip2: cannot load the processor"):
        Blip2Captioner.from_pretrained(str(partial))


def test_blip2_folder_without_image_token_settings_still_sees_the_image(tmp_path, blip2_dir, blip2):
    """Older BLIP-2 folders have no num_query_tokens / image_token_index: the loader fills them in."""
    import shutil

    legacy = tmp_path / "legacy"
    shutil.copytree(blip2_dir, legacy)
    for name, key in (("processor_config.json", "num_query_tokens"), ("config.json", "image_token_index")):
        config = json.loads((legacy / name).read_text())
        assert key in config
        config.pop(key)
        (legacy / name).write_text(json.dumps(config))
    loaded = Blip2Captioner.from_pretrained(str(legacy), max_new_tokens=5, batch_size=2)
    assert loaded.processor.num_query_tokens == 4
    assert loaded.model.config.image_token_index == blip2.model.config.image_token_index
    images, prompts = _images(2, seed=4), ["Question: what? Answer:"] * 2
    assert loaded.caption(images, prompts) == blip2.caption(images, prompts)


# ---------------------------------------------------------------------------------------------------- templates

def test_templates_and_seeded_choices():
    assert len(PROMPT_TEMPLATES) >= 5 and len(set(PROMPT_TEMPLATES)) == len(PROMPT_TEMPLATES)
    assert validate_templates(PROMPT_TEMPLATES) == PROMPT_TEMPLATES
    assert format_prompt("Question: what is happening in this picture of {label}? Answer:", "playing_guitar") == \
        "Question: what is happening in this picture of playing guitar? Answer:"
    assert label_text("  doing__the_dishes ") == "doing the dishes"
    draws = lambda seed: [pick_frame_and_template(100, video_rng(seed, i)) for i in range(200)]  # noqa: E731
    assert draws(7) == draws(7)  # same seed, same frames and templates per row
    assert draws(7) != draws(8)
    assert {t for _, t in draws(7)} == set(PROMPT_TEMPLATES)  # every template gets used
    assert all(0 <= f < 100 for f, _ in draws(7))
    # Row i's draw does not depend on which other rows exist.
    assert pick_frame_and_template(100, video_rng(7, 150)) == draws(7)[150]
    assert choose_template(np.random.default_rng(3)) == choose_template(np.random.default_rng(3))
    for bad in ([], ["no label here"], ["{label} and {other}"]):
        with pytest.raises(ValueError, match="templates"):
            validate_templates(bad)
    with pytest.raises(ValueError, match="num_frames"):
        pick_frame_and_template(0, video_rng(0, 0))


# ---------------------------------------------------------------------------------------------------- segmentation

@pytest.mark.parametrize("kept, num_frames, stride, min_frames, expected", [
    # all kept: one segment over the whole video; the captioned sample is the middle kept one.
    ([1, 1, 1, 1, 1], 5, 1, 1, [(0, 5, 2)]),
    ([1, 1, 1, 1, 1], 5, 1, 5, [(0, 5, 2)]),
    ([1, 1, 1, 1, 1], 5, 1, 6, []),
    # none kept.
    ([0, 0, 0, 0], 4, 1, 1, []),
    # run at the end.
    ([0, 0, 1, 1, 1], 5, 1, 3, [(2, 5, 3)]),
    # a run exactly min_frames long is kept, a shorter one dropped.
    ([1, 1, 0, 1, 1, 1, 0], 7, 1, 3, [(3, 6, 4)]),
    ([1, 1, 0, 1, 1, 1, 0], 7, 1, 2, [(0, 2, 0), (3, 6, 4)]),
    # stride 4 over 10 frames: samples 0, 4, 8; the last sample stands for frames 8, 9 only.
    ([0, 1, 1], 10, 4, 6, [(4, 10, 4)]),
    ([0, 1, 1], 10, 4, 7, []),
    ([1, 0, 1], 10, 4, 2, [(0, 4, 0), (8, 10, 8)]),
    ([1, 0, 1], 10, 4, 3, [(0, 4, 0)]),
    # stride 3, 12 frames: samples 0, 3, 6, 9; middle of a 3-sample run is the 2nd sample.
    ([0, 1, 1, 1], 12, 3, 9, [(3, 12, 6)]),
    ([], 0, 2, 1, []),
])
def test_find_segments_exact(kept, num_frames, stride, min_frames, expected):
    assert find_segments(np.array(kept, bool), num_frames, stride, min_frames) == expected


def test_segment_inputs_validated():
    assert sample_indices(10, 4).tolist() == [0, 4, 8]
    assert sample_indices(8, 4).tolist() == [0, 4]
    with pytest.raises(ValueError, match="kept"):
        find_segments(np.ones(3, bool), 10, 2, 1)  # 10 frames at stride 2 -> 5 samples
    for field, value in (("frame_stride", 0), ("min_frames", 0), ("read_chunk", 0), ("threshold", float("nan"))):
        with pytest.raises(ValueError, match=field):
            SegmentConfig(**{field: value})


def test_keep_rule_threshold_inclusive_and_judge_only_sees_passing_frames():
    scores = np.array([0.1, 0.3, 0.25, 0.9, 0.26])
    assert keep_mask(scores, 0.25).tolist() == [False, True, True, True, True]
    assert keep_mask(scores, 0.25, judged=np.array([1, 1, 0, 1, 0], bool)).tolist() == \
        [False, True, False, True, False]
    frames = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 200, 60, 220, 250)])
    seen = []

    def judge(fr, label):  # says "yes" only to brightness > 210
        seen.append(fr[:, 0, 0, 0].tolist())
        return fr[:, 0, 0, 0] > 210

    score = lambda fr, label: fr[:, 0, 0, 0] / 255.0  # noqa: E731
    assert mark_frames(frames, "x", score, 100 / 255).tolist() == [False, True, False, True, True]
    assert mark_frames(frames, "x", score, 100 / 255, judge).tolist() == [False, False, False, True, True]
    assert seen == [[200, 220, 250]]
    with pytest.raises(ValueError, match="score_fn"):
        mark_frames(frames, "x", lambda fr, label: np.zeros(2), 0.5)
    with pytest.raises(ValueError, match="judge"):
        mark_frames(frames, "x", score, 100 / 255, lambda fr, label: np.ones(1, bool))


def test_vlm_relevance_judge_parses_yes_no():
    for text, want in (("Yes", True), ("yes, a man is abseiling", True), (" YES.", True), ("no", False),
                       ("No, it is a cat", False), ("maybe", False), ("", False), ("yesterday", False)):
        assert parse_yes_no(text) is want, text

    class Fixed:
        def __init__(self):
            self.prompts = []

        def caption(self, images, prompts):
            self.prompts += prompts
            return ["Yes it is", "no", "unclear"][:len(images)]

    vlm = Fixed()
    out = VlmRelevanceJudge(vlm)(np.zeros((3, 4, 4, 3), np.uint8), "rock_climbing")
    assert out.tolist() == [True, False, False]
    assert vlm.prompts == ["Question: is this a picture of rock climbing? Answer yes or no. Answer:"] * 3


# ---------------------------------------------------------------------------------------------------- CLIP

def test_clip_scorer_is_cosine_similarity_with_label_text(clip_dir, tmp_path):
    scorer = ClipFrameScorer.from_pretrained(clip_dir, batch_size=2)
    noise = np.random.default_rng(2).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    frames = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (0, 90, 180)] + [noise, noise])
    scores = scorer(frames, "playing_guitar")
    assert scores.shape == (5,) and scores.dtype == np.float32
    assert np.all(np.abs(scores) <= 1.0 + 1e-6)
    assert scores[3] == pytest.approx(scores[4], abs=1e-6)  # same frame, same score
    assert np.ptp(scores[:3]) > 1e-4  # different frames, different scores
    # Reference: cosine of CLIP image/text projections, text "a video of playing guitar".
    model, proc = scorer.model, scorer.processor
    with torch.no_grad():
        tokens = proc.tokenizer(["a video of playing guitar"], return_tensors="pt")
        text = model.get_text_features(**tokens).pooler_output
        image = model.get_image_features(**proc.image_processor(list(frames), return_tensors="pt")).pooler_output
    ref = torch.nn.functional.cosine_similarity(image, text).numpy()
    np.testing.assert_allclose(scores, ref, atol=1e-5)
    assert len(proc.tokenizer) == 49408
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="clip: model folder .* is empty"):
        ClipFrameScorer.from_pretrained(str(tmp_path / "empty"))


# ---------------------------------------------------------------------------------------------------- real videos

BRIGHT, DARK = 150, 10


def _coded_video(pattern: str) -> np.ndarray:
    """One uniform frame per character: '#' relevant (bright, 150 + 4 k), '.' irrelevant (dark, 10 + k)."""
    values = [BRIGHT + 4 * k if c == "#" else DARK + k for k, c in enumerate(pattern)]
    return np.stack([np.full((32, 32, 3), v, np.uint8) for v in values])


def _brightness_score(frames: np.ndarray, label: str) -> np.ndarray:
    return frames.reshape(len(frames), -1).mean(-1) / 255.0


def _frame_of(caption: str) -> int:
    """Frame index encoded in a bright frame, read back from RecordingCaptioner's answer."""
    return round((float(caption.rsplit("|", 1)[1]) - BRIGHT) / 4)


PATTERN = "....########..####..####"  # 24 frames: runs [4, 12), [14, 18), [20, 24)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("videos") / "long.mp4")
    write_video(path, _coded_video(PATTERN), fps=8.0)
    return path


@pytest.mark.parametrize("stride, min_frames, expected", [
    (2, 4, [(4, 12, 6), (14, 18, 14), (20, 24, 20)]),
    (2, 5, [(4, 12, 6)]),
    (1, 4, [(4, 12, 7), (14, 18, 15), (20, 24, 21)]),
    # samples 0 4 8 12 16 20 -> kept . # # . # #; sample 16 stands for frames 16-19 (18, 19 are dark).
    (4, 4, [(4, 12, 4), (16, 24, 16)]),
    (1, 9, []),
])
def test_segment_then_caption_on_decoded_video(long_video, stride, min_frames, expected):
    captioner = RecordingCaptioner()
    config = SegmentConfig(frame_stride=stride, threshold=0.5, min_frames=min_frames, read_chunk=3)
    rows = segment_then_caption(long_video, len(PATTERN), "abseiling", _brightness_score, captioner, config,
                                video_rng(0, 5))
    assert [(r["start_frame"], r["end_frame"]) for r in rows] == [(s, e) for s, e, _ in expected]
    assert [_frame_of(r["caption"]) for r in rows] == [m for _, _, m in expected]  # middle kept sample captioned
    rng = video_rng(0, 5)
    templates = [choose_template(rng) for _ in expected]
    assert [r["caption"].rsplit("|", 1)[0] for r in rows] == [format_prompt(t, "abseiling") for t in templates]
    assert all(r["path"] == long_video and r["label"] == "abseiling" for r in rows)
    assert all(set(r) == {"path", "caption", "label", "start_frame", "end_frame"} for r in rows)


# ---------------------------------------------------------------------------------------------------- CLI

def _read_jsonl(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_cli_short_end_to_end(tmp_path, blip2, blip2_dir):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(str(videos / "a.mp4"), _coded_video("#" * 10), fps=8.0)
    write_video(str(videos / "b.mp4"), _coded_video("." * 6), fps=8.0)
    (videos / "corrupt.mp4").write_bytes(b"\x00\x01 definitely not a video" * 50)
    index = tmp_path / "index.jsonl"
    index.write_text("\n".join([
        json.dumps({"path": "videos/a.mp4", "label": "abseiling"}),
        json.dumps({"path": "videos/missing.mp4", "label": "x"}),
        json.dumps({"path": "videos/corrupt.mp4", "label": "x"}),
        json.dumps({"path": "videos/b.mp4"}),  # no label
        "{not json",
        json.dumps({"path": str(videos / "b.mp4"), "label": "playing_guitar"}),  # absolute path
    ]) + "\n")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "captions.jsonl"
    argv = ["short", "--input", str(index), "--out", str(out), "--blip2", blip2_dir, "--seed", "3",
            "--batch-size", "2", "--max-new-tokens", "5"]
    stats = caption_cli.main(argv)
    rows = _read_jsonl(str(out))
    assert [r["path"] for r in rows] == [os.path.join("..", "videos", "a.mp4"), str(videos / "b.mp4")]
    assert [r["label"] for r in rows] == ["abseiling", "playing_guitar"]
    assert all(set(r) == {"path", "caption", "label", "template"} for r in rows)
    # Frame and template follow the seeded per-row draw (rows 0 and 5 of the index).
    (f0, t0), (f5, t5) = pick_frame_and_template(10, video_rng(3, 0)), pick_frame_and_template(6, video_rng(3, 5))
    assert [r["template"] for r in rows] == [t0, t5]
    frames = [read_video(str(videos / "a.mp4"), [f0])[0], read_video(str(videos / "b.mp4"), [f5])[0]]
    assert [r["caption"] for r in rows] == blip2.caption(frames, [format_prompt(t0, "abseiling"),
                                                                  format_prompt(t5, "playing_guitar")])
    assert stats["skipped"] == {"bad_row": 2, "missing_file": 1, "unreadable": 1}
    assert (stats["videos"], stats["videos_captioned"], stats["rows_written"]) == (6, 2, 2)
    assert json.load(open(out_dir / "captions.stats.json")) == json.loads(json.dumps(stats))
    assert sorted(os.listdir(out_dir)) == ["captions.jsonl", "captions.stats.json"]  # no temporary files left
    assert caption_cli.main(argv)["rows_written"] == 2 and _read_jsonl(str(out)) == rows  # reproducible
    only = "Question: what is this {label} photo about? Answer:"
    (tmp_path / "templates.txt").write_text(f"\n{only}\n\n")
    caption_cli.main(argv + ["--templates", str(tmp_path / "templates.txt")])
    assert [r["template"] for r in _read_jsonl(str(out))] == [only, only]
    (tmp_path / "bad_templates.txt").write_text("no placeholder\n")
    with pytest.raises(ValueError, match="templates"):
        caption_cli.main(argv + ["--templates", str(tmp_path / "bad_templates.txt")])


def test_cli_counts_empty_captions_and_takes_any_captioner(tmp_path, clip_dir):
    write_video(str(tmp_path / "v.mp4"), _coded_video("#" * 8), fps=8.0)
    (tmp_path / "index.csv").write_text("path,label\nv.mp4,keep\nv.mp4,drop\nv.mp4,keep\n")

    class EmptyForDrop(RecordingCaptioner):
        def caption(self, images, prompts):
            return ["" if "drop" in p else c for p, c in zip(prompts, super().caption(images, prompts))]

    captioner = EmptyForDrop()
    out = str(tmp_path / "out.jsonl")
    stats = caption_cli.main(["short", "--input", str(tmp_path / "index.csv"), "--out", out, "--batch-size", "2"],
                             captioner=captioner)
    assert [r["label"] for r in _read_jsonl(out)] == ["keep", "keep"] and len(captioner.queries) == 3
    assert stats["skipped"] == {"empty_caption": 1} and stats["videos_captioned"] == 2
    stats = caption_cli.main(["long", "--input", str(tmp_path / "index.csv"), "--out", out, "--clip", clip_dir,
                              "--threshold", "-1", "--min-frames", "8"], captioner=captioner)
    assert [(r["label"], r["start_frame"], r["end_frame"]) for r in _read_jsonl(out)] == [("keep", 0, 8)] * 2
    assert stats["skipped"] == {"empty_caption": 1} and stats["videos_captioned"] == 2
    with pytest.raises(cli.UsageError, match="--blip2: required"):
        caption_cli.main(["short", "--input", str(tmp_path / "index.csv"), "--out", out])


def test_cli_errors_are_one_line_with_status_2_before_any_model_loads(tmp_path, capsys):
    write_video(str(tmp_path / "v.mp4"), _coded_video("#" * 8), fps=8.0)
    index = tmp_path / "index.csv"
    index.write_text("path,label\nv.mp4,keep\n")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "no_label.csv").write_text("path,caption\nv.mp4,a video\n")
    cases = [(["--input", str(index), "--out", str(tmp_path / "a_file" / "o.jsonl")], r"--out: cannot write .*a_file"),
             (["--input", str(index), "--out", str(tmp_path)], r"--out: .* is a directory"),
             (["--input", str(tmp_path / "nothing.csv"), "--out", "o.jsonl"], r"--input: .* does not exist"),
             (["--input", str(tmp_path / "no_label.csv"), "--out", "o.jsonl"], r"--input: CSV .* needs a header"),
             (["--input", str(index), "--out", str(tmp_path / "o.jsonl")], r"--blip2: required"),
             (["--input", str(index), "--out", str(tmp_path / "o.jsonl"), "--blip2", str(tmp_path / "nowhere")],
              r"--blip2: model folder .* does not exist")]
    for args, message in cases:
        assert cli.run_cli(caption_cli.main, ["short", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and re.match(f"error: {message}", err[0]), err
    assert sorted(os.listdir(tmp_path)) == ["a_file", "index.csv", "no_label.csv", "v.mp4"]


def test_cli_long_end_to_end(tmp_path, blip2_dir, clip_dir):
    write_video(str(tmp_path / "long.mp4"), _coded_video(PATTERN), fps=8.0)
    write_video(str(tmp_path / "tiny.mp4"), _coded_video("#" * 6), fps=8.0)
    (tmp_path / "broken.mp4").write_bytes(b"garbage" * 100)
    index = tmp_path / "index.csv"
    index.write_text("path,label\nlong.mp4,abseiling\ntiny.mp4,abseiling\nbroken.mp4,abseiling\n")
    out = tmp_path / "segments.jsonl"
    base = ["long", "--input", str(index), "--out", str(out), "--blip2", blip2_dir, "--clip", clip_dir,
            "--frame-stride", "2", "--min-frames", "8", "--max-new-tokens", "4"]
    # Threshold -1: every frame passes (cosine >= -1), so each video is one segment if long enough.
    stats = caption_cli.main(base + ["--threshold", "-1"])
    rows = _read_jsonl(str(out))
    assert [(r["path"], r["start_frame"], r["end_frame"], r["label"]) for r in rows] == \
        [("long.mp4", 0, 24, "abseiling")]
    assert isinstance(rows[0]["caption"], str)
    assert stats["skipped"] == {"no_segments": 1, "unreadable": 1}
    # The untrained BLIP-2 never answers "yes" to the relevance question, so the VLM check drops every frame.
    stats = caption_cli.main(base + ["--threshold", "-1", "--vlm-check"])
    assert _read_jsonl(str(out)) == [] and stats["skipped"] == {"no_segments": 2, "unreadable": 1}
    # Threshold above any cosine: nothing is kept.
    stats = caption_cli.main(base + ["--threshold", "1.5"])
    assert _read_jsonl(str(out)) == [] and stats["skipped"] == {"no_segments": 2, "unreadable": 1}
    with pytest.raises(SystemExit):
        caption_cli.main(["long", "--input", str(index), "--out", str(out), "--blip2", blip2_dir])  # no --clip
    with pytest.raises(FileNotFoundError, match="--clip: model folder .* does not exist"):
        caption_cli.main(base + ["--clip", str(tmp_path / "no_clip")])  # last --clip wins
    with pytest.raises(ValueError, match="min_frames"):
        caption_cli.main(base + ["--min-frames", "0"])
    (tmp_path / "no_label.csv").write_text("path,caption\nlong.mp4,a video\n")
    with pytest.raises(ValueError, match="--input: CSV .* needs a header with columns 'path' and 'label'"):
        caption_cli.main(base + ["--input", str(tmp_path / "no_label.csv")])


def test_importing_the_tools_does_not_import_torch():
    code = ("import sys, data_pipelines.caption, data_pipelines.captioning.captioners, "
            "data_pipelines.captioning.segments; "
            "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
