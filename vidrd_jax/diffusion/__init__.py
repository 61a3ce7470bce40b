"""Diffusion core: noise schedule, DDIM, classifier-free guidance, VidRD long video, co-denoising.

Every sampler is written against a denoiser ``eps_fn(z[B, F, h, w, C], t int32 scalar, cond pytree)``.
"""
from vidrd_jax.diffusion.co_denoise import CoDenoiseConfig, co_denoise_sample
from vidrd_jax.diffusion.ddim import (EpsFn, add_noise, ddim_sample, ddim_step, draw_noise, get_velocity,
                                      predict_x0_and_eps, training_target)
from vidrd_jax.diffusion.guidance import ClassifierFreeGuidance
from vidrd_jax.diffusion.long_video import (ClipOutput, ClipResult, LongVideoConfig, LongVideoState,
                                            generate_long_video, sample_clip)
from vidrd_jax.diffusion.schedule import DDIMConfig, DDIMTables, NoiseSchedule, ddim_tables

__all__ = [
    "ClassifierFreeGuidance", "ClipOutput", "ClipResult", "CoDenoiseConfig", "DDIMConfig", "DDIMTables", "EpsFn",
    "LongVideoConfig", "LongVideoState", "NoiseSchedule", "add_noise", "co_denoise_sample", "ddim_sample",
    "ddim_step", "ddim_tables", "draw_noise", "generate_long_video", "get_velocity", "predict_x0_and_eps",
    "sample_clip", "training_target",
]
