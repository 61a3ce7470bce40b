"""AutoencoderKL with the temporal decoder (paper §4.4): parity with diffusers, identity of fresh Temp-Conv layers,
frame mixing once trained, the official key table and parameter totals, bf16 and config checks."""
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax.linen import meta

from vidrd_jax.convert import naming
from vidrd_jax.models.vae import AutoencoderKL, VAEConfig

B, F, P = 2, 3, 16  # clips, frames per clip, pixel size (latents are 8x8)
N = B * F
KEY_TABLE = os.path.join(os.path.dirname(__file__), "reference", "vidrd_temporal_vae_keys.tsv")
OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}

DIFFUSERS_TINY = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[32, 64], layers_per_block=1,
    down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, norm_num_groups=8,
    sample_size=P)

SD_VAE_CONFIG = {  # SD-2.1 vae/config.json
    "_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "in_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "norm_num_groups": 32, "out_channels": 3, "sample_size": 768, "up_block_types": ["UpDecoderBlock2D"] * 4}


# Unoptimised CPU code generation halves compile time; these tiny models run in milliseconds either way.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})


def _is_temporal(torch_key):
    return "temp_" in torch_key


def _randomize_temporal(params, seed, scale=0.2):
    rs = np.random.RandomState(seed)
    out = {}
    for path, leaf in naming.flatten_params(params).items():
        if _is_temporal(naming.flax_path_to_torch_key(path)):
            noise = (scale * rs.randn(*leaf.shape)).astype(np.float32)
            leaf = 1.0 + noise if path[-1] == "scale" else noise
        out[path] = leaf
    return naming.unflatten_params(out)


def _nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1)


@pytest.fixture(scope="module")
def diffusers_vae():
    from diffusers import AutoencoderKL as TorchAutoencoderKL
    torch.manual_seed(0)
    model = TorchAutoencoderKL(**DIFFUSERS_TINY).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in name and name.endswith("weight") else 0.0))
    return model


@pytest.fixture(scope="module")
def pixels():
    return np.random.RandomState(0).uniform(-1, 1, (N, P, P, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    return AutoencoderKL(VAEConfig.from_diffusers(DIFFUSERS_TINY))


@pytest.fixture(scope="module")
def fresh_params(diffusers_vae, model, pixels):
    """The diffusers 2D weights + freshly initialised Temp-Conv layers."""
    init = meta.unbox(_jit(model.init)(jax.random.key(0, impl="unsafe_rbg"), pixels)["params"])
    params, unfilled = naming.state_dict_to_params(diffusers_vae.state_dict(), init, allow_missing=_is_temporal,
                                                   what="tiny vae")
    flat, flat_init = naming.flatten_params(params), naming.flatten_params(init)
    assert unfilled and all("temp_convs" in "/".join(p) for p in unfilled)
    flat.update({p: flat_init[p] for p in unfilled})
    return naming.unflatten_params(flat)


@pytest.fixture(scope="module")
def encode(model):
    return _jit(lambda p, x: model.apply({"params": p}, x, method=model.encode))


@pytest.fixture(scope="module")
def decode(model):
    return _jit(lambda p, z, num_frames: model.apply({"params": p}, z, num_frames, method=model.decode),
                   static_argnums=2)


@pytest.fixture(scope="module")
def reference(diffusers_vae, pixels):
    with torch.no_grad():
        posterior = diffusers_vae.encode(_nchw(pixels)).latent_dist
        recon = diffusers_vae.decode(posterior.mean).sample
    return _nhwc(posterior.mean), _nhwc(posterior.logvar), _nhwc(recon)


def _close(ours, ref, tol=1e-4):
    assert np.abs(np.asarray(ours) - ref).max() <= tol * np.abs(ref).max()


def test_encode_matches_diffusers(fresh_params, encode, pixels, reference):
    mean, logvar = encode(fresh_params, pixels)
    assert mean.shape == logvar.shape == (N, P // 2, P // 2, 4)
    _close(mean, reference[0])
    _close(logvar, reference[1])


def test_single_frame_decode_is_the_2d_decoder_even_with_trained_temporal_layers(fresh_params, decode, reference):
    trained = _randomize_temporal(fresh_params, seed=1)
    _close(decode(trained, reference[0], 1), reference[2])


def test_fresh_temporal_decoder_equals_2d_decoder_per_frame(fresh_params, decode, reference):
    _close(decode(fresh_params, reference[0], F), reference[2])


def test_trained_temporal_decoder_mixes_frames(fresh_params, decode, reference):
    trained = _randomize_temporal(fresh_params, seed=2)
    z = reference[0]
    changed = z.copy()
    changed[0::F] += 1.0  # the first frame of every clip
    clip, clip_changed = (np.asarray(decode(trained, v, F)) for v in (z, changed))
    other = np.arange(N) % F != 0
    assert np.abs(clip_changed[other] - clip[other]).max() > 1e-3
    assert np.abs(clip - reference[2]).max() > 1e-3  # trained temporal layers change the output
    image, image_changed = (np.asarray(decode(trained, v, 1)) for v in (z, changed))
    np.testing.assert_array_equal(image_changed[other], image[other])


def test_call_samples_the_posterior_reproducibly(fresh_params, model, pixels):
    call = _jit(lambda p, x, rng: model.apply({"params": p}, x, F, True, rng))
    (recon_a, mean, logvar), (recon_b, _, _), (recon_c, _, _) = (
        call(fresh_params, pixels, jax.random.PRNGKey(k)) for k in (0, 0, 1))
    assert recon_a.shape == pixels.shape and mean.shape == logvar.shape
    np.testing.assert_array_equal(np.asarray(recon_a), np.asarray(recon_b))
    assert np.abs(np.asarray(recon_a - recon_c)).max() > 1e-4
    with pytest.raises(ValueError, match="rng"):
        model.apply({"params": fresh_params}, pixels, sample_posterior=True)


def test_bf16_remat_decode_is_close_to_fp32(fresh_params, decode, reference):
    trained = _randomize_temporal(fresh_params, seed=3)
    ref = np.asarray(decode(trained, reference[0], F))
    bf16 = AutoencoderKL(VAEConfig.from_diffusers(DIFFUSERS_TINY, dtype="bfloat16", remat_policy="full"))

    def run(p, z):
        return bf16.apply({"params": p}, z, F, method=bf16.decode)

    out = np.asarray(_jit(run)(trained, reference[0]))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    assert np.abs(out - ref).max() <= 5e-2 * np.abs(ref).max()
    assert "remat" in str(jax.make_jaxpr(run)(trained, reference[0]))  # nn.remat wraps every decoder level


def test_sd21_keys_shapes_and_totals_match_official_release():
    model = AutoencoderKL(VAEConfig.sd21())
    boxed = jax.eval_shape(model.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32))
    ours = {naming.flax_path_to_torch_key(path): naming.flax_to_torch_array(path[-1], np.empty(leaf.shape, np.int8))
            .shape for path, leaf in naming.flatten_params(meta.unbox(boxed["params"])).items()}
    official = {}
    for key, shape, _ in (line.split("\t") for line in open(KEY_TABLE).read().splitlines()[1:]):
        parts = key.split(".")
        if "attentions" in parts and parts[-2] in OLD_ATTENTION_NAMES:
            key = ".".join(parts[:-2] + [OLD_ATTENTION_NAMES[parts[-2]], parts[-1]])
        official[key] = tuple(int(d) for d in shape.split("x"))
    assert len(official) == 392
    assert sorted(set(official) - set(ours)) == [] and sorted(set(ours) - set(official)) == []
    assert {k: s for k, s in ours.items() if official[k] != s} == {}
    totals = {"2d": 0, "temporal": 0}
    for key, shape in ours.items():
        totals["temporal" if _is_temporal(key) else "2d"] += int(np.prod(shape))
    assert totals == {"2d": 83_653_863, "temporal": 16_405_632}


def test_config_from_diffusers_and_round_trip():
    cfg = VAEConfig.from_diffusers(SD_VAE_CONFIG)
    assert cfg == VAEConfig.sd21() and cfg.scaling_factor == 0.18215
    assert VAEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert not VAEConfig.from_diffusers(dict(SD_VAE_CONFIG, add_temp_conv=False)).use_temporal_decoder
    with pytest.raises(ValueError, match="up_block_types"):
        VAEConfig.from_diffusers(dict(SD_VAE_CONFIG, up_block_types=["AttnUpDecoderBlock2D"] * 4))
    with pytest.raises(ValueError, match="use_quant_conv"):
        VAEConfig.from_diffusers(dict(SD_VAE_CONFIG, use_quant_conv=False))


def test_temporal_norm_groups_are_the_releases_for_release_layouts_and_old_configs_keep_theirs():
    """Temp-Conv GroupNorm groups: 32 (the release's, whatever norm_num_groups) for ``sd21`` and
    ``from_diffusers``; norm_num_groups where unset (tiny models, and stored configs written before the field)."""
    assert VAEConfig.sd21().temporal_groups == 32
    assert VAEConfig.from_diffusers(DIFFUSERS_TINY).temporal_groups == 32  # its norm_num_groups is 8
    assert VAEConfig.tiny().temporal_groups == 8
    old = VAEConfig.tiny().to_dict()
    del old["temporal_norm_num_groups"]
    assert VAEConfig.from_dict(json.loads(json.dumps(old))).temporal_groups == 8
    assert VAEConfig.from_diffusers(dict(DIFFUSERS_TINY, add_temp_conv=False, block_out_channels=[16, 32]))


@pytest.mark.parametrize("overrides,field", [
    (dict(block_out_channels=(32, 36)), "block_out_channels"),
    (dict(groupnorm_scope="video"), "groupnorm_scope"),
    (dict(dtype="float16"), "dtype"),
    (dict(scaling_factor=0.0), "scaling_factor"),
    (dict(temporal_conv_layers=0), "temporal_conv_layers"),
    (dict(remat_policy="always"), "remat_policy"),
    (dict(temporal_norm_num_groups=24), "temporal_norm_num_groups"),  # 24 does not divide 32 channels
    (dict(temporal_norm_num_groups=True), "temporal_norm_num_groups"),
])
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=f"VAEConfig.{field}"):
        VAEConfig.tiny(**overrides)


def test_bad_inputs_name_the_argument(fresh_params, model, pixels, reference):
    with pytest.raises(ValueError, match="num_frames"):
        model.apply({"params": fresh_params}, reference[0], 4, method=model.decode)
    with pytest.raises(ValueError, match="encode: x"):
        model.apply({"params": fresh_params}, pixels[..., :2], method=model.encode)
