"""FVD: TF1 bilinear resize, the Flax I3D against a PyTorch re-statement (random tiny weights, loaded from a ``.pt``
state dict), its loaders, the float64 Fréchet distance against closed forms and an eigh-based reference, and the
FVD / sliding-window entry points."""
import copy

import jax
import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from tests.numerics import assert_close
from tests.torch_i3d import TorchI3D, random_i3d
from vidrd_jax.convert.naming import ConversionError, flatten_params
from vidrd_jax.evaluate import fvd, i3d
from vidrd_jax.evaluate.resize import interpolation_matrix, resize_bilinear

EPS64 = float(np.finfo(np.float64).eps)
TINY = dict(width=1 / 16, num_classes=6)
# ~22 conv/BN layers in sequence, each a few roundings at the output scale (XLA and PyTorch sum in other orders).
I3D_OPS = 100


@pytest.fixture(scope="module")
def tiny_i3d(tmp_path_factory):
    """(torch model, path of its state dict ``.pt``) with random weights and BN statistics."""
    model = random_i3d(0, logits_pool=(2, 2, 2), **TINY)
    path = str(tmp_path_factory.mktemp("i3d") / "i3d_tiny.pt")
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="module")
def extractor(tiny_i3d):
    """The tiny I3D behind the FVD pipeline: frames resized (TF1) to 32x32, all 8 devices."""
    params = i3d.load_i3d_params(tiny_i3d[1], i3d.I3DConfig(**TINY))
    return fvd.i3d_extractor(params, i3d.I3DConfig(logits_pool=(2, 1, 1), **TINY), batch_size=8, resolution=32)


def _videos(seed: int, n: int, frames: int = 16, size: int = 24, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.uniform(-1, 1, (n, frames, size, size, 3)) * 0.8 + shift, -1, 1).astype(np.float32)


def _tf1_resize_reference(image: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """TF1 ``ResizeBilinear`` (align_corners=False, half_pixel_centers=False), written pixel by pixel from its
    kernel: ``in = out * in_size / out_size``, top-left ``floor(in)``, bottom/right clamped to the last pixel."""
    in_h, in_w = image.shape[:2]
    out = np.zeros((out_h, out_w, image.shape[2]), np.float64)
    for y in range(out_h):
        sy = y * in_h / out_h
        y0 = int(np.floor(sy))
        y1, ly = min(y0 + 1, in_h - 1), sy - y0
        for x in range(out_w):
            sx = x * in_w / out_w
            x0 = int(np.floor(sx))
            x1, lx = min(x0 + 1, in_w - 1), sx - x0
            top = image[y0, x0] + (image[y0, x1] - image[y0, x0]) * lx
            bottom = image[y1, x0] + (image[y1, x1] - image[y1, x0]) * lx
            out[y, x] = top + (bottom - top) * ly
    return out


def test_tf1_resize_to_224_matches_tf_kernel():
    image = np.random.default_rng(0).uniform(-1, 1, (37, 50, 3)).astype(np.float32)
    ours = np.asarray(resize_bilinear(image[None], (224, 224), "tf1"))[0]
    # two interpolations of float32 pixels in [-1, 1]: a few roundings each
    assert_close(ours, _tf1_resize_reference(image.astype(np.float64), 224, 224), ops=8, scale=1.0)
    # shrinking (256 -> 224) samples without antialiasing, as TF1 does
    big = np.random.default_rng(1).uniform(-1, 1, (256, 9, 1)).astype(np.float32)
    assert_close(np.asarray(resize_bilinear(big[None], (224, 9), "tf1"))[0],
                 _tf1_resize_reference(big.astype(np.float64), 224, 9), ops=8, scale=1.0)


def test_tf1_resize_doubling_has_no_half_pixel_shift():
    line = np.arange(5, dtype=np.float32)
    weights = interpolation_matrix(5, 10, "tf1")
    np.testing.assert_array_equal(weights @ line, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4])  # last pixel clamped


def test_align_corners_resize_matches_torch():
    frames = np.random.default_rng(2).uniform(-1, 1, (3, 30, 36, 3)).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2), size=(24, 24), mode="bilinear",
                        align_corners=True).permute(0, 2, 3, 1).numpy()
    # PyTorch forms the source coordinate (up to 35) in float32, so its weights are off by ~35 eps; pixel differences
    # reach 2 and two axes are interpolated: 4 x 36 roundings at scale 1
    assert_close(resize_bilinear(frames, (24, 24), "align_corners"), ref, ops=4 * 36, scale=1.0)


def test_i3d_matches_torch_restatement(tiny_i3d):
    model, path = tiny_i3d
    config = i3d.I3DConfig(logits_pool=(2, 2, 2), **TINY)
    params = i3d.load_i3d_params(path, config)  # the state dict holds num_batches_tracked too: ignored
    # odd sizes exercise the asymmetric SAME padding; 20 frames leave 2 time positions to average
    videos = np.random.default_rng(3).uniform(-1, 1, (2, 20, 48, 40, 3)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(videos).permute(0, 4, 1, 2, 3)).numpy()
    actual = jax.jit(i3d.InceptionI3D(config).apply)({"params": params}, videos)
    assert actual.shape == (2, TINY["num_classes"])
    assert_close(actual, expected, ops=I3D_OPS)


def test_default_i3d_takes_the_full_kinetics_400_state_dict():
    """Every key and shape of the full-size port's state dict (``i3d_pretrained_400.pt``'s layout) fits the default."""
    state = {k: v.numpy() for k, v in TorchI3D().state_dict().items()}
    params = i3d.i3d_params_from_state_dict(state)
    assert params["logits"]["conv3d"]["kernel"].shape == (1, 1, 1, 1024, 400)
    np.testing.assert_array_equal(params["Mixed_4b"]["b1b"]["conv3d"]["kernel"],
                                  state["Mixed_4b.b1b.conv3d.weight"].transpose(2, 3, 4, 1, 0))


def test_i3d_flax_file_round_trip(tiny_i3d, tmp_path):
    config = i3d.I3DConfig(**TINY)
    params = i3d.load_i3d_params(tiny_i3d[1], config)
    path = str(tmp_path / "i3d_k400.flax")
    i3d.save_i3d_flax(params, path)
    again = i3d.load_i3d_params(path, config)
    flat, flat_again = flatten_params(params), flatten_params(again)
    assert flat.keys() == flat_again.keys()
    for key in flat:
        np.testing.assert_array_equal(flat[key], flat_again[key])


def test_i3d_loader_names_every_problem(tiny_i3d, tmp_path):
    state = dict(torch.load(tiny_i3d[1], weights_only=True))
    del state["Mixed_4c.b2b.bn.running_var"]
    state["Mixed_9z.conv3d.weight"] = torch.zeros(1)
    state["logits.conv3d.bias"] = torch.zeros(7)
    path = str(tmp_path / "broken.pt")
    torch.save(state, path)
    with pytest.raises(ConversionError) as err:
        i3d.load_i3d_params(path, i3d.I3DConfig(**TINY))
    message = str(err.value)
    assert "Mixed_4c.b2b.bn.running_var" in message and "Mixed_9z.conv3d.weight" in message
    assert "logits.conv3d.bias: file (7,) vs model (6,)" in message and path in message
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        i3d.load_i3d_params(str(tmp_path / "nowhere.pt"))


def test_i3d_rejects_clips_too_small_for_its_pool(tiny_i3d):
    params = i3d.load_i3d_params(tiny_i3d[1], i3d.I3DConfig(**TINY))
    clip = jax.ShapeDtypeStruct((1, 16, 64, 64, 3), np.float32)
    with pytest.raises(ValueError, match="smaller than the logits pool"):
        jax.eval_shape(i3d.InceptionI3D(i3d.I3DConfig(**TINY)).apply, {"params": params}, clip)


def _spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T / d + 0.1 * np.eye(d)


def _symmetric_sqrt(m: np.ndarray) -> np.ndarray:
    values, vectors = scipy.linalg.eigh(m)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def test_frechet_distance_of_known_gaussians():
    rng = np.random.default_rng(0)
    # commuting (diagonal) covariances: FD = |dmu|² + sum (sqrt a - sqrt b)²
    a, b = rng.uniform(0.1, 3, 5), rng.uniform(0.1, 3, 5)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    ours = fvd.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
    assert abs(ours - closed) <= 100 * EPS64 * (np.sum(a + b) + np.sum((mu1 - mu2) ** 2))
    # general covariances vs the TF-GAN form tr(S1 + S2 - 2 sqrt(sqrt(S1) S2 sqrt(S1))) with eigh square roots
    s1, s2 = _spd(rng, 6), _spd(rng, 6)
    root = _symmetric_sqrt(s1)
    reference = np.trace(s1 + s2 - 2 * _symmetric_sqrt(root @ s2 @ root))
    cond = np.linalg.cond(s1) * np.linalg.cond(s2)
    ours = fvd.frechet_distance(np.zeros(6), s1, np.zeros(6), s2)
    assert abs(ours - reference) <= 100 * EPS64 * cond * np.trace(s1 + s2)
    assert ours > 0.01 * np.trace(s1 + s2)
    assert fvd.frechet_distance(np.zeros(6), s2, np.zeros(6), s1) == pytest.approx(ours, rel=1e-9)
    with pytest.raises(ValueError, match="shapes do not match"):
        fvd.frechet_distance(np.zeros(6), s1, np.zeros(5), s2)


def test_frechet_distance_with_singular_covariances():
    """Fewer samples than features (rank-deficient covariances, as with few videos) still gives the eigh value."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 12)), rng.normal(size=(5, 12)) * 1.5 + 0.3
    sx, sy = fvd.FeatureStats.from_features(x), fvd.FeatureStats.from_features(y)
    root = _symmetric_sqrt(sx.sigma)
    reference = (np.sum((sx.mu - sy.mu) ** 2)
                 + np.trace(sx.sigma + sy.sigma - 2 * _symmetric_sqrt(root @ sy.sigma @ root)))
    ours = fvd.fvd_from_stats(sx, sy)
    # the square roots of the ~0 eigenvalues of a singular product are only good to ~sqrt(eps64) of the scale
    assert abs(ours - reference) <= 12 * np.sqrt(EPS64) * np.trace(sx.sigma + sy.sigma)


def test_feature_stats_fit_and_file(tmp_path):
    features = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    stats = fvd.FeatureStats.from_features(features)
    np.testing.assert_allclose(stats.mu, features.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(features.astype(np.float64).T, ddof=1), rtol=1e-12)
    stats.save(str(tmp_path / "ref.npz"))
    again = fvd.FeatureStats.load(str(tmp_path / "ref.npz"))
    np.testing.assert_array_equal(again.sigma, stats.sigma)
    assert again.n == 30
    np.savez(tmp_path / "bad.npz", mu=stats.mu)
    with pytest.raises(ValueError, match=r"missing \['n', 'sigma'\]"):
        fvd.FeatureStats.load(str(tmp_path / "bad.npz"))


def test_fvd_of_a_set_with_itself_is_zero(extractor):
    real = _videos(0, 12)  # more videos than features: a full-rank covariance
    stats = fvd.video_stats(real, extractor)
    assert stats.n == 12 and stats.mu.shape == (TINY["num_classes"],)
    self_fvd = fvd.compute_fvd(real, real, extractor)
    # identical features: only sqrtm(S @ S) vs S round-off, ~eps64 · cond(S) at the covariance's scale
    values = np.linalg.eigvalsh(stats.sigma)
    assert abs(self_fvd) <= 100 * EPS64 * values[-1] / values[0] * np.trace(stats.sigma)
    other = _videos(1, 12, shift=0.3)
    distance = fvd.compute_fvd(real, other, extractor)
    assert distance > 1e6 * abs(self_fvd) and distance > 0
    assert fvd.compute_fvd(stats, other, extractor) == pytest.approx(distance, rel=1e-12)
    assert fvd.compute_fvd(other, real, extractor) == pytest.approx(distance, rel=1e-6)


def test_extractor_is_resize_then_i3d_in_sharded_batches(extractor, tiny_i3d):
    """11 videos = two batches of 8 over the 8 devices (the second padded) vs PyTorch on the TF1-resized frames."""
    assert extractor.mesh.size == 8 and extractor.batch_size == 8
    videos = _videos(2, 11)
    resize = interpolation_matrix(24, 32, "tf1").astype(np.float64)
    resized = np.einsum("oh,nthwc,pw->nctop", resize, videos, resize).astype(np.float32)  # torch layout
    model = copy.deepcopy(tiny_i3d[0])
    model.logits_pool = (2, 1, 1)
    with torch.no_grad():
        expected = model(torch.from_numpy(resized)).numpy()
    assert_close(extractor(videos), expected, ops=I3D_OPS)
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\].*videos 8\.\.10"):
        extractor(np.concatenate([videos[:8], videos[8:] * 2]))
    with pytest.raises(ValueError, match=r"\[N, T, H, W, 3\]"):
        extractor(videos[..., :2])


def test_long_video_fvd_options(extractor):
    videos = _videos(3, 3, frames=136)
    feats_128 = extractor(fvd.select_frames(videos, 128))  # StyleGAN-V's FVD_128: 15 time positions averaged
    assert feats_128.shape == (3, TINY["num_classes"])
    assert np.max(np.abs(feats_128 - extractor(videos[:, :16]))) > 1e-3 * np.max(np.abs(feats_128))
    strided = fvd.select_frames(videos, 16, frame_stride=8, start=1)
    np.testing.assert_array_equal(strided, videos[:, 1:122:8])
    with pytest.raises(ValueError, match="136 frames; 128 frames every 2 from frame 0 need 255"):
        fvd.compute_fvd(videos, videos, extractor, num_frames=128, frame_stride=2)


def test_sliding_window_fvd(extractor):
    long_videos = _videos(4, 10, frames=32)
    long_videos[:, 16:] = _videos(5, 10, shift=-0.3)  # the second half drifts
    windows = fvd.sliding_window_fvd(long_videos, long_videos[:, :16], extractor, window=16, stride=8)
    assert [w["start"] for w in windows] == [0, 8, 16]
    ref_stats = fvd.video_stats(long_videos, extractor)
    expected = fvd.compute_fvd(ref_stats, long_videos[:, 16:], extractor)
    assert windows[2]["fvd"] == pytest.approx(expected, rel=1e-12)
    # the reference is the first window: FVD ~0 there, growing as the windows move into the drifted half
    assert abs(windows[0]["fvd"]) < 1e-6 * windows[1]["fvd"] and windows[1]["fvd"] < windows[2]["fvd"]
    with pytest.raises(ValueError, match="window <= 32 frames"):
        fvd.sliding_window_fvd(long_videos, ref_stats, extractor, window=40)
