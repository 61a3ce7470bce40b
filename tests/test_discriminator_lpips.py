"""The 3-D patch discriminator and the LPIPS loader/network used by the decoder fine-tuning (paper §4.4, eq. 9).

LPIPS weights are random tensors written in the documented layouts (torchvision ``vgg16-*.pth`` + the ``lpips``
package's ``vgg.pth``, and the safetensors equivalents) and checked against a PyTorch re-implementation.
"""
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.torch
import torch
import torch.nn.functional as F
from numerics import assert_close

from vidrd_jax import train_config, train_state
from vidrd_jax.config_loading import load_config
from vidrd_jax.models import lpips
from vidrd_jax.models.discriminator import (DiscriminatorConfig, PatchDiscriminator3D, clip_accuracy,
                                            generator_loss, hinge_d_loss)
from vidrd_jax.tasks.vae_temporal import VAETemporalTask

CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "vae_temporal.py"


def _random_state_dicts(seed: int = 0) -> tuple[dict, dict]:
    gen = torch.Generator().manual_seed(seed)
    vgg, cin = {}, 3
    for i, cout in lpips.VGG16_CONVS:
        vgg[f"features.{i}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * (2.0 / (9 * cin)) ** 0.5
        vgg[f"features.{i}.bias"] = torch.randn(cout, generator=gen) * 0.01
        cin = cout
    vgg["classifier.6.bias"] = torch.zeros(10)  # torchvision's file also holds the classifier: ignored
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=gen)
             for k, c in enumerate(lpips.LPIPS_CHANNELS)}
    return vgg, heads


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    vgg, heads = _random_state_dicts()
    pth = tmp_path_factory.mktemp("lpips_pth")
    torch.save(vgg, pth / "vgg16-397923af.pth")
    torch.save(heads, pth / "vgg.pth")
    st = tmp_path_factory.mktemp("lpips_safetensors")
    safetensors.torch.save_file(vgg, str(st / "vgg16.safetensors"))
    safetensors.torch.save_file(heads, str(st / "vgg.safetensors"))
    return {"pth": str(pth), "safetensors": str(st), "vgg": vgg, "heads": heads,
            "params": lpips.load_lpips_params(str(pth))}


def _torch_lpips(vgg: dict, heads: dict, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Reference LPIPS (lpips package semantics) on NHWC numpy images in [-1, 1]."""
    shift = torch.tensor(lpips.SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(lpips.SCALE).view(1, 3, 1, 1)

    def features(img):
        h = (torch.from_numpy(img).permute(0, 3, 1, 2) - shift) / scale
        taps = []
        for k, block in enumerate(((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))):
            if k:
                h = F.max_pool2d(h, 2, 2)
            for i in block:
                h = F.relu(F.conv2d(h, vgg[f"features.{i}.weight"], vgg[f"features.{i}.bias"], padding=1))
            taps.append(h / (torch.sqrt(torch.sum(h ** 2, dim=1, keepdim=True)) + 1e-10))
        return taps

    with torch.no_grad():
        total = 0
        for k, (a, b) in enumerate(zip(features(x), features(y))):
            total = total + F.conv2d((a - b) ** 2, heads[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total.numpy()


def test_lpips_distance_properties_and_torch_parity(weights):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (3, 32, 32, 3)).astype(np.float32)
    y = np.clip(x + 0.3 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    dist = jax.jit(lpips.lpips_distance)
    params = weights["params"]
    d_xy, d_yx, d_xx = (np.asarray(dist(params, jnp.asarray(a), jnp.asarray(b))) for a, b in ((x, y), (y, x), (x, x)))
    assert d_xx.shape == (3,) and np.all(d_xx == 0.0)
    assert np.all(d_xy > 0)
    # VGG16 to conv5_3 and the heads: 18 layers, ~40 roundings each (3x3xC sums accumulated in blocks, ReLU, pooling)
    assert_close(d_yx, d_xy, ops=18 * 40)
    assert_close(d_xy, _torch_lpips(weights["vgg"], weights["heads"], x, y), ops=18 * 40)


def test_lpips_safetensors_layout_loads_the_same(weights):
    other = lpips.load_lpips_params(weights["safetensors"])
    jax.tree.map(np.testing.assert_array_equal, other, weights["params"])
    shapes = lpips.abstract_lpips_params()
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(np.shape, other)


def test_lpips_missing_or_wrong_files_raise(tmp_path, weights):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        lpips.load_lpips_params(str(tmp_path / "nowhere"))
    torch.save(weights["heads"], tmp_path / "vgg.pth")
    with pytest.raises(FileNotFoundError, match="VGG16 backbone"):
        lpips.load_lpips_params(str(tmp_path))
    (tmp_path / "vgg.pth").unlink()
    torch.save(weights["vgg"], tmp_path / "vgg16-397923af.pth")
    with pytest.raises(FileNotFoundError, match="LPIPS linear heads"):
        lpips.load_lpips_params(str(tmp_path))
    heads = dict(weights["heads"])
    heads["lin2.model.1.weight"] = torch.zeros(1, 7, 1, 1)
    del heads["lin4.model.1.weight"]
    torch.save(heads, tmp_path / "vgg.pth")
    with pytest.raises(ValueError, match=r"lin2\.model\.1\.weight has shape.*missing lin4"):
        lpips.load_lpips_params(str(tmp_path))
    with pytest.raises(ValueError, match="at least 16x16"):
        lpips.lpips_distance(weights["params"], jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))


def test_discriminator_shapes_and_temporal_receptive_field():
    cfg = DiscriminatorConfig(base_channels=8, num_layers=2, num_groups=4)
    disc = PatchDiscriminator3D(cfg)
    x = jax.random.uniform(jax.random.key(0), (2, 6, 24, 32, 3), minval=-1, maxval=1)
    params = nn.meta.unbox(jax.jit(disc.init)(jax.random.key(1), x)["params"])
    apply = jax.jit(lambda p, v: disc.apply({"params": p}, v))
    logits = apply(params, x)
    assert logits.shape == (2, 6, cfg.logits_size(24), cfg.logits_size(32)) == (2, 6, 4, 6)
    assert logits.dtype == jnp.float32
    # Clips are judged independently (GroupNorm statistics are per clip).
    changed = apply(params, x.at[0, 0].set(-x[0, 0]))
    assert np.abs(np.asarray(changed - logits))[0].max() > 0
    np.testing.assert_array_equal(changed[1], logits[1])
    # Frame order matters to the 3-D discriminator; with temporal_kernel=1 (a per-frame PatchGAN) reordering the
    # frames only reorders the logits.
    order = jnp.array([3, 0, 5, 1, 4, 2])
    assert not np.allclose(apply(params, x[:, order]), logits[:, order], atol=1e-4)
    flat = PatchDiscriminator3D(DiscriminatorConfig(base_channels=8, num_layers=2, num_groups=4, temporal_kernel=1))
    flat_apply = jax.jit(lambda v: flat.apply(flat.init(jax.random.key(1), x), v))
    assert_close(flat_apply(x[:, order]), flat_apply(x)[:, order], ops=4 * 40)  # 4 layers, as above
    with pytest.raises(ValueError, match="num_layers=2: a 8x8 input leaves no patch logits"):
        disc.apply({"params": params}, jnp.zeros((1, 2, 8, 8, 3)))
    with pytest.raises(ValueError, match="temporal_kernel"):
        DiscriminatorConfig(temporal_kernel=2)
    assert DiscriminatorConfig().logits_size(256) == 30  # LDM's NLayerDiscriminator on 256x256
    kernel = params["conv_0"]["kernel"]
    assert kernel.shape == (3, 4, 4, 3, 8)


def test_hinge_losses_and_accuracy():
    real = jnp.array([[2.0, 0.5], [-1.0, -3.0]])
    fake = jnp.array([[-2.0, 0.0], [1.5, 0.5]])
    # relu(1 - real) = [0, .5, 2, 4] -> 1.625; relu(1 + fake) = [0, 1, 2.5, 1.5] -> 1.25
    assert float(hinge_d_loss(real, fake)) == pytest.approx(0.5 * (1.625 + 1.25))
    assert float(generator_loss(fake)) == pytest.approx(0.0)
    # clip means: real [1.25, -2] -> 1 of 2 right; fake [-1, 1] -> 1 of 2 right
    assert float(clip_accuracy(real, fake)) == pytest.approx(0.5)
    assert float(clip_accuracy(jnp.ones((3, 2)), -jnp.ones((3, 2)))) == 1.0


def test_vae_temporal_task_uses_lpips_as_a_frozen_part_of_the_reconstruction_loss(weights):
    config = load_config(f"{CONFIG_FILE}:demo")
    config.loss.lpips_dir = weights["safetensors"]
    train_config.validate_config(config)
    task = VAETemporalTask(config)
    shapes, specs = task.abstract_params()
    assert set(shapes) == {"vae", "discriminator", "lpips"} and set(specs) == set(shapes)
    labels = task.param_labels(shapes)
    assert {labels[p] for p in labels if p.startswith("lpips/")} == {train_state.FROZEN}
    assert jax.eval_shape(task.init_params, jax.random.key(0)) == shapes
    jax.tree.map(np.testing.assert_array_equal, task.lpips_params, weights["params"])
    params = {"lpips": task.lpips_params}  # all the reconstruction loss reads
    video = jax.random.uniform(jax.random.key(1), (2, 3, 16, 16, 3), minval=-1, maxval=1)
    loss = jax.jit(task.reconstruction_loss)
    same, same_metrics = loss(params, video, video)
    other, metrics = loss(params, video, video[:, ::-1])
    assert abs(float(same)) < 1e-6 and abs(float(same_metrics["lpips"])) < 1e-6
    assert float(metrics["lpips"]) > 0
    assert float(other) == pytest.approx(float(metrics["l1"] + config.loss.perceptual_weight * metrics["lpips"]))
