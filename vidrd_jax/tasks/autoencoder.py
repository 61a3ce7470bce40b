"""Image autoencoder training: SD's KL autoencoder (paper eq. 4) learned frame by frame, as LDM trains it.

LDM's objective (:mod:`vidrd_jax.tasks.kl_autoencoder`, eq. 9: L1 [+ LPIPS], KL regulariser, hinge patch
discriminator with LDM's adaptive weight from ``loss.disc_start``), as for the temporal decoder, but every 2-D
parameter of encoder and decoder trains, each frame is decoded on its own (``num_frames = 1``, so the decoder's
Temp-Convs are the identity and keep their zero initialisation for the temporal stage), and the KL term now has a
gradient. Start from scratch (``model.init_from = ""``, the ``preset`` with ``model.vae`` overrides) or fine-tune
an inference checkpoint's ``vae``; the export is an inference checkpoint the denoising task can start from, with
``scaling_factor`` = 1 / std of the latents (LDM's ``scale_by_std``).

Evaluation (``KLAutoencoderTask.evaluate``) reports PSNR / SSIM of the image decoder, e.g. on held-out clips with
``sample.split = "heldout"``.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vidrd_jax.tasks import Params
from vidrd_jax.tasks.kl_autoencoder import KLAutoencoderTask

# Every VAE parameter except the decoder's Temp-Convs.
IMAGE_AUTOENCODER_REGEX = r"^vae/(?!decoder/.*temp_convs_\d+/)"


class AutoencoderTask(KLAutoencoderTask):
    """Trains encoder and 2-D decoder of the KL autoencoder on single frames (eq. 4; LDM's loss, eq. 9's terms)."""

    min_frames = 1
    trainable_prefix = "vae/"
    default_trainable_regex = IMAGE_AUTOENCODER_REGEX
    needs_temporal_decoder = False

    @classmethod
    def config_defaults(cls) -> ml_collections.ConfigDict:
        c = super().config_defaults()
        c.loss.reg_weight = 1e-6  # LDM's kl-f8 autoencoders
        c.model.scale_by_std = True  # export sets scaling_factor = 1 / latent std (see export)
        return c

    def decode_frames(self, video: jax.Array) -> int:
        """One: frames are decoded independently (an image autoencoder)."""
        return 1

    def export(self, params: Params, dtype: str) -> tuple[Params, dict[str, Any]]:
        """As the base class, with ``scaling_factor`` re-estimated when ``model.scale_by_std`` (LDM's
        ``scale_by_std``): 1 / std of posterior samples of the evaluation clips, so the latents the UNet is trained on
        have unit variance whatever this autoencoder learned (SD's 0.18215 fits only SD's autoencoder)."""
        out, model_config = super().export(params, dtype)
        if self.config.model.scale_by_std:
            factor = self.latent_scaling_factor(params)
            logging.info("autoencoder export: scaling_factor = 1 / latent std = %.5f", factor)
            model_config["vae"] = {**model_config["vae"], "scaling_factor": factor}
        return out, model_config

    def latent_scaling_factor(self, params: Params) -> float:
        """1 / std of ``z = mean + std·eps`` over the evaluation clips (``sample.*``, fixed noise)."""
        rng = jax.random.key(self.config.sample.seed)
        samples = []
        for i, clips in enumerate(self.eval_clips):
            mean, logvar = self.encode(params, jnp.asarray(clips))
            noise = jax.random.normal(jax.random.fold_in(rng, i), mean.shape, jnp.float32)
            samples.append(np.asarray(mean + jnp.exp(0.5 * logvar) * noise, np.float64).ravel())
        return float(1.0 / np.std(np.concatenate(samples)))
