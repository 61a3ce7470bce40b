"""Label-conditioned frame captioning for action-recognition videos (paper §4.2, Figure 4, green modules).

A short classification video (Kinetics-700, Moments-in-Time) is one scene, so the caption of one randomly chosen
frame serves for the whole video: the frame is shown to a vision-language model (BLIP-2) together with a prompt
that carries the class label, the prompt being drawn at random from a few templates for diversity.

torch / transformers are imported lazily (inside the functions that need them): they are the ``caption`` extra,
and ``import data_pipelines`` must stay torch-free.
"""
from __future__ import annotations

import os
from typing import Any, Protocol, Sequence

import numpy as np

# Query templates; ``{label}`` is the human-readable class label. One is drawn per video (per segment for long
# videos). They follow the "Question: ... Answer:" prompt format BLIP-2 uses for zero-shot VQA.
PROMPT_TEMPLATES: tuple[str, ...] = (
    "Question: what is happening in this picture of {label}? Answer:",
    "Question: describe this photo showing {label}. Answer:",
    "Question: this image shows {label}. What exactly is going on? Answer:",
    "Question: what does this picture about {label} show in detail? Answer:",
    "Question: write a short caption for this picture of {label}. Answer:",
    "Question: who is doing what in this scene of {label}? Answer:",
)

TORCH_DTYPES = ("float32", "float16", "bfloat16")


class Captioner(Protocol):
    """A vision-language model answering one text prompt per image."""

    def caption(self, images: list[np.ndarray], prompts: list[str]) -> list[str]:
        """``images[i]`` (uint8 ``[H, W, 3]`` RGB) is queried with ``prompts[i]``; returns one string per image."""
        ...


def label_text(label: str) -> str:
    """Human-readable class label: ``"playing_guitar"`` -> ``"playing guitar"``."""
    return " ".join(str(label).replace("_", " ").split())


def validate_templates(templates: Sequence[str]) -> tuple[str, ...]:
    """Every template must contain ``{label}`` and nothing else to format; returns them as a tuple."""
    templates = tuple(templates)
    if not templates:
        raise ValueError("templates: need at least one prompt template")
    for t in templates:
        try:
            t.format(label="x")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"templates: {t!r} may only contain the field '{{label}}' ({e})") from None
        if "{label}" not in t:
            raise ValueError(f"templates: {t!r} does not contain '{{label}}'")
    return templates


def choose_template(rng: np.random.Generator, templates: Sequence[str] = PROMPT_TEMPLATES) -> str:
    """One template drawn uniformly with ``rng`` (the paper draws one per query)."""
    return templates[int(rng.integers(len(templates)))]


def format_prompt(template: str, label: str) -> str:
    return template.format(label=label_text(label))


def video_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of input row ``index``: choices do not depend on batching or on skipped rows."""
    return np.random.default_rng([int(seed), int(index)])


def check_model_folder(folder: str | os.PathLike, argument: str) -> str:
    """A local Hugging Face model folder (``config.json`` inside) or a clear error naming ``argument``."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{argument}: model folder {folder!r} does not exist "
                                "(models load from local folders only)")
    if not os.listdir(folder):
        raise FileNotFoundError(f"{argument}: model folder {folder!r} is empty; "
                                "save_pretrained() a model into it first")
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise FileNotFoundError(f"{argument}: model folder {folder!r} has no config.json; "
                                "not a save_pretrained() folder")
    return folder


def load_local(loader: Any, folder: str, argument: str, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(folder, local_files_only=True)``; missing files become an error naming ``argument``."""
    try:
        return loader.from_pretrained(folder, local_files_only=True, **kwargs)
    except OSError as e:
        raise FileNotFoundError(f"{argument}: cannot load the {what} from {folder!r}; is it a complete "
                                f"save_pretrained() folder? ({e})") from e


def check_tokenizer(tokenizer: Any, folder: str, argument: str) -> None:
    # transformers 5 builds an empty tokenizer instead of raising when the vocabulary files are missing.
    if tokenizer is None or len(tokenizer) <= 2:
        raise FileNotFoundError(f"{argument}: no usable tokenizer files in {folder!r} (vocabulary has <= 2 entries)")


def torch_dtype(name: str) -> Any:
    import torch

    if name not in TORCH_DTYPES:
        raise ValueError(f"dtype: {name!r} is not one of {TORCH_DTYPES}")
    return getattr(torch, name)


def _clean(text: str) -> str:
    return " ".join(text.split())


class Blip2Captioner:
    """BLIP-2 (``Blip2ForConditionalGeneration``) answering ``prompt`` about each image, greedy decoding."""

    def __init__(self, model: Any, processor: Any, device: str = "cpu", max_new_tokens: int = 30, batch_size: int = 8):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: must be >= 1, got {max_new_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {batch_size}")
        self.model = model
        self.processor = processor
        self.device = device
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)
        # Decoder-only LMs (OPT) are padded on the left so every prompt ends where generation starts.
        self.processor.tokenizer.padding_side = "left"

    @classmethod
    def from_pretrained(
        cls,
        folder: str | os.PathLike,
        device: str = "cpu",
        dtype: str = "float32",
        max_new_tokens: int = 30,
        batch_size: int = 8,
    ) -> "Blip2Captioner":
        """Loads model + processor from a local ``save_pretrained`` folder (never the hub)."""
        from transformers import Blip2ForConditionalGeneration, Blip2Processor

        folder = check_model_folder(folder, "blip2")
        processor = load_local(Blip2Processor, folder, "blip2", "processor (image processor + tokenizer)")
        check_tokenizer(processor.tokenizer, folder, "blip2")
        model = load_local(Blip2ForConditionalGeneration, folder, "blip2", "model", dtype=torch_dtype(dtype))
        model.to(device).eval()
        # Folders saved before the processor knew about image tokens: expand the image placeholder ourselves.
        if processor.num_query_tokens is None:
            processor.num_query_tokens = model.config.num_query_tokens
        if model.config.image_token_index is None:
            image_id = processor.tokenizer.convert_tokens_to_ids(str(processor.image_token))
            if image_id is None or image_id >= model.get_input_embeddings().num_embeddings:
                raise ValueError(f"blip2: {folder!r} has no image token in config.json (image_token_index) and the "
                                 "tokenizer's '<image>' id does not fit the language model's vocabulary")
            model.config.image_token_index = image_id
        return cls(model, processor, device=device, max_new_tokens=max_new_tokens, batch_size=batch_size)

    def caption(self, images: list[np.ndarray], prompts: list[str]) -> list[str]:
        if len(images) != len(prompts):
            raise ValueError(f"images/prompts: {len(images)} images but {len(prompts)} prompts")
        out: list[str] = []
        for i in range(0, len(images), self.batch_size):
            out.extend(self._generate(images[i:i + self.batch_size], prompts[i:i + self.batch_size]))
        return out

    def _generate(self, images: list[np.ndarray], prompts: list[str]) -> list[str]:
        import torch

        for img in images:
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[-1] != 3:
                raise ValueError(f"images: expected uint8 [H, W, 3], got {img.dtype} {img.shape}")
        inputs = self.processor(images=list(images), text=list(prompts), return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            ids = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if self.model.config.use_decoder_only_language_model:  # OPT echoes the prompt; T5 does not
            ids = ids[:, inputs["input_ids"].shape[1]:]
        return [_clean(t) for t in self.processor.batch_decode(ids, skip_special_tokens=True)]


def pick_frame_and_template(
    num_frames: int, rng: np.random.Generator, templates: Sequence[str] = PROMPT_TEMPLATES
) -> tuple[int, str]:
    """The random frame (uniform over ``[0, num_frames)``) and template of one short video, in that draw order."""
    if num_frames < 1:
        raise ValueError(f"num_frames: video has no frames ({num_frames})")
    return int(rng.integers(num_frames)), choose_template(rng, templates)
