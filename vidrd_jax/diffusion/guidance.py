"""Classifier-free guidance with a negative prompt (paper 002 §5.3), and the validators of the prompt fields.

``eps = eps(z, c_neg) + w · (eps(z, c) - eps(z, c_neg))``; the unconditional branch uses the negative prompt's
embedding (the empty prompt gives plain classifier-free guidance). Both halves run in ONE batched model call
(``[negative; text]`` concatenated on the batch axis, diffusers' order); ``w = 1`` runs the conditional half only.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

ModelFn = Callable[..., jax.Array]


def normalize_prompts(prompts: str | Sequence[str]) -> tuple[str, ...]:
    """A prompt or a sequence of prompts -> a non-empty tuple of str (error names ``prompts``)."""
    prompts = (prompts,) if isinstance(prompts, str) else tuple(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a non-empty list of strings, got {prompts!r}")
    return prompts


def check_guidance_scale(guidance_scale: Any) -> None:
    """Raises unless ``guidance_scale`` is a finite number >= 0."""
    if not isinstance(guidance_scale, (int, float)) or not 0.0 <= guidance_scale < math.inf:
        raise ValueError(f"guidance_scale must be a finite float >= 0, got {guidance_scale!r}")


def check_guidance_fields(guidance_scale: Any, negative_prompt: Any) -> None:
    """Validates the classifier-free guidance fields shared by the sampler configs."""
    check_guidance_scale(guidance_scale)
    if not isinstance(negative_prompt, str):
        raise ValueError(f"negative_prompt must be a string, got {negative_prompt!r}")


@dataclasses.dataclass(frozen=True)
class ClassifierFreeGuidance:
    """Wraps ``model_fn(z, t, text_emb, **extra)`` into a denoiser ``eps_fn(z, t, cond)``.

    ``cond`` is ``{"text": [B, L, D], "negative": [B or 1, L, D], **extra}``: every other entry (e.g. ``params``) is
    passed to ``model_fn`` as a keyword argument, so model weights travel as jit arguments, not baked-in constants.
    ``t`` is the int32 scalar timestep; ``model_fn`` broadcasts it over the batch. Frozen and hashable: two wrappers
    of the same ``model_fn`` and scale are equal, so jitted samplers (``eps_fn`` static) reuse their compilation.
    """

    model_fn: ModelFn
    guidance_scale: float

    def __post_init__(self) -> None:
        check_guidance_scale(self.guidance_scale)

    def __call__(self, z: jax.Array, t: jax.Array, cond: Mapping[str, Any]) -> jax.Array:
        for name in ("text", "negative"):
            if name not in cond:
                raise ValueError(f"guidance cond needs a {name!r} entry, got keys {sorted(cond)}")
        text = cond["text"]
        extra = {k: v for k, v in cond.items() if k not in ("text", "negative")}
        if self.guidance_scale == 1.0:
            return self.model_fn(z, t, text, **extra)
        negative = jnp.broadcast_to(cond["negative"], text.shape).astype(text.dtype)
        both = self.model_fn(jnp.concatenate([z, z], axis=0), t, jnp.concatenate([negative, text], axis=0), **extra)
        uncond, conditional = jnp.split(both, 2, axis=0)
        return uncond + self.guidance_scale * (conditional - uncond)
