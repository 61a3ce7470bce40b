"""Combined tuning (paper 000 eq. 15, 16, 20): the task's loss invariants and masks travelling in the batch."""
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

import data_pipelines
from data_pipelines import builtin
from data_pipelines.array_record_source import ShardWriter, encode_record
from data_pipelines.base import CLIP, Raw
from data_pipelines.config import source
from data_pipelines.transforms import to_model_range
from vidrd_jax.config_loading import load_config
from vidrd_jax.segmentation import BuiltinMasks
from vidrd_jax.tasks import get_task_class
from vidrd_jax.tasks.combined_tuning import CombinedTuningTask, mask_clip
from vidrd_jax.tasks.denoising import DenoisingTask

TINY_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"
FRAMES, SIZE = 2, 16
PROMPTS = ("a red circle moving right", "a blue square moving down")
RENDER = dict(background="textured", seed=5, size_range=(0.2, 0.25), travel_range=(0.2, 0.25))


def _config(loss_weights=(1.0, 1.0, 1.0)) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict(load_config(TINY_CONFIG).to_dict())
    c.task = "combined_tuning"
    c.loss_weights = loss_weights
    c.model.vae.block_out_channels = (16, 16)  # latent factor 2, so the latent mask is a real downsampling
    c.data.num_frames = 2 * FRAMES
    return c


def _clips():
    frames = np.stack([builtin.render_clip(*builtin.parse_combo(p), num_frames=FRAMES, height=SIZE, **RENDER)
                       for p in PROMPTS])
    masks = np.stack([BuiltinMasks(builtin.object_alpha, **RENDER)(f, p) for f, p in zip(frames, PROMPTS)])
    return frames, masks


def _pipeline_batch(stored: np.ndarray) -> dict:
    """What the data pipeline yields for stored clips: float32 in [-1, 1] and captions."""
    return {"video": to_model_range(stored), "caption": np.asarray(PROMPTS)}


@pytest.fixture(scope="module")
def setup():
    config = _config()
    task = CombinedTuningTask(config)
    params = jax.jit(task.init_params)(jax.random.key(0))
    frames, masks = _clips()
    host = task.host_batch(_pipeline_batch(np.stack([mask_clip(f, m) for f, m in zip(frames, masks)])))
    batch = jax.tree.map(jax.numpy.asarray, host)
    inputs = jax.jit(task.preprocess)(params, batch, jax.random.key(1))
    return config, params, host, inputs, frames, masks


def _loss_fn(config, task_class=CombinedTuningTask):
    """The task's jitted loss at fixed keys (one compile per config: λ are Python constants of the program)."""
    loss = jax.jit(task_class(config).loss)
    return lambda params, inputs: loss(params, inputs, jax.random.key(2), jax.numpy.int32(0))


def test_registered():
    assert get_task_class("combined_tuning") is CombinedTuningTask


def test_host_batch_splits_video_and_masks_bit_exactly(setup):
    _, _, host, _, frames, masks = setup
    np.testing.assert_array_equal(host["mask"], masks)
    np.testing.assert_array_equal(host["video"], to_model_range(frames))


def test_plain_weights_give_the_denoising_loss_bit_exactly(setup):
    """(λ1, λ2, λ3) = (1, 0, 0) is eq. 3's loss of the denoising task on the same batch and keys."""
    _, params, _, inputs, _, _ = setup
    plain, _ = _loss_fn(_config((1.0, 0.0, 0.0)))(params, inputs)
    reference, _ = _loss_fn(_config(), DenoisingTask)(params, {k: v for k, v in inputs.items() if k != "mask"})
    assert np.asarray(plain).tobytes() == np.asarray(reference).tobytes()


def test_terms_add_up_and_masks_select_exactly_their_region(setup):
    """L_fg + L_bg = L_1 (binary masks) and eq. 20 sums the weighted terms; an all-foreground mask makes L_fg the
    plain loss bit for bit and L_bg exactly 0, an empty one the reverse."""
    config, params, _, inputs, _, _ = setup
    loss = _loss_fn(config)  # λ = (1, 1, 1)
    total, terms = loss(params, inputs)
    np.testing.assert_allclose(float(terms["loss_fg"] + terms["loss_bg"]), float(terms["loss_l1"]), rtol=1e-6)
    np.testing.assert_allclose(float(total), float(terms["loss_l1"] + terms["loss_fg"] + terms["loss_bg"]),
                               rtol=1e-6)
    assert 0 < float(terms["loss_fg"]) < float(terms["loss_l1"])
    for fill, full, empty in ((1.0, "loss_fg", "loss_bg"), (0.0, "loss_bg", "loss_fg")):
        _, terms = loss(params, {**inputs, "mask": jax.numpy.full_like(inputs["mask"], fill)})
        assert np.asarray(terms[full]).tobytes() == np.asarray(terms["loss_l1"]).tobytes()
        assert float(terms[empty]) == 0.0


def test_latent_mask_covers_every_foreground_pixel(setup):
    _, _, _, inputs, _, masks = setup
    latent = np.asarray(inputs["mask"])[..., 0]
    assert latent.shape == masks.shape[:2] + (SIZE // 2, SIZE // 2)
    upsampled = latent.repeat(2, axis=2).repeat(2, axis=3).astype(bool)
    assert not (masks & ~upsampled).any()  # no foreground pixel falls in a background cell
    assert latent.any() and not latent.all()


def test_masks_travel_through_the_data_pipeline(tmp_path):
    """Stored as video + mask frames in ArrayRecord shards, the clips come out of the Grain pipeline and the task's
    host batch with their masks bit-exact."""
    frames, masks = _clips()
    writer = ShardWriter(str(tmp_path), "fused", records_per_shard=10)
    for i, (f, m, p) in enumerate(zip(frames, masks, PROMPTS)):
        writer.write(encode_record(Raw(mask_clip(f, m), (p,), CLIP, f"fused/{i}")))
    writer.close({"kinds": [CLIP], "stride": 1, "keyframes": 2 * FRAMES})
    config = _config()
    config.data.sources = [source("fused", "array_record", 1.0, path=str(tmp_path))]
    config.data.stride, config.data.resolution = 1, (SIZE, SIZE)
    with data_pipelines.make_iterator(config.data, batch_size=4) as iterator:
        host = CombinedTuningTask(config).host_batch(next(iterator))
    for video, mask in zip(host["video"], host["mask"]):
        match = [i for i, f in enumerate(frames) if np.array_equal(video, to_model_range(f))]
        assert len(match) == 1
        np.testing.assert_array_equal(mask, masks[match[0]])


def test_bad_batches_and_configs_are_named():
    task = CombinedTuningTask(_config())
    frames, masks = _clips()
    stored = np.stack([mask_clip(f, m) for f, m in zip(frames, masks)])
    stored[:, FRAMES:, 0, 0, 1] = 7  # a mask frame that is not 0 / 255 in every channel
    with pytest.raises(ValueError, match="not mask frames"):
        task.host_batch(_pipeline_batch(stored))
    for weights in ((1.0, 0.0), (0.0, 0.0, 0.0), (1.0, -1.0, 0.0)):
        with pytest.raises(ValueError, match="config.loss_weights"):
            CombinedTuningTask.validate_config(_config(weights))
    odd = _config()
    odd.data.num_frames = 3
    with pytest.raises(ValueError, match="config.data.num_frames"):
        CombinedTuningTask.validate_config(odd)
    with pytest.raises(ValueError, match="mask_clip"):
        mask_clip(frames[0], masks[0].astype(np.uint8))
