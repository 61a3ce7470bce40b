"""CLIP text tower (SD-2.1's OpenCLIP ViT-H text encoder) in the transformers ``CLIPTextModel`` layout.

VidRD encodes a caption into the conditioning ``c`` of eq. 3 with Stable Diffusion 2.1's text encoder and keeps
it frozen (paper §3.2 and §4.1). The prompt embedding is ``last_hidden_state`` after ``final_layer_norm``,
shape ``[B, 77, 1024]``. Parameter paths mirror transformers' attribute names, so
``naming.params_to_state_dict`` yields exactly ``CLIPTextModel.state_dict()`` keys
(``text_model.encoder.layers.3.self_attn.q_proj.weight`` <-> ``text_model/encoder/layers_3/self_attn/q_proj/kernel``).

Architecture: token + learned position embeddings -> N pre-LN blocks (causal multi-head self-attention, MLP with
``hidden_act``) -> final LayerNorm. An optional ``attention_mask`` ``[B, L]`` (1 = token, 0 = padding) is combined
with the causal mask, as in transformers; SD does not pass one.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrd_jax.models.layers import ATTENTION_IMPLS, dot_product_attention

_log = logging.getLogger(__name__)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # exact erf GELU (SD-2.1 / OpenCLIP)
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI CLIP (SD-1.x)
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
}
# "none": no rematerialisation; "full": recompute everything in the backward pass; else a jax.checkpoint_policies name.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,
    "full": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "everything_saveable": jax.checkpoint_policies.everything_saveable,
}
ACTIVATION_AXES = ("batch", "length", "embed")


def validate_tower_config(config: Any, positive_ints: Sequence[str]) -> None:
    """Checks the fields a CLIP tower config shares (text and image): ``positive_ints``, heads dividing the width,
    activation, LayerNorm eps, dtypes, remat policy and attention implementation; errors name ``ClassName.field``."""
    name = type(config).__name__
    for field in positive_ints:
        value = getattr(config, field)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}.{field} must be a positive int, got {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"{name}.hidden_size ({config.hidden_size}) must be divisible by "
                         f"num_attention_heads ({config.num_attention_heads})")
    if config.hidden_act not in ACTIVATIONS:
        raise ValueError(f"{name}.hidden_act must be one of {sorted(ACTIVATIONS)}, got {config.hidden_act!r}")
    if not isinstance(config.layer_norm_eps, (int, float)) or not 0 < config.layer_norm_eps < 1:
        raise ValueError(f"{name}.layer_norm_eps must be in (0, 1), got {config.layer_norm_eps!r}")
    for field in ("dtype", "param_dtype"):
        if getattr(config, field) not in _DTYPES:
            raise ValueError(f"{name}.{field} must be one of {sorted(_DTYPES)}, got {getattr(config, field)!r}")
    if config.remat_policy not in REMAT_POLICIES:
        raise ValueError(f"{name}.remat_policy must be one of {sorted(REMAT_POLICIES)}, got {config.remat_policy!r}")
    if config.attention_impl not in ATTENTION_IMPLS:
        raise ValueError(f"{name}.attention_impl must be one of {ATTENTION_IMPLS}, got {config.attention_impl!r}")


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Hyper-parameters of the CLIP text tower (names follow ``transformers.CLIPTextConfig``)."""

    vocab_size: int = 49408
    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 23
    num_attention_heads: int = 16
    max_position_embeddings: int = 77
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    dtype: str = "float32"  # computation dtype
    param_dtype: str = "float32"
    remat_policy: str = "none"
    attention_impl: str = "auto"  # vidrd_jax.models.layers.ATTENTION_IMPLS

    def __post_init__(self) -> None:
        validate_tower_config(self, ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                     "num_attention_heads", "max_position_embeddings"))

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def compute_dtype(self) -> Any:
        return _DTYPES[self.dtype]

    @property
    def weight_dtype(self) -> Any:
        return _DTYPES[self.param_dtype]

    @classmethod
    def sd21(cls, **overrides: Any) -> "CLIPTextConfig":
        """SD-2.1 (OpenCLIP ViT-H/14 text tower): 1024 wide, 23 layers, 16 heads, exact GELU; 340,387,840 params."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides: Any) -> "CLIPTextConfig":
        """Test-size tower that keeps the real 49,408-token vocabulary and 77 positions (works with the tokenizer)."""
        kwargs = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
        return cls(**{**kwargs, **overrides})

    @classmethod
    def from_transformers(cls, config_json: Mapping[str, Any], **overrides: Any) -> "CLIPTextConfig":
        """From a transformers ``text_encoder/config.json`` dict (a full ``CLIPConfig``'s ``text_config`` works too)."""
        if not isinstance(config_json, Mapping):
            raise TypeError(f"config_json must be a dict, got {type(config_json).__name__}")
        if "text_config" in config_json and "hidden_size" not in config_json:
            config_json = config_json["text_config"]
        for name in ("attention_dropout", "dropout"):
            if config_json.get(name):
                _log.warning("CLIPTextConfig.from_transformers: %s=%s is ignored (the text encoder runs without "
                             "dropout)", name, config_json[name])
        fields = {f.name for f in dataclasses.fields(cls)} - {"dtype", "param_dtype", "remat_policy", "attention_impl"}
        kwargs = {name: config_json[name] for name in fields if name in config_json}
        return cls(**{**kwargs, **overrides})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> "CLIPTextConfig":
        unknown = sorted(set(config) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"CLIPTextConfig.from_dict: unknown fields {unknown}")
        return cls(**config)


def _dense(cfg: CLIPTextConfig, features: int, axes: tuple[str, str], std: float, name: str) -> nn.Dense:
    return nn.Dense(
        features, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, name=name,
        kernel_init=nn.with_logical_partitioning(nn.initializers.normal(std), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axes[1],)))


def _layer_norm(cfg: CLIPTextConfig, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype, use_fast_variance=False,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("norm",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",)), name=name)


class CLIPAttention(nn.Module):
    """Multi-head self-attention (``config.attention_impl``); logits and softmax in float32 (as transformers)."""

    config: CLIPTextConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        cfg = self.config
        b, length, width = x.shape
        in_std = width ** -0.5 * (2 * cfg.num_hidden_layers) ** -0.5
        shape = (b, length, cfg.num_attention_heads, cfg.head_dim)
        q = _dense(cfg, width, ("embed", "heads"), in_std, "q_proj")(x).reshape(shape)
        k = _dense(cfg, width, ("embed", "heads"), in_std, "k_proj")(x).reshape(shape)
        v = _dense(cfg, width, ("embed", "heads"), in_std, "v_proj")(x).reshape(shape)
        out = dot_product_attention(q, k, v, cfg.attention_impl, mask=mask).reshape(b, length, width)
        return _dense(cfg, width, ("heads", "embed"), width ** -0.5, "out_proj")(out)


class CLIPMLP(nn.Module):
    config: CLIPTextConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        fc2_std = cfg.hidden_size ** -0.5 * (2 * cfg.num_hidden_layers) ** -0.5
        h = _dense(cfg, cfg.intermediate_size, ("embed", "mlp"), (2 * cfg.hidden_size) ** -0.5, "fc1")(x)
        h = ACTIVATIONS[cfg.hidden_act](h)
        return _dense(cfg, cfg.hidden_size, ("mlp", "embed"), fc2_std, "fc2")(h)


class CLIPEncoderLayer(nn.Module):
    """Pre-LN block: ``x + attn(ln1(x))`` then ``x + mlp(ln2(x))``."""

    config: CLIPTextConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        x = x + CLIPAttention(self.config, name="self_attn")(_layer_norm(self.config, "layer_norm1")(x), mask)
        x = x + CLIPMLP(self.config, name="mlp")(_layer_norm(self.config, "layer_norm2")(x))
        return nn.with_logical_constraint(x, ACTIVATION_AXES)


class CLIPTextEmbeddings(nn.Module):
    config: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        cfg = self.config
        kwargs = dict(dtype=cfg.compute_dtype, param_dtype=cfg.weight_dtype)
        token = nn.Embed(cfg.vocab_size, cfg.hidden_size, name="token_embedding", **kwargs,
                         embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), ("vocab", "embed")))
        # 77 rows: never sharded along the sequence.
        position = nn.Embed(cfg.max_position_embeddings, cfg.hidden_size, name="position_embedding", **kwargs,
                            embedding_init=nn.with_logical_partitioning(nn.initializers.normal(0.02), (None, "embed")))
        positions = jnp.arange(input_ids.shape[1])[None, :]
        return token(input_ids) + position(positions)


class CLIPEncoder(nn.Module):
    config: CLIPTextConfig

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array) -> jax.Array:
        cfg = self.config
        layer_cls = CLIPEncoderLayer
        if cfg.remat_policy != "none":
            layer_cls = nn.remat(CLIPEncoderLayer, policy=REMAT_POLICIES[cfg.remat_policy])
        for i in range(cfg.num_hidden_layers):
            x = layer_cls(cfg, name=f"layers_{i}")(x, mask)
        return x


class CLIPTextTransformer(nn.Module):
    config: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        length = input_ids.shape[1]
        mask = jnp.tril(jnp.ones((length, length), dtype=bool))[None, None]
        if attention_mask is not None:
            mask = mask & attention_mask.astype(bool)[:, None, None, :]
        x = CLIPTextEmbeddings(self.config, name="embeddings")(input_ids)
        x = nn.with_logical_constraint(x, ACTIVATION_AXES)
        x = CLIPEncoder(self.config, name="encoder")(x, mask)
        return _layer_norm(self.config, "final_layer_norm")(x)


class CLIPTextModel(nn.Module):
    """``apply({"params": p}, input_ids[B, L] int, attention_mask=None) -> last_hidden_state [B, L, D]``.

    The output is SD's prompt embedding (the conditioning ``c`` of eq. 3), after ``final_layer_norm``.
    """

    config: CLIPTextConfig

    @nn.compact
    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        cfg = self.config
        if input_ids.ndim != 2 or not jnp.issubdtype(input_ids.dtype, jnp.integer):
            raise ValueError(f"input_ids must be an integer array [batch, length], got {input_ids.dtype} "
                             f"{tuple(input_ids.shape)}")
        if not 0 < input_ids.shape[1] <= cfg.max_position_embeddings:
            raise ValueError(f"input_ids length {input_ids.shape[1]} must be in 1..max_position_embeddings "
                             f"({cfg.max_position_embeddings})")
        if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
            raise ValueError(f"attention_mask shape {tuple(attention_mask.shape)} must equal input_ids shape "
                             f"{tuple(input_ids.shape)}")
        return CLIPTextTransformer(cfg, name="text_model")(input_ids, attention_mask)
