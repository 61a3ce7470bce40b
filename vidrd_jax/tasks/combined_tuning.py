"""Combined tuning (paper 000 §3.3, eq. 13-16 and 20): the denoising loss split by foreground and background masks.

With ``e = y - f_theta(z_t; c, t)`` (eq. 3's residual, epsilon or velocity target) and the clip's foreground mask
``M_fg`` on the latent grid (binary; ``M_bg = 1 - M_fg``)::

    L_1 = E ||e||^2        L_fg = E ||M_fg ⊗ e||^2        L_bg = E ||M_bg ⊗ e||^2          (eq. 6, 15, 16)
    L_total = λ1 · L_1 + λ2 · L_fg + λ3 · L_bg                                            (eq. 20)

every term a mean over all latent elements, so ``L_fg + L_bg = L_1`` and ``(λ1, λ2, λ3) = (1, 0, 0)`` is
:class:`~vidrd_jax.tasks.denoising.DenoisingTask` 's loss bit for bit (same batch, same keys). Everything else
(models, trainable regex, init, export) is the denoising task's.

Masks travel in the batch: a training clip of ``F`` frames is stored as ``2F`` frames, its ``F`` video frames followed
by ``F`` mask frames (255 in all three channels inside the foreground, 0 outside; :func:`mask_clip` builds one), and the
data config reads ``num_frames = 2F`` clips at the stored size, so the pipeline's window, resize and crop are
identities. :meth:`CombinedTuningTask.host_batch` splits them into ``video`` and a boolean ``mask``; a latent cell is
foreground when any of its pixels is (:func:`vidrd_jax.segmentation.latent_mask`).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from vidrd_jax.diffusion.ddim import min_snr_weight
from vidrd_jax.segmentation import latent_mask
from vidrd_jax.tasks import Params
from vidrd_jax.tasks.denoising import DenoisingTask


def mask_clip(frames: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """uint8 ``[F, H, W, 3]`` frames + bool ``[F, H, W]`` masks -> the stored uint8 ``[2F, H, W, 3]`` clip."""
    frames, masks = np.asarray(frames), np.asarray(masks)
    if frames.dtype != np.uint8 or frames.ndim != 4 or masks.dtype != np.bool_ or masks.shape != frames.shape[:3]:
        raise ValueError(f"mask_clip: need uint8 [F, H, W, 3] frames and bool [F, H, W] masks, got {frames.dtype} "
                         f"{frames.shape} and {masks.dtype} {masks.shape}")
    mask_frames = np.repeat(masks[..., None].astype(np.uint8) * 255, 3, axis=-1)
    return np.concatenate([frames, mask_frames], axis=0)


class CombinedTuningTask(DenoisingTask):
    """Eq. 20 over the UNet's residual, with per-clip foreground masks from the batch."""

    @classmethod
    def config_defaults(cls) -> ml_collections.ConfigDict:
        """The denoising task's fields plus ``loss_weights`` = (λ1, λ2, λ3) of eq. 20."""
        c = super().config_defaults()
        c.loss_weights = (1.0, 1.0, 1.0)
        return c

    @classmethod
    def validate_config(cls, config: ml_collections.ConfigDict) -> None:
        super().validate_config(config)
        w = tuple(config.loss_weights)
        if (len(w) != 3 or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in w)
                or not any(w)):
            raise ValueError(f"config.loss_weights must be (λ1, λ2, λ3) of eq. 20, each >= 0 and not all 0, "
                             f"got {w!r}")
        if config.data.num_frames % 2:
            raise ValueError(f"config.data.num_frames must be even (F video frames + F mask frames per stored clip), "
                             f"got {config.data.num_frames}")

    # --- data ------------------------------------------------------------------------------------------------
    def host_batch(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """``video`` [B, 2F, H, W, 3] -> ``video`` [B, F, …] and bool ``mask`` [B, F, H, W], plus the token ids."""
        out = super().host_batch(batch)
        both = out.pop("video")
        f = both.shape[1] // 2
        if both.shape[1] % 2:
            raise ValueError(f"batch['video'] must hold 2F frames (F video + F mask frames), got {both.shape[1]}")
        mask_frames = both[:, f:]
        if not (np.isin(mask_frames, (-1.0, 1.0)).all() and (mask_frames == mask_frames[..., :1]).all()):
            raise ValueError("batch['video'] frames F..2F-1 are not mask frames (0 or 255 in all three channels): "
                             "store clips with vidrd_jax.tasks.combined_tuning.mask_clip")
        return {"video": np.ascontiguousarray(both[:, :f]), "mask": mask_frames[..., 0] > 0, **out}

    # --- step ------------------------------------------------------------------------------------------------
    def preprocess(self, params: Params, batch: Mapping[str, jax.Array], rng: jax.Array) -> dict[str, jax.Array]:
        """The denoising task's latents and token ids, plus the foreground mask on the latent grid [B, F, h, w, 1]."""
        inputs = super().preprocess(params, batch, rng)
        inputs["mask"] = latent_mask(batch["mask"], self.vae_factor)
        return inputs

    def loss(self, params: Params, inputs: Mapping[str, jax.Array], rng: jax.Array, step: jax.Array
             ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Eq. 20 (per clip weighted by Min-SNR-γ when ``config.snr_gamma`` > 0); the three terms as metrics."""
        squared, t = self.squared_errors(params, inputs, rng)
        fg = inputs["mask"]
        axes = tuple(range(1, squared.ndim))
        terms = {"loss_l1": jnp.mean(squared, axis=axes), "loss_fg": jnp.mean(fg * squared, axis=axes),
                 "loss_bg": jnp.mean((1 - fg) * squared, axis=axes)}  # per clip; M² = M for binary masks
        if self.config.snr_gamma > 0:
            weight = min_snr_weight(self.schedule, t, self.config.snr_gamma)
            terms = {name: weight * value for name, value in terms.items()}
        terms = {name: jnp.mean(value) for name, value in terms.items()}
        l1, l2, l3 = (float(w) for w in self.config.loss_weights)
        total = l1 * terms["loss_l1"] + l2 * terms["loss_fg"] + l3 * terms["loss_bg"]
        return total, terms
