"""CLIP tokenizer: offline build from openai-clip's files equals CLIP's own BPE; SD-2.1 padding; cache; save/load."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vidrd_jax.models import tokenizer as tokenizer_lib
from vidrd_jax.models.tokenizer import load_tokenizer

BOS, EOS = 49406, 49407
PROMPTS = [
    "a photo of a cat",
    "A  Dog running on the BEACH,\n at sunset  ",
    "café “quoted” naïve 🙂 in 2023",  # ftfy uncurls the quotes, as CLIP does
    "don't you're they'll I'm",
    "ein Fahrrad fährt über die Straße; 東京の夜景 -- (8k) [hdr] #cinematic",
]


@pytest.fixture(scope="module")
def reference():
    """openai-clip's SimpleTokenizer, loaded by file path (``import clip`` would import torch)."""
    location = importlib.util.find_spec("clip").submodule_search_locations[0]
    spec = importlib.util.spec_from_file_location("clip_simple_tokenizer_ref",
                                                  os.path.join(location, "simple_tokenizer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer(str(tokenizer_lib.clip_vocab_source()))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clip_cache")


@pytest.fixture(scope="module")
def tok(cache_dir):
    return load_tokenizer(cache_dir=cache_dir)


def _expected(reference, prompt: str, pad_id: int = 0, length: int = 77) -> list[int]:
    ids = [BOS] + reference.encode(prompt)[:length - 2] + [EOS]
    return ids + [pad_id] * (length - len(ids))


def test_vocabulary_equals_clip(tok, reference):
    assert len(tok) == 49408
    assert tok.hf_tokenizer.get_vocab() == reference.encoder
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id, tok.model_max_length) == (BOS, EOS, 0, 77)


def test_encodings_match_clip_bpe(tok, reference):
    ids = tok.encode(PROMPTS)
    assert ids.dtype == np.int32 and ids.shape == (len(PROMPTS), 77)
    for row, prompt in zip(ids, PROMPTS):
        assert row.tolist() == _expected(reference, prompt), prompt
    assert tok.decode(ids[0]) == "a photo of a cat"


def test_empty_prompt_truncation_and_array_input(tok, reference):
    long_prompt = " ".join(f"word{i} scene" for i in range(60))
    ids = tok.encode(np.array(["", long_prompt]))  # data batches carry captions as a str array
    assert ids[0].tolist() == [BOS, EOS] + [0] * 75
    assert len(reference.encode(long_prompt)) > 75
    assert ids[1].tolist() == _expected(reference, long_prompt)
    assert ids[1, -1] == EOS


def test_token_counts_are_untruncated_lengths(tok, reference):
    long_prompt = " ".join(f"word{i} scene" for i in range(60))
    prompts = PROMPTS + ["", long_prompt]
    assert tok.token_counts(prompts) == [len(reference.encode(p)) + 2 for p in prompts]  # + BOS and EOS
    assert tok.token_counts([long_prompt])[0] > tok.model_max_length


def test_sd21_pad_token_and_exclamation_quirk(tok, reference, cache_dir):
    # SD-2.1 pads with "!", a special token in transformers, so "!!" becomes two id-0 tokens.
    (wow,) = reference.encode("wow")
    assert reference.encode("wow!!") == [wow, reference.encoder["!!</w>"]]
    assert tok.encode(["wow!!"])[0, :5].tolist() == [BOS, wow, 0, 0, EOS]
    sd1 = load_tokenizer(cache_dir=cache_dir, pad_token="<|endoftext|>")  # SD-1.x / OpenAI padding
    assert sd1.pad_token_id == EOS
    assert sd1.encode(["wow!!"])[0].tolist() == _expected(reference, "wow!!", pad_id=EOS)


def test_cache_is_built_once(cache_dir, tok, monkeypatch):
    folder = tokenizer_lib.build_clip_vocab_files(cache_dir)
    assert folder.parent == cache_dir and sorted(p.name for p in folder.iterdir()) == ["merges.txt", "vocab.json"]
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}

    def fail(*_):
        raise AssertionError("vocabulary rebuilt although cached")

    monkeypatch.setattr(tokenizer_lib, "convert_clip_vocab", fail)
    again = load_tokenizer(cache_dir=cache_dir)
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()} == before
    np.testing.assert_array_equal(again.encode(PROMPTS), tok.encode(PROMPTS))


def test_default_cache_dir_from_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VIDRD_CACHE", str(tmp_path))
    assert tokenizer_lib.default_cache_dir() == tmp_path / "clip_tokenizer"
    monkeypatch.delenv("VIDRD_CACHE")
    assert tokenizer_lib.default_cache_dir() == Path.home() / ".cache" / "vidrd_jax" / "clip_tokenizer"


def test_save_and_load_round_trip(tok, tmp_path, cache_dir):
    tok.save(tmp_path / "model" / "tokenizer")
    for path in (tmp_path / "model", tmp_path / "model" / "tokenizer"):  # model folder or tokenizer folder
        loaded = load_tokenizer(path)
        assert len(loaded) == 49408 and loaded.pad_token_id == 0 and loaded.model_max_length == 77
        np.testing.assert_array_equal(loaded.encode(PROMPTS + ["wow!!"]), tok.encode(PROMPTS + ["wow!!"]))
    # A folder with only vocab.json + merges.txt (SD-2.1's layout) loads too; padding is then explicit.
    plain = load_tokenizer(tokenizer_lib.build_clip_vocab_files(cache_dir), pad_token="!")
    np.testing.assert_array_equal(plain.encode(PROMPTS), tok.encode(PROMPTS))


def test_missing_or_broken_files_raise(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no tokenizer files in .*empty"):
        load_tokenizer(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_tokenizer(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "vocab.json").write_text("{}")
    (broken / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(ValueError, match="empty"):
        load_tokenizer(broken)


def test_bad_arguments_raise(tok, cache_dir):
    with pytest.raises(TypeError, match="single str"):
        tok.encode("a cat")
    with pytest.raises(ValueError, match="empty list"):
        tok.encode([])
    with pytest.raises(TypeError, match=r"prompts\[1\] must be str"):
        tok.encode(["a cat", 3])
    with pytest.raises(ValueError, match="max_length"):
        load_tokenizer(cache_dir=cache_dir, max_length=1)
    with pytest.raises(ValueError, match="pad_token"):
        load_tokenizer(cache_dir=cache_dir, pad_token="<|pad|>")


def test_build_imports_neither_clip_nor_torch(tmp_path):
    code = ("import sys\nfrom vidrd_jax.models.tokenizer import load_tokenizer\n"
            f"assert load_tokenizer(cache_dir={str(tmp_path)!r}).encode(['a cat']).shape == (1, 77)\n"
            "assert 'clip' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
