"""Video Inception Score: the Flax C3D against a PyTorch re-statement of TGANv2's Chainer model (random tiny weights
in TGANv2's npz layout), its loader, cover-all pooling, and the score against closed forms and scipy."""
import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from tests.numerics import assert_close
from tests.torch_c3d import c3d_logits, random_c3d_npz
from vidrd_jax.convert.naming import ConversionError
from vidrd_jax.evaluate import c3d, inception_score as inception
from vidrd_jax.evaluate.fvd import select_frames

# 56 -> 28 -> 14 -> 7 -> 4 (a partial last window) -> 2 spatially, 16 -> 1 in time: fc6 sees 32 channels x 1 x 2 x 2,
# so the (C, T, H, W) flattening order matters
TINY = c3d.C3DConfig(width=1 / 16, fc_dim=24, num_classes=10, resolution=56)


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """(weights dict, mean, weights path, mean path) of a random tiny C3D in TGANv2's npz layout."""
    weights, mean = random_c3d_npz(0, TINY.width, TINY.fc_dim, TINY.num_classes, TINY.resolution, fc6_in=128)
    folder = tmp_path_factory.mktemp("c3d")
    np.savez(folder / "conv3d_tiny.npz", **weights)
    np.savez(folder / "mean_tiny.npz", mean=mean)
    return weights, mean, str(folder / "conv3d_tiny.npz"), str(folder / "mean_tiny.npz")


def test_default_c3d_is_tgan2_ucf101_network():
    shapes = {k: {leaf: v.shape for leaf, v in d.items()} if isinstance(d, dict) else d.shape
              for k, d in c3d.abstract_c3d_params().items()}
    assert shapes["conv1a"]["kernel"] == (3, 3, 3, 3, 64)
    assert shapes["conv5b"]["kernel"] == (3, 3, 3, 512, 512)
    assert shapes["fc6"]["kernel"] == (512 * 4 * 4, 4096)  # pool5's cover_all turns 7x7 into 4x4
    assert shapes["fc8"]["kernel"] == (4096, 101)
    assert shapes["mean"] == (16, 112, 112, 3)


def test_max_pool_cover_all_matches_torch_ceil_mode():
    x = np.random.default_rng(0).normal(size=(2, 5, 7, 6, 3)).astype(np.float32)
    ours = np.asarray(c3d.max_pool_cover_all(x, (2, 2, 2)))
    ref = torch.nn.functional.max_pool3d(torch.from_numpy(x).permute(0, 4, 1, 2, 3), 2, 2, ceil_mode=True)
    assert ours.shape == (2, 3, 4, 3, 3)
    np.testing.assert_array_equal(ours, ref.permute(0, 2, 3, 4, 1).numpy())


def test_c3d_and_video_is_match_torch_restatement(tiny_files):
    weights, mean, weights_path, mean_path = tiny_files
    extractor = inception.c3d_extractor(c3d.load_c3d_params(weights_path, mean_path, TINY), TINY, batch_size=8)
    videos = np.random.default_rng(1).uniform(-1, 1, (5, 20, 20, 26, 3)).astype(np.float32)
    clips = select_frames(videos, 16, start=2)
    with torch.no_grad():
        expected = c3d_logits(weights, mean, torch.from_numpy(clips).permute(0, 4, 1, 2, 3), TINY.resolution).numpy()
    logits = extractor(clips)
    # PyTorch's resize forms source coordinates (up to 25) in float32 (~25 eps on the weights, pixels up to 256,
    # i.e. 2x the [-1, 1] scale after x128), then 11 conv/dense layers at the logits' scale: 4 x 26 + 11 x 8
    assert_close(logits, expected, ops=4 * 26 + 11 * 8)
    score, spread = inception.video_inception_score(videos, extractor, start=2)
    assert (score, spread) == pytest.approx(inception.inception_score(scipy.special.softmax(
        expected.astype(np.float64), axis=1)), rel=1e-4)
    assert 1.0 < score < TINY.num_classes and spread == 0.0
    with pytest.raises(ValueError, match=r"C3D: expected clips \[B, 16, 56, 56, 3\]"):
        inception.video_inception_score(videos, extractor, num_frames=8)


def test_c3d_loader_names_every_problem(tiny_files, tmp_path):
    weights, mean, _, mean_path = tiny_files
    broken = dict(weights)
    del broken["conv4a/b"]
    broken["conv9/W"] = np.zeros(1, np.float32)
    broken["fc8/W"] = np.zeros((7, TINY.fc_dim), np.float32)
    np.savez(tmp_path / "broken.npz", **broken)
    np.savez(tmp_path / "small_mean.npz", mean=mean[:, :, :20])
    with pytest.raises(ConversionError) as err:
        c3d.load_c3d_params(str(tmp_path / "broken.npz"), str(tmp_path / "small_mean.npz"), TINY)
    message = str(err.value)
    assert "conv4a/b" in message and "conv9/W" in message and "fc8/W: file (7, 24)" in message
    assert "mean (3, 16, 20, 76), need (3, 16, >=64, >=64)" in message
    np.savez(tmp_path / "prefixed.npz", **{f"predictor/{k}": v for k, v in weights.items()})
    params = c3d.load_c3d_params(str(tmp_path / "prefixed.npz"), mean_path, TINY, prefix="predictor/")
    np.testing.assert_array_equal(params["fc7"]["kernel"], weights["fc7/W"].T)
    np.testing.assert_array_equal(params["mean"][3, 5, 7], mean[:, 3, 13, 15])  # BGR, cropped at [8:, 8:]
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        c3d.load_c3d_params(str(tmp_path / "nowhere.npz"), mean_path, TINY)


def test_inception_score_of_known_posteriors():
    k = 7
    one_hot = np.eye(k)[np.arange(70) % k]  # confident and evenly spread: IS = k
    assert inception.inception_score(one_hot)[0] == pytest.approx(k, rel=1e-12)
    same = np.tile(np.random.default_rng(0).dirichlet(np.ones(k)), (40, 1))  # one posterior for all: IS = 1
    assert inception.inception_score(same)[0] == pytest.approx(1.0, abs=1e-12)
    probs = np.random.default_rng(1).dirichlet(np.full(k, 0.3), size=60)
    parts = np.array_split(probs, 3)  # 60 / 3: the same cut as i*n//splits
    per_part = [np.exp(np.mean(scipy.stats.entropy(p.T, p.mean(0)[:, None]))) for p in parts]
    mean, std = inception.inception_score(probs, splits=3)
    assert mean == pytest.approx(np.mean(per_part), rel=1e-9) and std == pytest.approx(np.std(per_part), rel=1e-9)
    assert 1 < mean < k and std > 0
    with pytest.raises(ValueError, match="splits must be in"):
        inception.inception_score(probs, splits=61)
