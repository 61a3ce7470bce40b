"""Fréchet Video Distance (Unterthiner et al. 2018): Fréchet distance between Gaussians fitted to I3D features.

Pipeline (the google-research ``frechet_video_distance.py`` reference, as StyleGAN-V's ``i3d_torchscript`` reproduces
it): videos ``[N, F, H, W, 3]`` in [-1, 1] (values outside [-1.001, 1.001] are refused, as the reference asserts)
-> ``num_frames`` frames (16: the standard FVD; 128: StyleGAN-V's long-video FVD_128), every ``frame_stride``-th from
``start`` -> TF1 bilinear resize to 224x224 (:mod:`.resize`, ``half_pixel_centers=False``) -> Kinetics-400 I3D
(:mod:`.i3d`) -> the 400 time-averaged logits per video.

Statistics and distance, in float64 numpy: ``mu`` = feature mean, ``sigma`` = unbiased covariance (``N - 1``, as
TF-GAN's ``frechet_classifier_distance_from_activations``; StyleGAN-V divides by ``N``), and
``FD = |mu1 - mu2|² + tr(S1 + S2 - 2 sqrtm(S1 S2))`` with ``scipy.linalg.sqrtm`` (as pytorch-fid / StyleGAN's metric
code): if the square root is not finite (a singular product, e.g. fewer videos than 400 features) ``eps·I`` is added to
both covariances and it is retried; an imaginary part from round-off is dropped when the diagonal's is below 1e-3,
else it is an error naming its size. Use at least a few hundred videos per set (2048 in StyleGAN-V) for a stable value.

:class:`FeatureExtractor` runs a detector jitted over fixed-size batches whose batch axis is split over the devices of
a ``("data",)`` mesh (:class:`~vidrd_jax.evaluate.features.ShardedApply`; single process: the host holds the inputs).
:func:`sliding_window_fvd` scores ``window``-frame windows every ``stride`` frames along long videos against one
reference set, showing whether quality drifts over a long video.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Callable

import jax
import numpy as np
import scipy.linalg
from jax.sharding import Mesh

from vidrd_jax.evaluate import i3d
from vidrd_jax.evaluate.features import ShardedApply
from vidrd_jax.evaluate.resize import apply_resized

I3D_RESOLUTION = 224
VALUE_LIMIT = 1.001  # the reference's tf.Assert bounds on [-1, 1] inputs
SQRTM_IMAG_ATOL = 1e-3


def select_frames(videos: np.ndarray, num_frames: int, frame_stride: int = 1, start: int = 0) -> np.ndarray:
    """``videos[:, start : start + num_frames·frame_stride : frame_stride]``; a clear error when too short."""
    videos = np.asarray(videos)
    if videos.ndim != 5 or videos.shape[-1] != 3:
        raise ValueError(f"videos must be [N, F, H, W, 3], got shape {videos.shape}")
    if num_frames < 1 or frame_stride < 1 or start < 0:
        raise ValueError(f"need num_frames >= 1, frame_stride >= 1, start >= 0; got {num_frames}, {frame_stride}, "
                         f"{start}")
    stop = start + (num_frames - 1) * frame_stride + 1
    if videos.shape[1] < stop:
        raise ValueError(f"videos have {videos.shape[1]} frames; {num_frames} frames every {frame_stride} from frame "
                         f"{start} need {stop}")
    return videos[:, start:stop:frame_stride]


class FeatureExtractor:
    """``extractor(videos [N, T, H, W, 3] in [-1, 1]) -> float32 [N, D]``: ``model_fn(params, batch)`` (its own
    preprocessing included), jitted, in batches of ``batch_size`` (rounded up to a multiple of the device count)
    split over ``mesh`` (default: all devices)."""

    def __init__(self, model_fn: Callable[[Any, jax.Array], jax.Array], params: Any, *, batch_size: int = 16,
                 mesh: Mesh | None = None, name: str = "detector"):
        self.name = name
        self._apply = ShardedApply(model_fn, params, batch_size, mesh)

    @property
    def batch_size(self) -> int:
        return self._apply.batch_size

    @property
    def mesh(self) -> Mesh:
        return self._apply.mesh

    def __call__(self, videos: np.ndarray) -> np.ndarray:
        """Features of ``videos`` (any sliceable array, e.g. a memmap: read one batch at a time)."""
        if len(getattr(videos, "shape", ())) != 5 or videos.shape[-1] != 3 or not len(videos):
            raise ValueError(f"{self.name}: videos must be a non-empty [N, T, H, W, 3] array, got "
                             f"{getattr(videos, 'shape', type(videos).__name__)}")
        step, features = self.batch_size, []
        for start in range(0, len(videos), step):
            chunk = np.asarray(videos[start:start + step], np.float32)
            peak = float(np.max(np.abs(chunk)))
            if not peak <= VALUE_LIMIT:
                raise ValueError(f"{self.name}: video values must lie in [-1, 1], got max |x| = {peak:.4g} in videos "
                                 f"{start}..{start + len(chunk) - 1}")
            features.append(self._apply(chunk))
        return np.concatenate(features)


def i3d_extractor(params: i3d.Params, config: i3d.I3DConfig = i3d.I3DConfig(), *, batch_size: int = 16,
                  mesh: Mesh | None = None, resolution: int = I3D_RESOLUTION) -> FeatureExtractor:
    """The FVD detector: TF1 bilinear resize to ``resolution`` (224 for FVD) -> :class:`~.i3d.InceptionI3D`."""
    model = i3d.InceptionI3D(config)
    fn = functools.partial(apply_resized, lambda p, x: model.apply({"params": p}, x), resolution, "tf1")
    return FeatureExtractor(fn, params, batch_size=batch_size, mesh=mesh, name="I3D")


def load_i3d_extractor(path: str, *, batch_size: int = 16, mesh: Mesh | None = None) -> FeatureExtractor:
    """The Kinetics-400 FVD detector from ``i3d_pretrained_400.pt`` or ``i3d_k400.flax``."""
    return i3d_extractor(i3d.load_i3d_params(path), batch_size=batch_size, mesh=mesh)


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit of a feature set: mean ``mu [D]``, unbiased covariance ``sigma [D, D]`` (float64), count ``n``."""
    mu: np.ndarray
    sigma: np.ndarray
    n: int

    @classmethod
    def from_features(cls, features: np.ndarray) -> "FeatureStats":
        features = np.asarray(features, np.float64)
        if features.ndim != 2 or len(features) < 2:
            raise ValueError(f"feature statistics need [N >= 2, D] features, got shape {features.shape}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1:] * 2),
                   len(features))

    def save(self, path: str) -> None:
        """Writes ``mu``, ``sigma`` and ``n`` to an ``.npz`` (e.g. a reference set's statistics, computed once)."""
        np.savez(path, mu=self.mu, sigma=self.sigma, n=np.int64(self.n))

    @classmethod
    def load(cls, path: str) -> "FeatureStats":
        if not os.path.isfile(path):
            raise FileNotFoundError(f"feature statistics file not found: {path}")
        with np.load(path, allow_pickle=False) as data:
            missing = sorted({"mu", "sigma", "n"} - set(data.files))
            if missing:
                raise ValueError(f"{path}: not a feature statistics file, missing {missing}")
            mu, sigma, n = data["mu"].astype(np.float64), data["sigma"].astype(np.float64), int(data["n"])
        if mu.ndim != 1 or sigma.shape != mu.shape * 2:
            raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not match")
        return cls(mu, sigma, n)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """``|mu1 - mu2|² + tr(S1 + S2 - 2 sqrtm(S1 S2))`` in float64 (module docstring: singular and complex cases)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or mu1.ndim != 1 or sigma1.shape != mu1.shape * 2 or sigma2.shape != sigma1.shape:
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape}, {mu2.shape}; "
                         f"sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(len(mu1)) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imag > SQRTM_IMAG_ATOL:
            raise ValueError(f"frechet_distance: sqrtm(S1 S2) has an imaginary diagonal component of {imag:.3g} "
                             f"(> {SQRTM_IMAG_ATOL}); the covariances are too ill-conditioned")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def fvd_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """The Fréchet distance of two fitted feature sets."""
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)


def video_stats(videos: np.ndarray, extractor: FeatureExtractor, *, num_frames: int = 16, frame_stride: int = 1,
                start: int = 0) -> FeatureStats:
    """Features of ``num_frames`` frames (every ``frame_stride``-th from ``start``) of each video, fitted."""
    return FeatureStats.from_features(extractor(select_frames(videos, num_frames, frame_stride, start)))


def compute_fvd(real_videos: np.ndarray | FeatureStats, fake_videos: np.ndarray, extractor: FeatureExtractor, *,
                num_frames: int = 16, frame_stride: int = 1) -> float:
    """FVD between two video sets ``[N, F, H, W, 3]`` in [-1, 1] on their first ``num_frames`` frames (16, or 128 for
    long videos) taken every ``frame_stride``; ``real_videos`` may be precomputed :class:`FeatureStats`."""
    real = real_videos if isinstance(real_videos, FeatureStats) else video_stats(
        real_videos, extractor, num_frames=num_frames, frame_stride=frame_stride)
    return fvd_from_stats(real, video_stats(fake_videos, extractor, num_frames=num_frames, frame_stride=frame_stride))


def sliding_window_fvd(long_videos: np.ndarray, reference: np.ndarray | FeatureStats, extractor: FeatureExtractor, *,
                       window: int = 16, stride: int = 16) -> list[dict[str, float]]:
    """FVD of every ``window``-frame window (starts ``0, stride, …``) of ``long_videos [N, L, H, W, 3]`` against
    ``reference`` (videos, whose first ``window`` frames are used, or their :class:`FeatureStats`).

    Returns ``[{"start": s, "fvd": value}, …]`` in order of ``s``.
    """
    long_videos = np.asarray(long_videos)
    if long_videos.ndim != 5:
        raise ValueError(f"long_videos must be [N, L, H, W, 3], got shape {long_videos.shape}")
    if window < 1 or stride < 1 or long_videos.shape[1] < window:
        raise ValueError(f"sliding_window_fvd: need 1 <= window <= {long_videos.shape[1]} frames and stride >= 1, "
                         f"got window={window}, stride={stride}")
    ref = reference if isinstance(reference, FeatureStats) else video_stats(reference, extractor, num_frames=window)
    return [{"start": start, "fvd": fvd_from_stats(ref, video_stats(long_videos, extractor, num_frames=window,
                                                                     start=start))}
            for start in range(0, long_videos.shape[1] - window + 1, stride)]
