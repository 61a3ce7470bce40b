"""CLIP text encoder: parity with transformers.CLIPTextModel, SD-2.1 checkpoint keys/shapes, config, sharding axes."""
import csv
import dataclasses
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from numerics import assert_close

from vidrd_jax.convert import naming
from vidrd_jax.models.text_encoder import CLIPTextConfig, CLIPTextModel
from vidrd_jax.models.tokenizer import load_tokenizer

KEYS_TSV = Path(__file__).parent / "reference" / "vidrd_text_encoder_keys.tsv"
SD21_TEXT_CONFIG_JSON = {  # stabilityai/stable-diffusion-2-1-base text_encoder/config.json
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 2, "hidden_act": "gelu", "hidden_size": 1024, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 4096, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 16, "num_hidden_layers": 23, "pad_token_id": 1,
    "projection_dim": 512, "torch_dtype": "float32", "transformers_version": "4.25.0.dev0", "vocab_size": 49408,
}
PROMPTS = ["a panda playing guitar on times square", "", "Two dogs run across a snowy field at sunset, 4k"]


def _abstract_params(cfg: CLIPTextConfig) -> dict:
    ids = jnp.zeros((1, cfg.max_position_embeddings), jnp.int32)
    return nn.meta.unbox(jax.eval_shape(CLIPTextModel(cfg).init, jax.random.key(0), ids)["params"])


def _checkpoint_state_dict(model: transformers.CLIPTextModel) -> dict:
    """State dict with checkpoint keys: transformers 5 dropped the ``text_model.`` level that SD-2.1/VidRD files have."""
    return {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in model.state_dict().items()}


def _torch_model(hidden_act: str, seed: int) -> transformers.CLIPTextModel:
    torch.manual_seed(seed)
    hf_cfg = transformers.CLIPTextConfig(
        vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, hidden_act=hidden_act, layer_norm_eps=1e-5)
    hf_cfg._attn_implementation = "eager"
    model = transformers.CLIPTextModel(hf_cfg).eval()
    with torch.no_grad():  # non-trivial LayerNorm affine params, so scale/bias mapping is exercised
        for name, p in model.named_parameters():
            if "layer_norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return load_tokenizer(cache_dir=tmp_path_factory.mktemp("clip_cache"))


@pytest.fixture(scope="module", params=["gelu", "quick_gelu"])
def pair(request):
    """(torch model, our config, our params converted from its state dict)."""
    torch_model = _torch_model(request.param, seed=len(request.param))
    cfg = CLIPTextConfig.from_transformers(torch_model.config.to_dict())
    assert cfg.hidden_act == request.param
    params, unfilled = naming.state_dict_to_params(_checkpoint_state_dict(torch_model), _abstract_params(cfg),
                                                   what="text_encoder")
    assert unfilled == []
    return torch_model, cfg, jax.tree.map(jnp.asarray, params)


@pytest.fixture(scope="module")
def tiny():
    """(config, freshly initialised params) for checks that need no reference model."""
    cfg = CLIPTextConfig.tiny()
    init = jax.jit(CLIPTextModel(cfg).init)
    return cfg, nn.meta.unbox(init(jax.random.key(0), jnp.zeros((1, 77), jnp.int32))["params"])


def _torch_forward(model, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                    attention_mask=None if mask is None else torch.from_numpy(mask.astype(np.int64)))
    return out.last_hidden_state.numpy()


# Roundings along a tiny tower's chain (2 layers): reductions over 32 (LayerNorm, q/k/v, out, fc1), 64 (fc2) and 77
# (softmax, A·V) keys, ~400 per layer, plus the final LayerNorm. Backward chains mirror the forward: twice that.
CLIP_OPS = 2 * 400 + 50


def _assert_close(ours, ref):
    assert float(np.abs(np.asarray(ref)).max()) > 0.1
    assert_close(ours, ref, ops=CLIP_OPS)


def test_parity_random_ids(pair):
    torch_model, cfg, params = pair
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (2, 77)).astype(np.int32)
    ours = jax.jit(CLIPTextModel(cfg).apply)({"params": params}, jnp.asarray(ids))
    assert ours.shape == (2, 77, cfg.hidden_size) and ours.dtype == jnp.float32
    _assert_close(ours, _torch_forward(torch_model, ids))


def test_parity_tokenized_prompts_and_attention_mask(pair, tokenizer):
    torch_model, cfg, params = pair
    ids = tokenizer.encode(PROMPTS)
    apply = jax.jit(CLIPTextModel(cfg).apply)
    _assert_close(apply({"params": params}, jnp.asarray(ids)), _torch_forward(torch_model, ids))
    mask = np.zeros(ids.shape, np.int32)
    for row, prompt_ids in enumerate(ids):
        mask[row, :int(np.argmax(prompt_ids == tokenizer.eos_token_id)) + 1] = 1
    ours = apply({"params": params}, jnp.asarray(ids), jnp.asarray(mask))
    _assert_close(ours, _torch_forward(torch_model, ids, mask))
    # The mask only hides padded keys: every token up to EOS is unchanged, later positions change.
    unmasked = np.asarray(apply({"params": params}, jnp.asarray(ids)))
    n = int(mask[0].sum())
    assert_close(np.asarray(ours)[0, :n], unmasked[0, :n], ops=CLIP_OPS)
    assert np.abs(np.asarray(ours)[0, n:] - unmasked[0, n:]).max() > 1e-3


def test_params_round_trip_to_transformers_state_dict(pair):
    torch_model, _, params = pair
    ref = {k: v.numpy() for k, v in _checkpoint_state_dict(torch_model).items()}
    ours = naming.params_to_state_dict(params)
    assert set(ours) == set(ref)
    for key, value in ours.items():
        np.testing.assert_array_equal(value, ref[key], err_msg=key)


def test_causal(pair):
    _, cfg, params = pair
    ids = np.random.default_rng(1).integers(0, cfg.vocab_size, (1, 20)).astype(np.int32)
    changed = ids.copy()
    changed[0, 12] = (changed[0, 12] + 1) % cfg.vocab_size
    apply = jax.jit(CLIPTextModel(cfg).apply)
    a, b = np.asarray(apply({"params": params}, ids)), np.asarray(apply({"params": params}, changed))
    np.testing.assert_array_equal(a[0, :12], b[0, :12])
    assert np.abs(a[0, 12:] - b[0, 12:]).min() > 0


def test_sd21_keys_shapes_and_count_match_vidrd_reference():
    with KEYS_TSV.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    ref = {r["key"]: tuple(int(d) for d in r["shape"].split("x")) for r in rows if r["origin"] != "buffer_int64"}
    assert len(ref) == 372
    shapes = naming.flatten_params(_abstract_params(CLIPTextConfig.sd21()))
    ours = {}
    for path, leaf in shapes.items():
        shape = tuple(leaf.shape)
        ours[naming.flax_path_to_torch_key(path)] = shape[::-1] if path[-1] == "kernel" else shape
        assert leaf.dtype == jnp.float32
    assert ours == ref
    assert sum(int(np.prod(s)) for s in ours.values()) == 340_387_840


def test_logical_partition_specs():
    cfg = CLIPTextConfig.tiny()
    boxed = jax.eval_shape(CLIPTextModel(cfg).init, jax.random.key(0), jnp.zeros((1, 77), jnp.int32))["params"]
    specs = naming.flatten_params(nn.get_partition_spec(boxed))
    layer = ("text_model", "encoder", "layers_1")
    expected = {
        ("text_model", "embeddings", "token_embedding", "embedding"): ("vocab", "embed"),
        ("text_model", "embeddings", "position_embedding", "embedding"): (None, "embed"),
        layer + ("self_attn", "q_proj", "kernel"): ("embed", "heads"),
        layer + ("self_attn", "v_proj", "bias"): ("heads",),
        layer + ("self_attn", "out_proj", "kernel"): ("heads", "embed"),
        layer + ("mlp", "fc1", "kernel"): ("embed", "mlp"),
        layer + ("mlp", "fc2", "kernel"): ("mlp", "embed"),
        layer + ("mlp", "fc2", "bias"): ("embed",),
        layer + ("layer_norm2", "scale"): ("norm",),
        ("text_model", "final_layer_norm", "bias"): ("norm",),
    }
    for path, axes in expected.items():
        assert tuple(specs[path]) == axes, path
    assert all(spec is not None and len(spec) > 0 for spec in specs.values())


def test_remat_and_bfloat16(tiny):
    cfg, params = tiny
    ids = jnp.asarray(np.random.default_rng(2).integers(0, cfg.vocab_size, (2, 16)), jnp.int32)

    def loss(p, c):
        return jnp.sum(CLIPTextModel(c).apply({"params": p}, ids).astype(jnp.float32) ** 2)

    remat_cfg = dataclasses.replace(cfg, remat_policy="full")
    (l0, g0), (l1, g1) = (jax.jit(jax.value_and_grad(loss), static_argnums=1)(params, c) for c in (cfg, remat_cfg))
    assert_close(l1, l0, ops=CLIP_OPS + 1024)  # + the sum of 1024 squares
    flat0, flat1 = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]) for g in (g0, g1))
    assert_close(flat1, flat0, ops=2 * CLIP_OPS)

    bf16 = dataclasses.replace(cfg, dtype="bfloat16")
    out16 = CLIPTextModel(bf16).apply({"params": params}, ids)
    out32 = CLIPTextModel(cfg).apply({"params": params}, ids)
    assert out16.dtype == jnp.bfloat16
    assert_close(np.asarray(out16, np.float32), out32, ops=12, dtype=jnp.bfloat16)  # ~12 bfloat16 roundings: 9 %


def test_config_constructors_and_round_trip():
    assert CLIPTextConfig.from_transformers(SD21_TEXT_CONFIG_JSON) == CLIPTextConfig.sd21()
    openai = CLIPTextConfig.from_transformers(transformers.CLIPConfig().to_dict())  # nested text_config
    assert (openai.hidden_size, openai.num_hidden_layers, openai.hidden_act) == (512, 12, "quick_gelu")
    cfg = CLIPTextConfig.tiny(dtype="bfloat16", remat_policy="dots_saveable")
    assert CLIPTextConfig.from_dict(cfg.to_dict()) == cfg
    assert CLIPTextConfig.from_transformers(SD21_TEXT_CONFIG_JSON, num_hidden_layers=2).num_hidden_layers == 2
    with pytest.raises(ValueError, match="unknown fields.*hidden_sizee"):
        CLIPTextConfig.from_dict({**cfg.to_dict(), "hidden_sizee": 3})


@pytest.mark.parametrize("field, value, match", [
    ("hidden_size", 30, "hidden_size .* divisible by num_attention_heads"),
    ("num_hidden_layers", 0, "num_hidden_layers"),
    ("vocab_size", 1.5, "vocab_size"),
    ("hidden_act", "relu6", "hidden_act"),
    ("layer_norm_eps", 0.0, "layer_norm_eps"),
    ("dtype", "float64", "dtype"),
    ("remat_policy", "sometimes", "remat_policy"),
])
def test_config_validation_names_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        CLIPTextConfig.tiny(**{field: value})


def test_bad_inputs_raise(tiny):
    cfg, params = tiny
    model = CLIPTextModel(cfg)
    with pytest.raises(ValueError, match="input_ids must be an integer array"):
        model.apply({"params": params}, jnp.zeros((77,), jnp.int32))
    with pytest.raises(ValueError, match="input_ids must be an integer array"):
        model.apply({"params": params}, jnp.zeros((1, 77), jnp.float32))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.apply({"params": params}, jnp.zeros((1, 78), jnp.int32))
    with pytest.raises(ValueError, match="attention_mask shape"):
        model.apply({"params": params}, jnp.zeros((2, 77), jnp.int32), jnp.ones((2, 76), jnp.int32))
