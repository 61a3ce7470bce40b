"""UNet3D (paper §4.1): 2D parity with diffusers, identity of fresh temporal layers, frame mixing, the temporal
layers against a PyTorch re-statement of the official release, the SD-2.1 parameter tree, bf16 and config checks."""
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.linen import meta

import torch_reference
from numerics import assert_close
from vidrd_jax.convert import naming
from vidrd_jax.models.layers import conv
from vidrd_jax.models.temporal_layers import FrameConv, TemporalConv, frame_position_embedding
from vidrd_jax.models.unet3d import BasicTransformerBlock, UNet3D, UNet3DConfig

B, F, S, L = 2, 3, 8, 5  # batch, frames, latent size, text length
# Roundings along a chain (numerics.py), ~40 per layer (blocked accumulations of its sums, norm, activation):
BLOCK_OPS = 6 * 40  # a transformer block: spatial, temporal and cross attention, feed-forward, their norms
UNET_OPS = 20 * 40  # the tiny UNet: ~20 conv / attention / norm layers deep
KEY_TABLE = os.path.join(os.path.dirname(__file__), "reference", "vidrd_unet3d_keys.tsv")

DIFFUSERS_TINY = dict(
    sample_size=S, in_channels=4, out_channels=4, block_out_channels=[32, 64], layers_per_block=1,
    down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
    attention_head_dim=2, cross_attention_dim=32, norm_num_groups=8, use_linear_projection=True)

SD21_UNET_CONFIG = {  # SD-2.1(-base) unet/config.json (architecture fields)
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 1024,
    "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], "downsample_padding": 1,
    "dual_cross_attention": False, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False, "out_channels": 4, "sample_size": 96,
    "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, "upcast_attention": True,
    "use_linear_projection": True}


def _randomize(tree, seed, scale=0.05, where=lambda path: True):
    """Replaces the leaves selected by ``where(torch_key)`` with N(0, scale²) (norm scales: 1 + N(0, scale²))."""
    rs = np.random.RandomState(seed)
    out = {}
    for path, leaf in naming.flatten_params(tree).items():
        if not where(naming.flax_path_to_torch_key(path)):
            out[path] = leaf
            continue
        noise = (scale * rs.randn(*leaf.shape)).astype(np.float32)
        out[path] = (1.0 + noise) if path[-1] == "scale" else noise
    return naming.unflatten_params(out)


# Unoptimised CPU code generation halves compile time; these tiny models run in milliseconds either way.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _is_temporal(torch_key):
    return "temp_" in torch_key


def _torch_sd(params):
    return {k: torch.from_numpy(np.array(v, np.float32)) for k, v in naming.params_to_state_dict(params).items()}


# --- shared tiny models ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs():
    rs = np.random.RandomState(0)
    x = rs.randn(B, F, S, S, 4).astype(np.float32)
    t = np.array([17, 700], np.int32)
    ctx = rs.randn(B, L, 32).astype(np.float32)
    return x, t, ctx


@pytest.fixture(scope="module")
def diffusers_unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    model = UNet2DConditionModel(**DIFFUSERS_TINY).eval()
    with torch.no_grad():  # re-randomise everything (zero-initialised conv_out/to_out included)
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model


@pytest.fixture(scope="module")
def cfg2d():
    return UNet3DConfig.from_diffusers(DIFFUSERS_TINY, use_temporal=False, groupnorm_scope="frame")


@pytest.fixture(scope="module")
def params2d(diffusers_unet, cfg2d, inputs):
    shapes = meta.unbox(jax.eval_shape(UNet3D(cfg2d).init, jax.random.PRNGKey(0), *inputs)["params"])
    params, _ = naming.state_dict_to_params(diffusers_unet.state_dict(), shapes, what="tiny unet")
    return params


@pytest.fixture(scope="module")
def apply2d(cfg2d):
    return _jit(UNet3D(cfg2d).apply)


@pytest.fixture(scope="module")
def fresh3d_params(diffusers_unet, inputs):
    """SD weights from the diffusers model + freshly initialised temporal layers (as ``from_pretrained_2d``)."""
    model = UNet3D(UNet3DConfig.tiny(groupnorm_scope="frame", temporal_position_embedding="attention"))
    # An "rbg" key makes the jitted init compile ~3x faster on CPU than threefry.
    init = meta.unbox(_jit(model.init)(jax.random.key(1, impl="unsafe_rbg"), *inputs)["params"])
    params, unfilled = naming.state_dict_to_params(diffusers_unet.state_dict(), init,
                                                   allow_missing=_is_temporal, what="tiny unet3d")
    flat = naming.flatten_params(params)
    flat_init = naming.flatten_params(init)
    assert unfilled and all("temp_" in "/".join(p) for p in unfilled)
    flat.update({p: flat_init[p] for p in unfilled})
    return naming.unflatten_params(flat)


@pytest.fixture(scope="module")
def apply3d_frame():
    cfg = UNet3DConfig.tiny(groupnorm_scope="frame", temporal_position_embedding="attention")
    return _jit(UNet3D(cfg).apply)


def _run(apply, params, x, t, ctx):
    return np.asarray(apply({"params": params}, x, t, ctx))


def _random_params(module, *args, seed=0, scale=0.3):
    """Random parameters for ``module`` from its abstract init (no init compile)."""
    return _randomize(meta.unbox(jax.eval_shape(module.init, jax.random.PRNGKey(0), *args)["params"]), seed, scale)


# --- 2D parity ---------------------------------------------------------------------------------------------------
def test_2d_path_matches_diffusers(diffusers_unet, params2d, apply2d, inputs):
    x, t, ctx = inputs
    ours = _run(apply2d, params2d, x, t, ctx)
    with torch.no_grad():
        ref = diffusers_unet(torch.from_numpy(x.reshape(B * F, S, S, 4).transpose(0, 3, 1, 2)),
                             torch.from_numpy(np.repeat(t, F)).long(),
                             torch.from_numpy(np.repeat(ctx, F, axis=0))).sample.numpy()
    ref = ref.transpose(0, 2, 3, 1).reshape(B, F, S, S, 4)
    assert_close(ours, ref, ops=UNET_OPS)


# --- fresh temporal layers are the identity ----------------------------------------------------------------------
def test_fresh_temporal_frame_scope_equals_2d_per_frame(fresh3d_params, params2d, apply2d, apply3d_frame, inputs):
    x, t, ctx = inputs  # different frames
    ours = _run(apply3d_frame, fresh3d_params, x, t, ctx)
    assert_close(ours, _run(apply2d, params2d, x, t, ctx), ops=UNET_OPS)


def test_fresh_temporal_clip_scope_equals_2d_on_identical_frames(fresh3d_params, params2d, apply2d, inputs):
    x, t, ctx = inputs
    cfg = UNet3DConfig.tiny(groupnorm_scope="clip", temporal_position_embedding="attention")
    apply_clip = _jit(UNet3D(cfg).apply)
    same = np.repeat(x[:, :1], F, axis=1)
    assert_close(_run(apply_clip, fresh3d_params, same, t, ctx), _run(apply2d, params2d, same, t, ctx), ops=UNET_OPS)
    # Clip-pooled GroupNorm statistics couple the frames even before any temporal training.
    changed = same.copy()
    changed[:, 0] += 1.0
    out_same, out_changed = (_run(apply_clip, fresh3d_params, v, t, ctx) for v in (same, changed))
    assert np.abs(out_changed[:, 1:] - out_same[:, 1:]).max() > 1e-3


# --- temporal layers mix frames ----------------------------------------------------------------------------------
def test_trained_temporal_layers_mix_frames_and_2d_does_not(fresh3d_params, params2d, apply2d, apply3d_frame,
                                                            inputs):
    x, t, ctx = inputs
    trained = _randomize(fresh3d_params, seed=3, where=_is_temporal)
    changed = x.copy()
    changed[:, 0] += 1.0
    out, out_changed = (_run(apply3d_frame, trained, v, t, ctx) for v in (x, changed))
    assert np.abs(out_changed[:, 1:] - out[:, 1:]).max() > 1e-3
    out2d, out2d_changed = (_run(apply2d, params2d, v, t, ctx) for v in (x, changed))
    assert np.abs(out2d_changed[:, 0] - out2d[:, 0]).max() > 1e-3
    np.testing.assert_array_equal(out2d_changed[:, 1:], out2d[:, 1:])


def test_remat_and_bf16_match_fp32(fresh3d_params, apply3d_frame, inputs):
    x, t, ctx = inputs
    trained = _randomize(fresh3d_params, seed=4, where=_is_temporal)
    ref = _run(apply3d_frame, trained, x, t, ctx)
    cfg = UNet3DConfig.tiny(groupnorm_scope="frame", temporal_position_embedding="attention",
                            remat_policy="dots_saveable", dtype="bfloat16")
    model = UNet3D(cfg)
    out = _run(_jit(model.apply), trained, x, t, ctx)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    # bf16 rounds every layer's output: allow one bf16 epsilon of the output's scale per layer of depth (~20).
    assert_close(out, ref, ops=UNET_OPS // 40, dtype=jnp.bfloat16, err_msg="bf16 + remat vs fp32")
    jaxpr = str(jax.make_jaxpr(lambda p: model.apply({"params": p}, x, t, ctx))(trained))
    assert "remat" in jaxpr  # nn.remat wraps every down/mid/up block


# --- temporal layers vs the PyTorch re-statement of the official code --------------------------------------------
@pytest.mark.parametrize("num_layers,frames", [(4, 3), (3, 4), (4, 1)])
def test_temporal_conv_matches_torch_reference(num_layers, frames):
    x = np.random.RandomState(1).randn(2, frames, 3, 5, 16).astype(np.float32)
    module = TemporalConv(num_layers=num_layers, num_groups=4, groupnorm_scope="clip")
    params = _random_params(module, x, seed=2, scale=0.2)
    ours = np.asarray(_jit(module.apply)({"params": params}, x))
    with torch.no_grad():
        ref = torch_reference.temporal_conv(_torch_sd(params), "", torch.from_numpy(x.transpose(0, 4, 1, 2, 3)),
                                            num_layers, num_groups=4).numpy().transpose(0, 2, 3, 4, 1)
    assert_close(ours, ref, ops=num_layers * 40)
    if frames == 1:
        np.testing.assert_array_equal(ours, x)
    else:
        assert np.abs(ours - x).max() > 1e-2


@pytest.mark.parametrize("padding,frames", [("zeros", 5), ("replicate", 5), ("zeros", 2), ("replicate", 1)])
def test_frame_conv_equals_a_generic_conv3d_and_keeps_nn_conv_params(padding, frames):
    x = np.random.RandomState(3).randn(2, frames, 3, 2, 8).astype(np.float32)
    module = FrameConv(6, padding)
    params = _jit(module.init)(jax.random.PRNGKey(4), x)["params"]
    generic = conv(6, (3, 1, 1), padding="VALID")  # the nn.Conv whose init, names and shapes checkpoints hold
    reference = meta.unbox(_jit(generic.init)(jax.random.PRNGKey(4), x)["params"])
    jax.tree.map(np.testing.assert_array_equal, meta.unbox(params), reference)
    params = _randomize(meta.unbox(params), seed=5, scale=0.3)
    mode = "edge" if padding == "replicate" else "constant"
    padded = np.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)), mode=mode)
    expected = _jit(generic.apply)({"params": params}, padded)
    # each output sums 3 frames x 8 channels of products
    assert_close(_jit(module.apply)({"params": params}, x), expected, ops=3 * 8 + 2)


def test_temporal_conv_fresh_is_identity_and_dropout_is_stochastic():
    x = np.random.RandomState(2).randn(1, 4, 2, 2, 16).astype(np.float32)
    module = TemporalConv(num_layers=4, num_groups=4)
    variables = _jit(module.init)(jax.random.PRNGKey(0), x)
    apply = _jit(module.apply, static_argnames="deterministic")
    np.testing.assert_array_equal(np.asarray(apply(variables, x)), x)
    params = {"params": _randomize(meta.unbox(variables["params"]), seed=1, scale=0.2)}
    a, b, c = (np.asarray(apply(params, x, deterministic=False, rngs={"dropout": jax.random.PRNGKey(k)}))
               for k in (0, 1, 0))
    assert np.abs(a - b).max() > 1e-4
    np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("frames,position_embedding", [(3, "residual"), (1, "residual"), (3, "none")])
def test_transformer_block_matches_torch_reference(frames, position_embedding):
    heads, channels, tokens = 2, 16, 6
    rs = np.random.RandomState(3)
    h = rs.randn(2, frames, tokens, channels).astype(np.float32)
    ctx = rs.randn(2, 4, 8).astype(np.float32)
    block = BasicTransformerBlock(heads, temporal_position_embedding=position_embedding)
    params = _random_params(block, h, ctx, seed=5)
    ours = np.asarray(_jit(block.apply)({"params": params}, h, ctx))
    with torch.no_grad():
        ref = torch_reference.basic_transformer_block(
            _torch_sd(params), "", torch.from_numpy(h.reshape(-1, tokens, channels)), torch.from_numpy(ctx),
            frames, heads, add_temp_embed=position_embedding == "residual").numpy()
    assert_close(ours, ref.reshape(h.shape), ops=BLOCK_OPS)


def test_official_position_embedding_quirks():
    """Residual PE: a fresh block is not the identity, and a single frame still gets pe[0] = (0, 1, 0, 1, ...)."""
    pe = np.asarray(frame_position_embedding(3, 8))
    np.testing.assert_allclose(pe[0], [0, 1] * 4)
    # exp for the frequencies and position x frequency (~4 roundings of arguments up to 2), then sin / cos
    assert_close(pe[2, :2], [np.sin(2.0), np.cos(2.0)], ops=8)
    assert_close(pe, torch_reference.frame_position_embedding(8, 3).numpy(), ops=8)
    rs = np.random.RandomState(4)
    h, ctx = rs.randn(1, 1, 4, 8).astype(np.float32), rs.randn(1, 2, 8).astype(np.float32)
    blocks = {mode: BasicTransformerBlock(2, temporal_position_embedding=mode) for mode in ("residual", "attention")}
    variables = _jit(blocks["residual"].init)(jax.random.PRNGKey(0), h, ctx)
    zero_pe = np.asarray(_jit(blocks["attention"].apply)(variables, h, ctx))
    residual = np.asarray(_jit(blocks["residual"].apply)(variables, h, ctx))
    assert np.abs(residual - zero_pe).max() > 1e-3
    spatial_only = BasicTransformerBlock(2, use_temporal=False)
    spatial_params = {k: v for k, v in variables["params"].items() if not k.startswith("temp_")}
    assert_close(zero_pe, _jit(spatial_only.apply)({"params": spatial_params}, h, ctx), ops=BLOCK_OPS)


@pytest.mark.parametrize("impl", ["dot_product", "chunked", "auto"])
def test_attention_impls_match_plain(impl):
    rs = np.random.RandomState(5)
    h, ctx = rs.randn(2, 3, 6, 16).astype(np.float32), rs.randn(2, 4, 8).astype(np.float32)
    plain = BasicTransformerBlock(2, attention_impl="plain")
    params = {"params": _random_params(plain, h, ctx, seed=6)}
    other = BasicTransformerBlock(2, attention_impl=impl)
    assert_close(_jit(other.apply)(params, h, ctx), _jit(plain.apply)(params, h, ctx), ops=BLOCK_OPS)


# --- the SD-2.1 parameter tree -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd21_boxed():
    model = UNet3D(UNet3DConfig.sd21())
    args = (jax.ShapeDtypeStruct((1, 2, 8, 8, 4), jnp.float32), jax.ShapeDtypeStruct((1,), jnp.int32),
            jax.ShapeDtypeStruct((1, 77, 1024), jnp.float32))
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)["params"]


def test_sd21_keys_and_shapes_match_official_release(sd21_boxed):
    ours = {naming.flax_path_to_torch_key(path): naming.flax_to_torch_array(path[-1], np.empty(leaf.shape, np.int8))
            .shape for path, leaf in naming.flatten_params(meta.unbox(sd21_boxed)).items()}
    rows = [line.split("\t") for line in open(KEY_TABLE).read().splitlines()[1:]]
    official = {key: tuple(int(d) for d in shape.split("x")) for key, shape, _ in rows}
    assert len(rows) == 1150
    assert sorted(set(official) - set(ours)) == [] and sorted(set(ours) - set(official)) == []
    assert {k: s for k, s in ours.items() if official[k] != s} == {}
    totals = {"2d": 0, "conv": 0, "attn": 0}
    for key, shape in ours.items():
        group = "2d" if "temp_" not in key else ("conv" if "temp_convs" in key else "attn")
        totals[group] += int(np.prod(shape))
    assert totals == {"2d": 865_910_724, "conv": 266_891_520, "attn": 49_599_040}


def test_sd21_logical_axis_names(sd21_boxed):
    specs = naming.flatten_params(nn.get_partition_spec(sd21_boxed))
    block = ("down_blocks_0", "attentions_0", "transformer_blocks_0")
    assert tuple(specs[block + ("temp_attn", "to_q", "kernel")]) == ("embed", "heads")
    assert tuple(specs[block + ("temp_attn", "to_out_0", "kernel")]) == ("heads", "embed")
    assert tuple(specs[block + ("ff", "net_0", "proj", "kernel")]) == ("embed", "mlp")
    assert tuple(specs[("down_blocks_0", "temp_convs_0", "convs_3", "kernel")]) == (
        "conv_t", "conv_h", "conv_w", "conv_in", "conv_out")
    assert tuple(specs[("conv_in", "kernel")]) == ("conv_h", "conv_w", "conv_in", "conv_out")
    assert tuple(specs[("mid_block", "temp_convs_1", "convs_0", "scale")]) == ("norm",)


# --- configuration -----------------------------------------------------------------------------------------------
def test_config_from_diffusers_sd21_and_round_trip():
    cfg = UNet3DConfig.from_diffusers(SD21_UNET_CONFIG)
    assert cfg == UNet3DConfig.sd21()
    assert cfg.num_attention_heads == (5, 10, 20, 20)
    assert UNet3DConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    explicit = dict(SD21_UNET_CONFIG, attention_head_dim=64, num_attention_heads=[5, 10, 20, 20])
    assert UNet3DConfig.from_diffusers(explicit, use_temporal=False) == UNet3DConfig.sd21(use_temporal=False)


@pytest.mark.parametrize("overrides,field", [
    (dict(groupnorm_scope="video"), "groupnorm_scope"),
    (dict(num_attention_heads=(3, 2)), "num_attention_heads"),
    (dict(block_out_channels=(32, 60)), "block_out_channels"),
    (dict(down_block_types=("CrossAttnDownBlock3D",)), "down_block_types"),
    (dict(dtype="float16"), "dtype"),
    (dict(remat_policy="sometimes"), "remat_policy"),
    (dict(temporal_position_embedding="learned"), "temporal_position_embedding"),
    (dict(dropout=1.5), "dropout"),
    (dict(temporal_conv_layers=0), "temporal_conv_layers"),
    (dict(use_temporal="yes"), "use_temporal"),
    (dict(temporal_norm_num_groups=12), "temporal_norm_num_groups"),  # 12 does not divide 32 channels
    (dict(temporal_norm_num_groups=0), "temporal_norm_num_groups"),
    (dict(temporal_norm_eps=0.0), "temporal_norm_eps"),
])
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"UNet3DConfig.{field}"):
        UNet3DConfig.tiny(**overrides)


def test_temporal_norm_is_the_releases_for_release_layouts_and_old_configs_keep_theirs():
    """Temp-Conv GroupNorm: 32 groups / eps 1e-5 (the release's, whatever norm_num_groups) for ``sd21`` and
    ``from_diffusers``; norm_num_groups / norm_eps where unset (tiny models, and stored configs written before the
    fields existed, which were built that way)."""
    assert UNet3DConfig.sd21().temporal_norm == (32, 1e-5)
    assert UNet3DConfig.from_diffusers(DIFFUSERS_TINY).temporal_norm == (32, 1e-5)  # its norm_num_groups is 8
    assert UNet3DConfig.tiny().temporal_norm == (8, 1e-5)
    old = UNet3DConfig.tiny(norm_eps=1e-6).to_dict()
    del old["temporal_norm_num_groups"], old["temporal_norm_eps"]
    assert UNet3DConfig.from_dict(json.loads(json.dumps(old))).temporal_norm == (8, 1e-6)
    with pytest.raises(ValueError, match="UNet3DConfig.temporal_norm_num_groups"):
        UNet3DConfig.from_diffusers(dict(DIFFUSERS_TINY, block_out_channels=[16, 32]))
    assert UNet3DConfig.from_diffusers(dict(DIFFUSERS_TINY, block_out_channels=[16, 32]), use_temporal=False)


def test_config_rejects_unsupported_diffusers_fields():
    with pytest.raises(ValueError, match="class_embed_type"):
        UNet3DConfig.from_diffusers(dict(SD21_UNET_CONFIG, class_embed_type="timestep"))
    with pytest.raises(ValueError, match="transformer_layers_per_block"):
        UNet3DConfig.from_diffusers(dict(SD21_UNET_CONFIG, transformer_layers_per_block=2))
    with pytest.raises(ValueError, match="unknown field"):
        UNet3DConfig.from_dict({"channels": 3})


def test_bad_inputs_name_the_argument(params2d, cfg2d, inputs):
    x, t, ctx = inputs
    model = UNet3D(cfg2d)
    with pytest.raises(ValueError, match="sample"):
        model.apply({"params": params2d}, x[0], t, ctx)
    with pytest.raises(ValueError, match="timesteps"):
        model.apply({"params": params2d}, x, t[:1], ctx)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        model.apply({"params": params2d}, x, t, ctx[..., :8])
