"""Sharded sampling on 8 fake CPU devices: co-denoising windows split over devices (shard_map + psum, eq. 19) and a
batch of videos split over the ``data`` axis give the single-device result."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec
from numerics import assert_close

from vidrd_jax.diffusion import CoDenoiseConfig, LongVideoConfig, NoiseSchedule, co_denoise_sample
from vidrd_jax.parallel import create_mesh
from vidrd_jax.pipeline import VideoPipeline

SCHEDULE = NoiseSchedule()
STEP_OPS = 28  # as tests/test_co_denoise.py: denoiser ~12, DDIM update ~12, weighted merge ~4
MERGE_OPS = 8  # the psum re-associates each frame's sum over its (<= K/S + 1) windows: a few more roundings per step


def mixing_denoiser(z, t, cond):
    """Frames of a window mix (mean over frames), so a window's result depends on which frames it holds."""
    frames = jnp.arange(z.shape[1], dtype=z.dtype)[None, :, None, None, None]
    return 0.2 * z + 0.1 * jnp.mean(z, axis=1, keepdims=True) + 0.05 * frames + cond["bias"] * (t / 1000.0)


def config(num_frames, **overrides):
    return CoDenoiseConfig(**{**dict(prompts=("a", "b", "c"), num_frames=num_frames, window_size=4, stride=2,
                                     num_steps=4, weighting="pyramid"), **overrides})


CONDS = [{"bias": jnp.float32(v)} for v in (0.3, -0.2, 1.0)]


@pytest.mark.parametrize("num_frames,chunk", [(18, None), (12, None), (12, 2)])  # 8 windows; 5 (pad to 8); 5 in
def test_windows_over_devices_equal_single_device(num_frames, chunk):  # chunks of 2 (pad to 16)
    cfg = config(num_frames, window_chunk_size=chunk)
    latents = jax.random.normal(jax.random.key(0), (2, num_frames, 4, 4, 4))
    single = np.asarray(co_denoise_sample(mixing_denoiser, SCHEDULE, cfg, CONDS, latents=latents))
    mesh = create_mesh({"data": -1})
    sharded = co_denoise_sample(mixing_denoiser, SCHEDULE, cfg, CONDS, latents=latents, window_mesh=mesh)
    assert_close(sharded, single, ops=4 * (STEP_OPS + MERGE_OPS))
    assert not np.allclose(single[:, :4], single[:, -4:], atol=1e-2)  # frames really differ: a misplaced window shows


def test_window_axis_must_be_a_mesh_axis():
    mesh = create_mesh({"data": -1})
    with pytest.raises(ValueError, match="window_axis='model'"):
        co_denoise_sample(mixing_denoiser, SCHEDULE, config(12), CONDS,
                          latents=jnp.zeros((1, 12, 4, 4, 4)), window_mesh=mesh, window_axis="model")


def test_co_denoise_batch_over_data_equals_single_device():
    cfg = config(12)
    latents = jax.random.normal(jax.random.key(1), (8, 12, 4, 4, 4))
    single = np.asarray(co_denoise_sample(mixing_denoiser, SCHEDULE, cfg, CONDS, latents=latents))
    mesh = create_mesh({"data": -1})
    placed = jax.device_put(latents, NamedSharding(mesh, PartitionSpec("data")))
    sharded = co_denoise_sample(mixing_denoiser, SCHEDULE, cfg, CONDS, latents=placed)
    assert sharded.sharding.is_equivalent_to(NamedSharding(mesh, PartitionSpec("data")), 5)
    assert [s.data.shape[0] for s in sharded.addressable_shards] == [1] * 8
    assert_close(sharded, single, ops=4 * STEP_OPS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from vidrd_jax import make_tiny_checkpoint

    out = tmp_path_factory.mktemp("tiny_ckpt")
    assert make_tiny_checkpoint.main(["--out", str(out), "--seed", "0"]) == 0
    return str(out)


PROMPTS = [[f"prompt {i}"] for i in range(8)]
DATA = PartitionSpec("data")


def _sampled_latents(pipe, mode, monkeypatch):
    """Runs the pipeline on 8 prompts; returns the latents it hands the decoder (per clip), checking their sharding."""
    seen = []
    monkeypatch.setattr(pipe, "decode_clip", lambda latents, num_frames=None: seen.append(latents) or np.zeros(1))
    if mode == "vidrd":
        cfg = LongVideoConfig(prompts=("x",), num_clips=2, num_frames=4, num_prompt_frames=2, num_steps=2,
                              guidance_scale=3.0)
        list(pipe.generate_long_video(cfg, key=jax.random.key(3), height=32, width=32, prompts=PROMPTS))
    else:
        cfg = CoDenoiseConfig(prompts=("x",), num_frames=6, window_size=4, stride=2, num_steps=2, guidance_scale=3.0)
        list(pipe.co_denoise(cfg, key=jax.random.key(3), height=32, width=32, prompts=PROMPTS, decode_frames=6))
    return seen


@pytest.mark.parametrize("mode", ["vidrd", "codenoise"])
def test_pipeline_batch_over_data_equals_single_device(checkpoint, mode, monkeypatch):
    mesh = create_mesh({"data": -1})
    single = _sampled_latents(VideoPipeline.from_checkpoint(checkpoint), mode, monkeypatch)
    sharded = _sampled_latents(VideoPipeline.from_checkpoint(checkpoint, mesh=mesh), mode, monkeypatch)
    assert len(sharded) == len(single) >= 1
    for got, want in zip(sharded, single):
        assert got.sharding.is_equivalent_to(NamedSharding(mesh, DATA), got.ndim)  # no gather to one device
        assert sorted(s.device.id for s in got.addressable_shards) == list(range(8))
        assert all(s.data.shape[0] == 1 for s in got.addressable_shards)
        # Same program per video; only the batch split differs. ~2 steps x UNet layers (~40 ops each x ~10 layers).
        assert_close(got, want, ops=2 * 400)


def test_pipeline_windows_over_data_equal_single_device(checkpoint, monkeypatch):
    """One long video (a batch of 1 does not split over 8 devices) on 8 devices: each step's 7 windows (padded to 8)
    are split over the devices and eq. 19's sums gathered with a psum."""
    cfg = CoDenoiseConfig(prompts=("x", "y"), num_frames=16, window_size=4, stride=2, num_steps=2, guidance_scale=3.0)
    rows = [["a red ball", "a blue ball"]]

    def sample(pipe, **kw):
        seen = []
        monkeypatch.setattr(pipe, "decode_clip", lambda latents, num_frames=None: seen.append(latents) or np.zeros(1))
        list(pipe.co_denoise(cfg, key=jax.random.key(4), height=16, width=16, prompts=rows, decode_frames=16, **kw))
        return seen[0]

    single = sample(VideoPipeline.from_checkpoint(checkpoint))
    split = sample(VideoPipeline.from_checkpoint(checkpoint, mesh=create_mesh({"data": -1})), split_windows=True)
    assert split.shape == single.shape == (1, 16, 8, 8, 4)
    assert_close(split, single, ops=2 * (400 + MERGE_OPS))
    assert not np.allclose(single[:, :4], single[:, -4:], atol=1e-2)


def test_bad_mesh_and_indivisible_batch_name_the_field(checkpoint):
    with pytest.raises(ValueError, match="mesh: needs a 'data' axis"):
        VideoPipeline.from_checkpoint(checkpoint, mesh=jax.sharding.Mesh(np.asarray(jax.devices()), ("model",)))
    pipe = VideoPipeline.from_checkpoint(checkpoint, mesh=create_mesh({"data": -1}))
    cfg = CoDenoiseConfig(prompts=("x",), num_frames=4, window_size=4, stride=2, num_steps=1)
    with pytest.raises(ValueError, match="prompts: a batch of 3 videos .* data axis of 8"):
        list(pipe.co_denoise(cfg, key=jax.random.key(0), height=32, width=32, prompts=[["a"], ["b"], ["c"]]))
