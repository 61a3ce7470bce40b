"""Weight conversion: diffusers/transformers folders and the VidRD release -> our params -> back to PyTorch."""
from __future__ import annotations

import csv
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL as TorchVAE
from diffusers import DDIMScheduler
from diffusers import UNet2DConditionModel
from safetensors.numpy import load_file, save_file
from transformers import CLIPTextConfig as TorchCLIPConfig
from transformers import CLIPTextModel as TorchCLIP

import torch_reference
from vidrd_jax import checkpoints
from vidrd_jax.convert import naming, sd_folder
from vidrd_jax.convert.__main__ import main as convert_main
from vidrd_jax.convert.naming import ConversionError
from vidrd_jax.convert.to_diffusers import release_differences
from vidrd_jax.convert.torch_io import load_state_dict, load_torch_checkpoint
from vidrd_jax.convert.vidrd_release import convert_vidrd_release
from vidrd_jax.models import factory, summary
from vidrd_jax.models.temporal_layers import TemporalConv
from vidrd_jax.models.tokenizer import load_tokenizer
from vidrd_jax.models.unet3d import BasicTransformerBlock, UNet3DConfig
from vidrd_jax.models.vae import VAEConfig

REFERENCE = os.path.join(os.path.dirname(__file__), "reference")
FRAMES, LATENT = 3, 8


def _randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial weights everywhere (diffusers zero-inits some layers): norms ~1, the rest ~N(0, 0.1²)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(1.0 + noise if ("norm" in name and name.endswith("weight")) else noise)


def _close(ours, ref, rel=1e-4):
    ours, ref = np.asarray(ours), np.asarray(ref)
    assert ours.shape == ref.shape
    scale = max(float(np.abs(ref).max()), 1e-6)
    err = float(np.abs(ours - ref).max())
    assert err <= rel * scale, f"max abs error {err:.3g} > {rel} x output scale {scale:.3g}"


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory):
    """A tiny SD-2-style diffusers folder with random weights."""
    root = tmp_path_factory.mktemp("sd")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=(2, 2), cross_attention_dim=32, norm_num_groups=8, use_linear_projection=True)
    vae = TorchVAE(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
                   norm_num_groups=8, down_block_types=("DownEncoderBlock2D",) * 2,
                   up_block_types=("UpDecoderBlock2D",) * 2, sample_size=16)
    text = TorchCLIP(TorchCLIPConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu"))
    for i, module in enumerate((unet, vae, text)):
        _randomize(module, i)
        module.eval()
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    load_tokenizer(None).save(root / "tokenizer")
    DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, steps_offset=1,
                  set_alpha_to_one=False, clip_sample=False).save_pretrained(root / "scheduler")
    return root, unet, vae, text


def _convert(sd_root, out, *extra):
    """Runs the real CLI; returns ``(params, model_config, checkpoint_dir)``."""
    assert convert_main(["sd", "--folder", str(sd_root), "--out", str(out), *extra]) == 0
    return (*checkpoints.load_inference_checkpoint(str(out)), str(out))


@pytest.fixture(scope="module")
def converted(sd_dir, tmp_path_factory):
    """Default conversion (fresh temporal layers): the CLI with no options."""
    return _convert(sd_dir[0], tmp_path_factory.mktemp("ckpt") / "default")


def _latents(seed=0, frames=FRAMES):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((2, frames, LATENT, LATENT, 4)).astype(np.float32)


def _torch_unet_per_frame(unet, z, t, text):
    b, f = z.shape[:2]
    x = torch.from_numpy(z.reshape(b * f, *z.shape[2:]).transpose(0, 3, 1, 2).copy())
    ctx = torch.from_numpy(np.repeat(text, f, axis=0))
    with torch.no_grad():
        out = unet(x, torch.from_numpy(np.repeat(t, f)), encoder_hidden_states=ctx).sample.numpy()
    return out.transpose(0, 2, 3, 1).reshape(z.shape)


@pytest.mark.parametrize("two_d", [True, False], ids=["2d", "fresh_temporal_default_conversion"])
def test_unet_parity_through_converter(sd_dir, converted, tmp_path, two_d):
    """2D path == diffusers per frame; a default conversion (fresh 3D UNet) == diffusers per frame too."""
    root, unet, _, _ = sd_dir
    params, model_config, _ = _convert(root, tmp_path / "c", "--no-temporal") if two_d else converted
    cfg = UNet3DConfig.from_dict(model_config["unet"])
    assert cfg.use_temporal == (not two_d)
    assert (cfg.groupnorm_scope, cfg.temporal_position_embedding) == ("frame", "attention")
    z = _latents()
    t = np.array([10, 700], np.int32)
    text = np.random.default_rng(1).standard_normal((2, 5, 32)).astype(np.float32)
    ours = factory.build("unet", cfg).apply({"params": params["unet"]}, z, t, text)
    _close(ours, _torch_unet_per_frame(unet, z, t, text))


def test_vae_and_text_encoder_parity_through_converter(sd_dir, converted):
    _, _, vae, text = sd_dir
    params, model_config, ckpt_dir = converted
    our_vae = factory.build("vae", factory.config_from_dict("vae", model_config["vae"]))
    x = np.random.default_rng(2).uniform(-1, 1, (FRAMES, 16, 16, 3)).astype(np.float32)
    mean, logvar = our_vae.apply({"params": params["vae"]}, x, method=our_vae.encode)
    with torch.no_grad():
        dist = vae.encode(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).latent_dist
        ref_dec = vae.decode(dist.mean).sample.numpy().transpose(0, 2, 3, 1)
    _close(mean, dist.mean.numpy().transpose(0, 2, 3, 1))
    _close(logvar, dist.logvar.numpy().transpose(0, 2, 3, 1))
    # The fresh temporal decoder (zero last conv) equals the 2D decoder, whatever the number of frames.
    for frames in (1, FRAMES):
        decoded = our_vae.apply({"params": params["vae"]}, mean, num_frames=frames, method=our_vae.decode)
        _close(decoded, ref_dec)

    assert model_config["tokenizer"] == "tokenizer"  # copied into the checkpoint: self-contained
    tokenizer = load_tokenizer(os.path.join(ckpt_dir, model_config["tokenizer"]))
    ids = tokenizer.encode(["a red circle moving left", ""])
    text_cfg = factory.config_from_dict("text_encoder", model_config["text_encoder"])
    ours = factory.build("text_encoder", text_cfg).apply({"params": params["text_encoder"]}, jnp.asarray(ids))
    with torch.no_grad():
        ref = text(torch.from_numpy(ids.astype(np.int64))).last_hidden_state.numpy()
    _close(ours, ref)
    assert model_config["scheduler"]["steps_offset"] == 1


def test_bad_checkpoint_lists_every_problem(sd_dir, tmp_path, capsys):
    root = sd_dir[0]
    bad = tmp_path / "bad"
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        os.symlink(root / part, bad / part if bad.exists() else (bad.mkdir() or bad / part))
    os.unlink(bad / "unet")
    (bad / "unet").mkdir()
    state = load_file(str(root / "unet" / "diffusion_pytorch_model.safetensors"))
    state.pop("conv_in.bias")
    state["conv_out.weight"] = state["conv_out.weight"][:, :3]
    state["extra.weight"] = np.zeros(3, np.float32)
    save_file(state, str(bad / "unet" / "diffusion_pytorch_model.safetensors"))
    os.symlink(root / "unet" / "config.json", bad / "unet" / "config.json")
    with pytest.raises(ConversionError) as info:
        sd_folder.convert_unet(str(bad / "unet"))
    message = str(info.value)
    assert "1 missing" in message and "conv_in.bias" in message
    assert "1 unexpected" in message and "extra.weight" in message
    assert "1 wrong shape" in message and "conv_out.weight" in message
    assert convert_main(["sd", "--folder", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "conv_in.bias" in capsys.readouterr().err
    assert convert_main(["sd", "--folder", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2


def _old_attention_names(state: dict) -> dict:
    inverse = {v: k for k, v in sd_folder._OLD_VAE_ATTENTION.items()}
    out = {}
    for key, value in state.items():
        for new, old in inverse.items():
            if f".attentions.0.{new}." in key:
                key = key.replace(f".attentions.0.{new}.", f".attentions.0.{old}.")
        out[key] = value
    return out


@pytest.fixture(scope="module")
def old_vae_dir(sd_dir, tmp_path_factory):
    """The VAE saved as VidRD's vae_finetuned: pickled ``.bin`` with diffusers-0.14 attention names."""
    folder = tmp_path_factory.mktemp("vae_finetuned")
    vae = sd_dir[2]
    torch.save(_old_attention_names(vae.state_dict()), folder / "diffusion_pytorch_model.bin")
    os.symlink(sd_dir[0] / "vae" / "config.json", folder / "config.json")
    return folder


def test_old_vae_names_and_bin_weights(sd_dir, old_vae_dir, tmp_path):
    assert any(".attentions.0.query." in k for k in load_state_dict(str(old_vae_dir / "diffusion_pytorch_model.bin")))
    old, _ = sd_folder.convert_vae(str(old_vae_dir))
    new, _ = sd_folder.convert_vae(str(sd_dir[0] / "vae"))
    jax.tree.map(np.testing.assert_array_equal, old, new)


class ArbitraryObject:
    """Stands for any non-tensor object a malicious pickle could build."""


def test_pickles_with_python_objects_are_refused(tmp_path):
    path = tmp_path / "evil.bin"
    torch.save({"weight": torch.zeros(2), "obj": ArbitraryObject()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_state_dict(str(path))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy_pickle"])
def test_truncated_torch_file_is_reported_as_damaged_not_unsafe(tmp_path, legacy):
    path = tmp_path / "ModelT2V.pth"
    torch.save({"state_dict": {"unet.w": torch.ones(64, 64)}}, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    for size in (len(data) - 10, len(data) // 2, 10):
        path.write_bytes(data[:size])
        for load in (load_state_dict, load_torch_checkpoint):
            with pytest.raises(ConversionError, match="truncated or corrupt torch checkpoint") as info:
                load(str(path))
            assert str(path) in str(info.value) and "refusing" not in str(info.value)


def test_truncated_safetensors_names_the_file(sd_dir, tmp_path, capsys):
    root = sd_dir[0]
    data = (root / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    bad = tmp_path / "bad"
    bad.mkdir()
    for part in ("vae", "text_encoder", "tokenizer", "scheduler"):
        os.symlink(root / part, bad / part)
    (bad / "unet").mkdir()
    os.symlink(root / "unet" / "config.json", bad / "unet" / "config.json")
    weights = bad / "unet" / "diffusion_pytorch_model.safetensors"
    for size in (len(data) - 10, 100, 4):
        weights.write_bytes(data[:size])
        with pytest.raises(ConversionError, match="truncated or corrupt safetensors file") as info:
            load_state_dict(str(weights))
        assert str(weights) in str(info.value)
    assert convert_main(["sd", "--folder", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "truncated or corrupt" in err and "Traceback" not in err


def test_round_trip_to_diffusers(sd_dir, converted, tmp_path):
    root, unet, vae, text = sd_dir
    params, model_config, ckpt_dir = converted
    out = tmp_path / "back"
    assert convert_main(["to-diffusers", "--checkpoint", ckpt_dir, "--out", str(out)]) == 0
    for cls, folder, original in ((UNet2DConditionModel, "unet", unet), (TorchVAE, "vae", vae),
                                  (TorchCLIP, "text_encoder", text)):
        reloaded = cls.from_pretrained(out / folder)
        ref = original.state_dict()
        got = reloaded.state_dict()
        assert set(got) == set(ref), folder
        for key in ref:
            np.testing.assert_array_equal(got[key].numpy(), ref[key].numpy(), err_msg=f"{folder}: {key}")
    # A default conversion is per-frame SD, not the release: the export says so.
    configs = [factory.config_from_dict(kind, model_config[kind]) for kind in ("unet", "vae")]
    assert [d.split("=")[0] for d in release_differences(*configs)] == [
        "unet.groupnorm_scope", "unet.temporal_position_embedding"]
    # The fresh temporal layers (random init but for their zero last layers) come back with their values.
    for part, name in (("unet", "temporal_layers"), ("vae", "temporal_decoder")):
        exported = load_file(str(out / part / f"{name}.safetensors"))
        source = {k: v for k, v in naming.params_to_state_dict(params[part]).items() if sd_folder.is_temporal_key(k)}
        assert exported and set(exported) == set(source)
        for key, value in source.items():
            np.testing.assert_array_equal(exported[key], value, err_msg=f"{part}: {key}")
    assert DDIMScheduler.from_pretrained(out / "scheduler").config.steps_offset == 1
    assert len(load_tokenizer(str(out))) == 49408


def _random_temporal_state(kind: str, config, seed: int) -> dict[str, torch.Tensor]:
    """Random values for every temporal tensor of ``kind`` (as after training), in PyTorch keys and layout."""
    rng = np.random.default_rng(seed)
    flat = {path: (rng.standard_normal(leaf.shape) * 0.1 + (path[-1] == "scale")).astype(np.float32)
            for path, leaf in naming.flatten_params(factory.abstract_params(kind, config)).items()
            if any(p.startswith("temp_") for p in path)}
    return {k: torch.from_numpy(np.ascontiguousarray(v))
            for k, v in naming.params_to_state_dict(naming.unflatten_params(flat)).items()}


@pytest.fixture(scope="module")
def release(sd_dir, tmp_path_factory):
    """A tiny VidRD release: ModelT2V.pth (Lightning-style: SD 2D weights + trained temporal layers + text encoder)
    and vae_finetuned/ (pickled ``.bin``, diffusers-0.14 attention names, trained Temp-Convs)."""
    root, unet, vae, text = sd_dir
    folder = tmp_path_factory.mktemp("release")
    unet_config = dict(UNet2DConditionModel.load_config(root / "unet"))
    unet_state = {**unet.state_dict(), **_random_temporal_state("unet", UNet3DConfig.from_diffusers(unet_config), 4)}
    vae_state = {**_old_attention_names(vae.state_dict()),
                 **_random_temporal_state("vae", VAEConfig.from_diffusers(vae.config), 5)}
    state = {f"unet.{k}": v for k, v in unet_state.items()}
    state.update({f"text_encoder.{k}": v for k, v in text.state_dict().items()})
    state["text_encoder.text_model.embeddings.position_ids"] = torch.arange(77)[None]  # 4.30 buffer
    state["clip.logit_scale"] = torch.zeros(())  # other prefixes are ignored
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.9.5"},
               folder / "ModelT2V.pth")
    (folder / "vae_finetuned").mkdir()
    torch.save(vae_state, folder / "vae_finetuned" / "diffusion_pytorch_model.bin")
    os.symlink(root / "vae" / "config.json", folder / "vae_finetuned" / "config.json")
    return folder, unet_config, unet_state, vae_state


@pytest.fixture(scope="module")
def release_converted(sd_dir, release, tmp_path_factory):
    """``convert vidrd`` of the tiny release (the CLI), and our UNet / temporal-decoder outputs on fixed inputs."""
    folder = release[0]
    out = tmp_path_factory.mktemp("vidrd_ckpt") / "ckpt"
    assert convert_main(["vidrd", "--checkpoint", str(folder / "ModelT2V.pth"), "--vae", str(folder / "vae_finetuned"),
                         "--sd21", str(sd_dir[0]), "--out", str(out)]) == 0
    params, model_config = checkpoints.load_inference_checkpoint(str(out))
    rng = np.random.default_rng(5)
    z, t = _latents(), np.array([10, 700], np.int32)
    text = rng.standard_normal((2, 5, 32)).astype(np.float32)
    unet_cfg = UNet3DConfig.from_dict(model_config["unet"])
    unet_out = factory.build("unet", unet_cfg).apply({"params": params["unet"]}, z, t, text)
    vae = factory.build("vae", factory.config_from_dict("vae", model_config["vae"]))
    latents = z.reshape(-1, LATENT, LATENT, 4)  # [B·F, h, w, 4], frames inner
    decoded = vae.apply({"params": params["vae"]}, latents, num_frames=FRAMES, method=vae.decode)
    inputs = dict(z=z, t=t, text=text, latents=latents)
    return str(out), params, model_config, inputs, np.asarray(unet_out), np.asarray(decoded)


def _release_unet(state: dict, config: dict, inputs: dict) -> np.ndarray:
    """The release's UNet3D (PyTorch re-statement) on ``inputs``, channels-last."""
    with torch.no_grad():
        out = torch_reference.unet3d(state, config, torch.from_numpy(inputs["z"]).permute(0, 4, 1, 2, 3),
                                     torch.from_numpy(inputs["t"]), torch.from_numpy(inputs["text"]))
    return out.permute(0, 2, 3, 4, 1).numpy()


def _release_decode(vae: torch.nn.Module, temporal: dict, inputs: dict) -> np.ndarray:
    """The release's temporal VAE decoder (diffusers decoder + PyTorch re-statement of its Temp-Convs)."""
    with torch.no_grad():
        out = torch_reference.temporal_vae_decode(vae, temporal, torch.from_numpy(
            inputs["latents"].transpose(0, 3, 1, 2).copy()), FRAMES)
    return out.numpy().transpose(0, 2, 3, 1)


def test_vidrd_release_tiny(sd_dir, release, release_converted, tmp_path):
    """A Lightning-style ModelT2V.pth converts value for value, with the release's model settings, and the whole
    UNet3D and temporal decoder match a PyTorch re-statement of the release's modules."""
    root, _, vae, _ = sd_dir
    _, unet_config, unet_state, vae_state = release
    _, params, model_config, inputs, unet_out, decoded = release_converted
    converted_state = naming.params_to_state_dict(params["unet"])
    assert set(converted_state) == set(unet_state)
    for key, value in unet_state.items():
        np.testing.assert_array_equal(converted_state[key], value.numpy(), err_msg=key)
    unet_cfg = UNet3DConfig.from_dict(model_config["unet"])
    assert unet_cfg.use_temporal and unet_cfg.groupnorm_scope == "clip"
    assert unet_cfg.temporal_position_embedding == "residual"
    assert unet_cfg.norm_num_groups == 8 and unet_cfg.temporal_norm == (32, 1e-5)  # Temp-Conv: GroupNorm(32)
    assert model_config["vae"]["temporal_norm_num_groups"] == 32 and model_config["vae"]["temporal_norm_eps"] == 1e-5

    _close(unet_out, _release_unet(unet_state, unet_config, inputs))
    temporal_vae = {k: v for k, v in vae_state.items() if sd_folder.is_temporal_key(k)}
    _close(decoded, _release_decode(vae, temporal_vae, inputs))

    # Layer by layer, with the converted model's own settings.
    x = np.random.default_rng(5).standard_normal((2, 4, 3, 3, 32)).astype(np.float32)  # [B, F, H, W, C]
    ours = TemporalConv(unet_cfg.temporal_conv_layers, *unet_cfg.temporal_norm, groupnorm_scope="clip").apply(
        {"params": params["unet"]["down_blocks_0"]["temp_convs_0"]}, x)
    ref = torch_reference.temporal_conv(unet_state, "down_blocks.0.temp_convs.0.",
                                        torch.from_numpy(x).permute(0, 4, 1, 2, 3), num_layers=4)
    _close(ours, ref.permute(0, 2, 3, 4, 1).numpy())
    tokens = np.random.default_rng(6).standard_normal((2, 4, 9, 32)).astype(np.float32)  # [B, F, L, C]
    context = np.random.default_rng(7).standard_normal((2, 5, 32)).astype(np.float32)
    block = params["unet"]["down_blocks_0"]["attentions_0"]["transformer_blocks_0"]
    ours = BasicTransformerBlock(heads=2).apply({"params": block}, tokens, context)
    ref = torch_reference.basic_transformer_block(
        unet_state, "down_blocks.0.attentions.0.transformer_blocks.0.", torch.from_numpy(tokens.reshape(8, 9, 32)),
        torch.from_numpy(context), num_frames=4, heads=2)
    _close(ours, ref.numpy().reshape(tokens.shape))

    with pytest.raises(ValueError, match="no 'unet"):
        torch.save({"state_dict": {"vae.x": torch.zeros(1)}}, tmp_path / "empty.pth")
        convert_vidrd_release(str(tmp_path / "empty.pth"), str(release[0] / "vae_finetuned"), str(root))


def test_to_diffusers_exports_every_tensor_and_release_modules_reproduce_our_outputs(sd_dir, release,
                                                                                     release_converted, tmp_path):
    """Export of a converted release: every written tensor (2D and temporal, UNet, VAE, text encoder) equals the
    release's, and the exported folders run in the release's modules (PyTorch) give our model's outputs."""
    _, _, _, text = sd_dir
    _, unet_config, unet_state, vae_state = release
    ckpt, _, model_config, inputs, unet_out, decoded = release_converted
    assert release_differences(*(factory.config_from_dict(kind, model_config[kind]) for kind in ("unet", "vae"))) == []
    out = tmp_path / "back"
    assert convert_main(["to-diffusers", "--checkpoint", ckpt, "--out", str(out)]) == 0

    def exported(part: str, *names: str) -> dict:
        return {k: v for name in names for k, v in load_file(str(out / part / name)).items()}

    vae_source = {sd_folder.vae_key_aliases(vae_state).get(k, k): v for k, v in vae_state.items()}
    # transformers 5 names text-encoder tensors without the ``text_model.`` level that the export writes.
    text_source = {k if k.startswith("text_model.") else f"text_model.{k}": v for k, v in text.state_dict().items()}
    parts = {"unet": (exported("unet", "diffusion_pytorch_model.safetensors", "temporal_layers.safetensors"),
                      unet_state),
             "vae": (exported("vae", "diffusion_pytorch_model.safetensors", "temporal_decoder.safetensors"),
                     vae_source),
             "text_encoder": (exported("text_encoder", "model.safetensors"), text_source)}
    for part, (got, source) in parts.items():
        assert set(got) == set(source), part
        for key, value in source.items():
            np.testing.assert_array_equal(got[key], value.numpy(), err_msg=f"{part}: {key}")

    unet_json = dict(UNet2DConditionModel.load_config(out / "unet"))
    assert {k: unet_json[k] for k in unet_config if k in unet_json and not k.startswith("_")} == {
        k: list(v) if isinstance(v, tuple) else v for k, v in unet_config.items()
        if k in unet_json and not k.startswith("_")}
    unet_export = {k: torch.from_numpy(v) for k, v in parts["unet"][0].items()}
    _close(unet_out, _release_unet(unet_export, unet_json, inputs))
    vae_2d = TorchVAE.from_pretrained(out / "vae").eval()
    temporal_vae = {k: torch.from_numpy(v) for k, v in exported("vae", "temporal_decoder.safetensors").items()}
    _close(decoded, _release_decode(vae_2d, temporal_vae, inputs))


def _table(name: str) -> dict[str, tuple[int, ...]]:
    with open(os.path.join(REFERENCE, name)) as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return {r["key"]: tuple(int(d) for d in r["shape"].split("x")) for r in rows if r["origin"] != "buffer_int64"}


@pytest.mark.parametrize("kind,table,aliases", [
    ("unet", "vidrd_unet3d_keys.tsv", None),
    ("vae", "vidrd_temporal_vae_keys.tsv", sd_folder.vae_key_aliases),
    ("text_encoder", "vidrd_text_encoder_keys.tsv", None),
])
def test_full_size_release_tables_convert_with_nothing_left_over(kind, table, aliases):
    """Every official key and shape (SD-2.1 size) maps one to one onto our tree; no memory is allocated."""
    shapes = _table(table)
    # A distinct constant per tensor, broadcast (zero-stride) so that 1.2B parameters cost nothing.
    state = {key: np.broadcast_to(np.float32(i), shape) for i, (key, shape) in enumerate(shapes.items())}
    config = factory.CONFIG_CLASSES[kind].sd21()
    params, unfilled = naming.state_dict_to_params(
        state, factory.abstract_params(kind, config), key_aliases=aliases(state) if aliases else None)
    assert not unfilled
    index = {key: i for i, key in enumerate(shapes)}
    reverse = {v: k for k, v in (aliases(state) if aliases else {}).items()}
    for path, value in naming.flatten_params(params).items():
        key = naming.flax_path_to_torch_key(path)
        assert float(value.flat[0]) == index[reverse.get(key, key)], key
    assert len(naming.flatten_params(params)) == len(shapes)


def test_summary_matches_reference_totals():
    counts = summary.count_parts(summary.model_configs("sd21"))
    assert counts["unet/2d"] == 865_910_724
    assert counts["unet/temporal_conv"] == 266_891_520
    assert counts["unet/temporal_attention"] == 49_599_040
    assert counts["unet/total"] == 1_182_401_284
    assert counts["vae/encoder"] == 34_163_592 + 72
    assert counts["vae/decoder_2d"] == 49_490_179 + 20
    assert counts["vae/temporal_decoder"] == 16_405_632
    assert counts["vae/total"] == 100_059_495
    assert counts["text_encoder"] == 340_387_840
    assert re.search(r"^unet/total +1,182,401,284$", summary.format_counts(counts), re.M)
