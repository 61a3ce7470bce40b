"""CLIP image tower and the two CLIP projections in the transformers ``CLIPModel`` layout, for evaluation metrics.

The vision tower is transformers' ``CLIPVisionModel``: a ``patch_size`` convolution (no bias) turns the image into
patches, a learned class token and position embeddings are added, ``pre_layrnorm`` (sic), N pre-LN blocks (full,
non-causal self-attention) and ``post_layernorm`` on the class token. Its blocks are the text encoder's
(:class:`vidrd_jax.models.text_encoder.CLIPEncoder`; :class:`CLIPVisionConfig` has the fields they read). The text
tower is :class:`vidrd_jax.models.text_encoder.CLIPTextTransformer`, pooled at the first end-of-text token (or at
the largest id when ``eos_token_id == 2``, transformers' legacy rule). ``visual_projection`` and
``text_projection`` (bias-free) map both into the joint embedding space.

Parameter paths mirror ``CLIPModel.state_dict()`` keys (``vision_model/encoder/layers_0/self_attn/q_proj/kernel`` <->
``vision_model.encoder.layers.0.self_attn.q_proj.weight``), so :func:`load_clip` reads a transformers folder of a
``CLIPModel`` (both towers) or a ``CLIPVisionModelWithProjection`` (image tower only), with transformers 4 or 5 keys.

Images: :func:`preprocess_frames` is ``CLIPImageProcessor``: bicubic (PIL) resize of the shorter side to
``shortest_edge``, center crop to ``crop_size``, ``/255``, CLIP mean/std normalisation (the folder's
``preprocessor_config.json`` when present, else OpenAI CLIP's values at the model's ``image_size``).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vidrd_jax.convert import naming
from vidrd_jax.convert.torch_io import load_folder_state_dict, read_json
from vidrd_jax.models.text_encoder import (_DTYPES, CLIPEncoder, CLIPTextConfig, CLIPTextTransformer, _layer_norm,
                                           validate_tower_config)
from vidrd_jax.models.tokenizer import Tokenizer, load_tokenizer


OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CLASS_EMBEDDING = ("vision_model", "embeddings", "class_embedding")
# transformers' CLIPTextConfig defaults (a checkpoint's text_config may omit them); ours are SD-2.1's text encoder's.
TRANSFORMERS_TEXT_DEFAULTS = {"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048,
                              "num_hidden_layers": 12, "num_attention_heads": 8, "max_position_embeddings": 77,
                              "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
# Buffers and the contrastive temperature: in checkpoints, not used to compute embeddings.
_IGNORED_KEYS = ("text_model.embeddings.position_ids", "vision_model.embeddings.position_ids", "logit_scale")


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """Hyper-parameters of the CLIP image tower (names and defaults: ``transformers.CLIPVisionConfig``, ViT-B/32)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat_policy: str = "none"
    attention_impl: str = "auto"  # vidrd_jax.models.layers.ATTENTION_IMPLS

    def __post_init__(self) -> None:
        validate_tower_config(self, ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                     "image_size", "patch_size", "num_channels"))
        if self.image_size % self.patch_size:
            raise ValueError(f"CLIPVisionConfig.image_size ({self.image_size}) must be a multiple of patch_size "
                             f"({self.patch_size})")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @property
    def compute_dtype(self) -> Any:
        return _DTYPES[self.dtype]

    @property
    def weight_dtype(self) -> Any:
        return _DTYPES[self.param_dtype]

    @classmethod
    def from_transformers(cls, config_json: Mapping[str, Any], **overrides: Any) -> "CLIPVisionConfig":
        """From a ``CLIPVisionConfig`` dict (a full ``CLIPConfig``'s ``vision_config`` works too)."""
        if "vision_config" in config_json and "hidden_size" not in config_json:
            config_json = config_json["vision_config"]
        fields = {f.name for f in dataclasses.fields(cls)} - {"dtype", "param_dtype", "remat_policy", "attention_impl"}
        return cls(**{**{name: config_json[name] for name in fields if name in config_json}, **overrides})


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Both towers and the joint space; ``text=None`` for an image-only model (no CLIPSIM)."""

    vision: CLIPVisionConfig
    text: CLIPTextConfig | None = None
    projection_dim: int = 512
    eos_token_id: int = 49407  # text pooling: first position of this id; 2 = transformers' legacy argmax rule

    def __post_init__(self) -> None:
        for name in ("projection_dim", "eos_token_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "projection_dim" else 0):
                raise ValueError(f"CLIPConfig.{name} must be a {'positive' if name == 'projection_dim' else '>= 0'} "
                                 f"int, got {value!r}")

    @classmethod
    def from_transformers(cls, config_json: Mapping[str, Any], **vision_overrides: Any) -> "CLIPConfig":
        """From a ``CLIPModel`` (``text_config`` + ``vision_config``) or ``CLIPVisionModelWithProjection`` config."""
        if not isinstance(config_json, Mapping):
            raise TypeError(f"config_json must be a dict, got {type(config_json).__name__}")
        vision = CLIPVisionConfig.from_transformers(config_json, **vision_overrides)
        text_json = config_json.get("text_config")
        text = None if text_json is None else CLIPTextConfig.from_transformers({**TRANSFORMERS_TEXT_DEFAULTS,
                                                                                **text_json})
        projection_dim = config_json.get("projection_dim")
        if projection_dim is None:
            projection_dim = config_json.get("vision_config", {}).get("projection_dim", 512)
        eos = (text_json or {}).get("eos_token_id", 49407)
        return cls(vision=vision, text=text, projection_dim=projection_dim, eos_token_id=eos)


def _projection(features: int, dtype: Any, param_dtype: Any) -> nn.Dense:
    return nn.Dense(features, use_bias=False, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=nn.initializers.normal(features ** -0.5))


class CLIPVisionEmbeddings(nn.Module):
    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        cfg = self.config
        kwargs = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
        patches = nn.Conv(cfg.hidden_size, (cfg.patch_size, cfg.patch_size), strides=cfg.patch_size, padding="VALID",
                          use_bias=False, name="patch_embedding", **kwargs)(pixel_values)
        b = patches.shape[0]
        patches = patches.reshape(b, -1, cfg.hidden_size)
        cls = self.param("class_embedding", nn.initializers.normal(cfg.hidden_size ** -0.5), (cfg.hidden_size,),
                         cfg.weight_dtype)
        x = jnp.concatenate([jnp.broadcast_to(cls.astype(patches.dtype), (b, 1, cfg.hidden_size)), patches], axis=1)
        position = nn.Embed(cfg.num_positions, cfg.hidden_size, name="position_embedding", **kwargs,
                            embedding_init=nn.initializers.normal(0.02))
        return x + position(jnp.arange(cfg.num_positions)[None, :])


class CLIPVisionTransformer(nn.Module):
    """``pixel_values [B, S, S, C]`` -> pooled class-token features ``[B, hidden_size]`` (after ``post_layernorm``)."""

    config: CLIPVisionConfig

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        cfg = self.config
        x = CLIPVisionEmbeddings(cfg, name="embeddings")(pixel_values)
        x = _layer_norm(cfg, "pre_layrnorm")(x)  # transformers' spelling
        full = jnp.ones((1, 1, x.shape[1], x.shape[1]), bool)  # image tokens attend to each other without a mask
        x = CLIPEncoder(cfg, name="encoder")(x, full)
        return _layer_norm(cfg, "post_layernorm")(x[:, 0])


class CLIPModel(nn.Module):
    """The CLIP towers with their projections; ``image_features`` / ``text_features`` are the unnormalised embeds.

    ``apply({"params": p}, pixel_values, method="image_features") -> [B, projection_dim]`` (pixels preprocessed by
    :func:`preprocess_frames`, channels-last); ``apply(..., input_ids, method="text_features")`` likewise.
    """

    config: CLIPConfig

    def setup(self) -> None:
        cfg = self.config
        vis = cfg.vision
        self.vision_model = CLIPVisionTransformer(vis)
        self.visual_projection = _projection(cfg.projection_dim, vis.compute_dtype, vis.weight_dtype)
        if cfg.text is not None:
            self.text_model = CLIPTextTransformer(cfg.text)
            self.text_projection = _projection(cfg.projection_dim, cfg.text.compute_dtype, cfg.text.weight_dtype)

    def image_features(self, pixel_values: jax.Array) -> jax.Array:
        size = self.config.vision.image_size
        if pixel_values.ndim != 4 or pixel_values.shape[1:] != (size, size, self.config.vision.num_channels):
            raise ValueError(f"pixel_values must be [B, {size}, {size}, {self.config.vision.num_channels}], got "
                             f"{tuple(pixel_values.shape)}")
        return self.visual_projection(self.vision_model(pixel_values)).astype(jnp.float32)

    def text_features(self, input_ids: jax.Array) -> jax.Array:
        if self.config.text is None:
            raise ValueError("this CLIP model has no text tower (an image-only checkpoint)")
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"input_ids must be an integer array [batch, length], got {input_ids.dtype} "
                             f"{tuple(input_ids.shape)}")
        hidden = self.text_model(input_ids)
        if self.config.eos_token_id == 2:
            position = jnp.argmax(input_ids, axis=-1)
        else:
            position = jnp.argmax(input_ids == self.config.eos_token_id, axis=-1)
        pooled = jnp.take_along_axis(hidden, position[:, None, None], axis=1)[:, 0]
        return self.text_projection(pooled).astype(jnp.float32)

    def __call__(self, pixel_values: jax.Array, input_ids: jax.Array | None = None) -> tuple[jax.Array, ...]:
        """Both features (used to create parameters)."""
        image = self.image_features(pixel_values)
        return (image,) if input_ids is None else (image, self.text_features(input_ids))


def abstract_params(config: CLIPConfig) -> dict[str, Any]:
    """Shapes and dtypes of :class:`CLIPModel`'s parameters (``jax.eval_shape``: nothing runs)."""
    size = config.vision.image_size
    pixels = jnp.zeros((1, size, size, config.vision.num_channels), jnp.float32)
    ids = None if config.text is None else jnp.zeros((1, config.text.max_position_embeddings), jnp.int32)
    shapes = jax.eval_shape(CLIPModel(config).init, jax.random.key(0), pixels, ids)
    return nn.meta.unbox(shapes["params"])


def convert_clip_state(state: Mapping[str, Any], config: CLIPConfig, what: str = "CLIP") -> dict[str, Any]:
    """transformers ``CLIPModel`` / ``CLIPVisionModelWithProjection`` numpy state dict -> :class:`CLIPModel` params.

    transformers 5 saves a bare ``CLIPVisionModel`` without the ``vision_model.`` level; such keys are accepted. A
    CLIPModel checkpoint loaded as image-only (``config.text=None``) drops its text tensors.
    """
    state = dict(state)
    if "embeddings.patch_embedding.weight" in state:
        state = {f"vision_model.{k}" if k.split(".")[0] in ("embeddings", "encoder", "pre_layrnorm",
                                                           "post_layernorm") else k: v for k, v in state.items()}
    cls_key = ".".join(CLASS_EMBEDDING)
    if cls_key not in state:
        raise naming.ConversionError(f"cannot convert {what}: missing {cls_key} (is this a CLIP vision checkpoint?)")
    target = naming.flatten_params(abstract_params(config))
    cls_target = target.pop(CLASS_EMBEDDING)
    text_keys = ("text_model.", "text_projection.")

    def ignored(key: str) -> bool:
        return key in _IGNORED_KEYS or key == cls_key or (config.text is None and key.startswith(text_keys))

    params, _ = naming.state_dict_to_params(state, naming.unflatten_params(target), ignore_unexpected=ignored,
                                            what=what)
    cls = np.asarray(state[cls_key])
    if cls.shape != tuple(cls_target.shape):
        raise naming.ConversionError(f"cannot convert {what}: {cls_key} has shape {cls.shape}, model "
                                     f"{tuple(cls_target.shape)}")
    flat = naming.flatten_params(params)
    flat[CLASS_EMBEDDING] = cls.astype(cls_target.dtype)
    return naming.unflatten_params(flat)


@dataclasses.dataclass(frozen=True)
class ClipPreprocess:
    """``CLIPImageProcessor`` settings: shorter side -> ``shortest_edge`` (bicubic), center crop, mean/std."""

    shortest_edge: int = 224
    crop_size: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD

    @classmethod
    def for_folder(cls, folder: str, image_size: int) -> "ClipPreprocess":
        """The folder's ``preprocessor_config.json`` if any, else OpenAI CLIP's statistics at ``image_size``."""
        path = os.path.join(folder, "preprocessor_config.json")
        if not os.path.isfile(path):
            return cls(image_size, image_size)
        cfg = read_json(path)
        size, crop = cfg.get("size", image_size), cfg.get("crop_size", image_size)
        size = size.get("shortest_edge", image_size) if isinstance(size, Mapping) else size
        crop = crop.get("height", image_size) if isinstance(crop, Mapping) else crop
        if crop != image_size:
            raise ValueError(f"{path}: crop_size {crop} differs from the model's image_size {image_size}")
        return cls(int(size), int(crop), tuple(cfg.get("image_mean", OPENAI_CLIP_MEAN)),
                   tuple(cfg.get("image_std", OPENAI_CLIP_STD)))


def preprocess_frames(frames: np.ndarray, preprocess: ClipPreprocess) -> np.ndarray:
    """uint8 RGB ``[N, H, W, 3]`` -> float32 ``[N, crop, crop, 3]`` CLIP pixel values (as ``CLIPImageProcessor``)."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    n, h, w, _ = frames.shape
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = preprocess.shortest_edge, int(preprocess.shortest_edge * long / short)
    new_h, new_w = (new_short, new_long) if h <= w else (new_long, new_short)
    crop = preprocess.crop_size
    if new_h < crop or new_w < crop:
        raise ValueError(f"resized frames {new_h}x{new_w} are smaller than the crop {crop}")
    top, left = (new_h - crop) // 2, (new_w - crop) // 2
    out = np.empty((n, crop, crop, 3), np.float32)
    for i, frame in enumerate(frames):
        resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BICUBIC))
        out[i] = resized[top:top + crop, left:left + crop]
    out *= np.float32(1 / 255)
    return (out - np.asarray(preprocess.mean, np.float32)) / np.asarray(preprocess.std, np.float32)


def load_clip(folder: str) -> tuple[CLIPConfig, dict[str, Any], Tokenizer | None, ClipPreprocess]:
    """(config, params, tokenizer or None for an image-only model, preprocessing) of a transformers CLIP folder."""
    config = CLIPConfig.from_transformers(read_json(os.path.join(folder, "config.json")))
    params = convert_clip_state(load_folder_state_dict(folder), config, what=f"CLIP {folder}")
    tokenizer = None
    if config.text is not None:
        try:
            tokenizer = load_tokenizer(folder, max_length=config.text.max_position_embeddings)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"CLIP folder {folder} has a text tower but no tokenizer: {e}") from None
    return config, params, tokenizer, ClipPreprocess.for_folder(folder, config.vision.image_size)
