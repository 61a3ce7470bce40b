"""Temporal-aware decoder fine-tuning (paper §4.4, eq. 9; weights of §5.1).

The autoencoder's encoder E (and ``quant_conv``/``post_quant_conv`` and every 2-D decoder layer) stays frozen; only
the decoder's Temp-Convs train (``config.trainable_regex``, default: paths ``vae/decoder/…/temp_convs_<j>/``). Each
clip is decoded as a clip (``num_frames = F``, so the Temp-Convs mix frames) and scored with LDM's loss (eq. 9,
:mod:`vidrd_jax.tasks.kl_autoencoder`). With the encoder frozen, the KL term is a constant (logged, no gradient), and
the decoder's last layer W, on which the adaptive weight λ is measured, is frozen too: its gradient is only measured,
never applied, exactly as LDM measures it.
"""
from __future__ import annotations

import jax

from vidrd_jax.tasks.kl_autoencoder import KLAutoencoderTask

TEMPORAL_DECODER_REGEX = r"^vae/decoder/.*temp_convs_\d+/"


class VAETemporalTask(KLAutoencoderTask):
    """Fine-tunes the Temp-Conv layers of the VAE decoder with eq. 9 against a 3-D patch discriminator."""

    min_frames = 2
    trainable_prefix = "vae/decoder/"  # the encoder stays frozen (§4.4)
    default_trainable_regex = TEMPORAL_DECODER_REGEX
    needs_temporal_decoder = True

    def decode_frames(self, video: jax.Array) -> int:
        """The whole clip, so the Temp-Convs mix its frames."""
        return video.shape[1]
