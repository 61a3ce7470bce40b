r"""The smallest denoising run (one-level tiny UNet/VAE/CLIP, 2 frames of 16 x 16, 40 steps): the model the trainer
tests use, and a quick smoke test of an installation (about a minute on 2 CPU cores)::

    python -m vidrd_jax.train --config configs/tiny.py --workdir /tmp/vidrd_tiny

Nothing is downloaded: fresh models (all UNet parameters train; VAE and text encoder stay random and frozen) and the
real CLIP tokenizer on the built-in synthetic clips. The full demo is ``configs/demo.py``.
"""
import ml_collections

import data_pipelines  # noqa: F401  (config.data configures it; importing it registers it with the trainer)
from vidrd_jax.train_config import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config("denoising")
    c.seed = 0
    c.total_steps = 40
    c.batch_size = 4
    c.log_every_steps = 1
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 2
    c.optimizer.schedule = "constant"
    c.optimizer.weight_decay = 0.0
    c.ema.decay = 0.99
    c.checkpoint.every_steps = 20
    c.checkpoint.keep = 2

    c.model.preset = "tiny"
    c.trainable_regex = r"^unet/"  # a fresh model: every UNet parameter trains (VAE and text encoder frozen)
    c.model.unet.update(dict(block_out_channels=(32,), down_block_types=("CrossAttnDownBlock3D",),
                             up_block_types=("CrossAttnUpBlock3D",), num_attention_heads=(2,), temporal_conv_layers=1))
    c.model.vae.update(dict(block_out_channels=(16,), layers_per_block=1))
    c.model.text_encoder.update(dict(num_hidden_layers=1))

    c.data.num_frames = 2
    c.data.stride = 2
    c.data.resolution = (16, 16)
    c.data.caption_dropout = 0.1
    c.data.read_threads = 1
    c.data.prefetch_batches = 1

    c.sample.every_steps = 0  # previews off; when on (--config.sample.every_steps=N), at the data's size
    c.sample.prompts = ("a red square moving right", "a blue circle moving down")
    c.sample.num_frames = c.data.num_frames
    c.sample.height, c.sample.width = c.data.resolution
    c.sample.num_steps = 10
    c.sample.guidance_scale = 3.0
    return c
