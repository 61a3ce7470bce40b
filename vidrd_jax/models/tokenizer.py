"""CLIP BPE tokenizer for SD-2.1 prompts: ``load_tokenizer(path | None).encode(prompts) -> int32 [B, 77]``.

``path=None`` builds the real CLIP tokenizer offline: the 49,408-token vocabulary and BPE merges are converted
from ``bpe_simple_vocab_16e6.txt.gz`` shipped in the ``openai-clip`` package (read as a file; ``clip`` itself
is never imported, it imports torch) exactly as CLIP's ``SimpleTokenizer`` does, cached as ``vocab.json`` +
``merges.txt`` and loaded with ``transformers.CLIPTokenizer``. With a path, the tokenizer of a model folder
(``<path>/tokenizer/`` or ``<path>`` itself) is loaded.

Text is cleaned with ``ftfy.fix_text`` first, as the transformers-4.30 ``CLIPTokenizer`` that SD-2.1 and VidRD
used did. SD-2.1 pads with ``"!"`` (id 0), which transformers treats as a special token: a run of ``!`` in a
prompt becomes one id-0 token per character, again as in SD-2.1.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

import ftfy
import numpy as np

CLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
CLIP_VOCAB_SIZE = 49408
NUM_MERGES = 49152 - 256 - 2  # CLIP's SimpleTokenizer keeps the first 48,894 merges
SD21_PAD_TOKEN = "!"
DEFAULT_MAX_LENGTH = 77
BOS, EOS = "<|startoftext|>", "<|endoftext|>"


class Tokenizer:
    """Wraps a transformers CLIP tokenizer with SD's fixed-length batch encoding."""

    def __init__(self, hf_tokenizer: Any, source: str):
        if len(hf_tokenizer) <= 2:
            raise ValueError(f"tokenizer from {source} is empty ({len(hf_tokenizer)} tokens): vocabulary files "
                             "missing or unreadable")
        self.hf_tokenizer = hf_tokenizer
        self.source = source

    def __len__(self) -> int:
        return len(self.hf_tokenizer)

    @property
    def model_max_length(self) -> int:
        return int(self.hf_tokenizer.model_max_length)

    @property
    def pad_token_id(self) -> int:
        return int(self.hf_tokenizer.pad_token_id)

    @property
    def bos_token_id(self) -> int:
        return int(self.hf_tokenizer.bos_token_id)

    @property
    def eos_token_id(self) -> int:
        return int(self.hf_tokenizer.eos_token_id)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """``[BOS] tokens [EOS] pad…`` truncated/padded to ``model_max_length``; returns ``np.int32 [B, L]``.

        ``""`` is a valid prompt (the unconditional embedding for classifier-free guidance).
        """
        if isinstance(prompts, (str, bytes)):
            raise TypeError("prompts must be a list of str, got a single str; wrap it in a list")
        if isinstance(prompts, np.ndarray):
            prompts = prompts.tolist()
        prompts = list(prompts)
        if not prompts:
            raise ValueError("prompts must contain at least one prompt, got an empty list")
        for i, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise TypeError(f"prompts[{i}] must be str, got {type(prompt).__name__}: {prompt!r}")
        batch = self.hf_tokenizer(
            [ftfy.fix_text(p) for p in prompts], padding="max_length", max_length=self.model_max_length,
            truncation=True, return_tensors="np")
        return np.asarray(batch["input_ids"], dtype=np.int32)

    def token_counts(self, prompts: Sequence[str]) -> list[int]:
        """Untruncated length of each prompt's ids (BOS and EOS included); above ``model_max_length`` it is cut."""
        ids = self.hf_tokenizer([ftfy.fix_text(p) for p in prompts], truncation=False, verbose=False)["input_ids"]
        return [len(x) for x in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one id sequence, without special tokens."""
        return self.hf_tokenizer.decode(list(map(int, ids)), skip_special_tokens=True)

    def save(self, directory: str | os.PathLike) -> None:
        """Writes transformers tokenizer files; ``load_tokenizer(directory)`` reads them back."""
        self.hf_tokenizer.save_pretrained(str(directory))


def load_tokenizer(path: str | os.PathLike | None = None, *, pad_token: str | None = None,
                   max_length: int = DEFAULT_MAX_LENGTH, cache_dir: str | os.PathLike | None = None) -> Tokenizer:
    """Loads a CLIP tokenizer.

    Args:
      path: model folder (with ``tokenizer/``) or tokenizer folder; ``None`` builds CLIP's BPE offline.
      pad_token: padding token; default ``"!"`` (SD-2.1) when building, the folder's own when loading a path.
      max_length: fixed encoded length (77 for CLIP).
      cache_dir: where the converted vocabulary is kept when building (default ``$VIDRD_CACHE/clip_tokenizer``,
        else ``~/.cache/vidrd_jax/clip_tokenizer``).
    """
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 (BOS + EOS), got {max_length!r}")
    if pad_token is not None and (not isinstance(pad_token, str) or not pad_token):
        raise ValueError(f"pad_token must be a non-empty str, got {pad_token!r}")
    if path is None:
        folder = build_clip_vocab_files(cache_dir)
        pad_token = SD21_PAD_TOKEN if pad_token is None else pad_token
    else:
        folder = _tokenizer_folder(Path(path))
    tokenizer = Tokenizer(_load_hf(folder, pad_token, max_length), source=str(folder))
    if pad_token is not None and tokenizer.pad_token_id >= tokenizer.hf_tokenizer.vocab_size:
        raise ValueError(f"pad_token {pad_token!r} is not in the vocabulary of {folder}")
    if len(tokenizer) != CLIP_VOCAB_SIZE and path is None:
        raise ValueError(f"built CLIP tokenizer has {len(tokenizer)} tokens, expected {CLIP_VOCAB_SIZE}")
    return tokenizer


def _load_hf(folder: Path, pad_token: str | None, max_length: int) -> Any:
    from transformers import CLIPTokenizer  # deferred: transformers is slow to import

    kwargs: dict[str, Any] = {"model_max_length": max_length}
    if pad_token is not None:
        kwargs["pad_token"] = pad_token
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)


def _tokenizer_folder(path: Path) -> Path:
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer path {path} is not a directory")
    for folder in (path / "tokenizer", path):
        if (folder / "tokenizer.json").is_file() or all((folder / f).is_file() for f in ("vocab.json", "merges.txt")):
            return folder
    raise FileNotFoundError(f"no tokenizer files in {path} or {path / 'tokenizer'}: expected tokenizer.json or "
                            "vocab.json + merges.txt")


def clip_vocab_source() -> Path:
    """Path of CLIP's BPE vocabulary inside the installed ``openai-clip`` package (without importing it)."""
    spec = importlib.util.find_spec("clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'openai-clip' is not installed: it provides the CLIP BPE vocabulary "
                                "needed by load_tokenizer(None); pip install openai-clip==1.0.1")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / CLIP_VOCAB_FILE
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{CLIP_VOCAB_FILE} not found in {list(spec.submodule_search_locations)}")


def default_cache_dir() -> Path:
    root = os.environ.get("VIDRD_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "vidrd_jax"
    return base / "clip_tokenizer"


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character map (256 entries)."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def convert_clip_vocab(source: Path) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary and merges from ``bpe_simple_vocab_16e6.txt.gz`` (as ``SimpleTokenizer.__init__``)."""
    lines = gzip.open(source).read().decode("utf-8").split("\n")
    merges = lines[1:NUM_MERGES + 1]  # line 0 is a header
    if len(merges) != NUM_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"{source} is not a CLIP BPE merges file (expected {NUM_MERGES} 'a b' lines after the header)")
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != CLIP_VOCAB_SIZE:
        raise ValueError(f"{source} gives {len(vocab)} distinct tokens, expected {CLIP_VOCAB_SIZE}")
    return vocab, merges


def build_clip_vocab_files(cache_dir: str | os.PathLike | None = None) -> Path:
    """Converts openai-clip's vocabulary to ``vocab.json`` + ``merges.txt`` once; returns their folder.

    The folder is keyed by the source file's SHA-256, and each file is written atomically (temp file + rename), so
    concurrent builders and interrupted writes never leave a partial cache behind.
    """
    source = clip_vocab_source()
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / digest
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    if vocab_path.is_file() and merges_path.is_file():
        return folder
    vocab, merges = convert_clip_vocab(source)
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(merges_path, "#version: 0.2\n" + "\n".join(merges) + "\n")
    _write_atomic(vocab_path, json.dumps(vocab, ensure_ascii=False))  # written last: marks the cache complete
    return folder


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; the cache may be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
