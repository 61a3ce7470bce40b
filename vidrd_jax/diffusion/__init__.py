"""Diffusion core: noise schedule, solvers (DDIM, DPM-Solver++(2M)), classifier-free guidance, VidRD long video,
co-denoising.

Every sampler is written against a denoiser ``eps_fn(z[B, F, h, w, C], t int32 scalar, cond pytree)`` and takes its
solver from its config (``solver``).
"""
from vidrd_jax.diffusion.co_denoise import CoDenoiseConfig, co_denoise_sample
from vidrd_jax.diffusion.ddim import (EpsFn, add_noise, draw_noise, get_velocity, predict_x0_and_eps,
                                      training_target)
from vidrd_jax.diffusion.guidance import ClassifierFreeGuidance
from vidrd_jax.diffusion.long_video import (ClipOutput, ClipResult, LongVideoConfig, LongVideoState,
                                            generate_long_video, sample_clip)
from vidrd_jax.diffusion.schedule import NoiseSchedule
from vidrd_jax.diffusion.solvers import SOLVERS, DDIMSolver, DPMSolverPP2M, SamplerConfig, Solver, ddim_sample

__all__ = [
    "ClassifierFreeGuidance", "ClipOutput", "ClipResult", "CoDenoiseConfig", "DDIMSolver", "DPMSolverPP2M", "EpsFn",
    "LongVideoConfig", "LongVideoState", "NoiseSchedule", "SOLVERS", "SamplerConfig", "Solver", "add_noise",
    "co_denoise_sample", "ddim_sample", "draw_noise", "generate_long_video", "get_velocity", "predict_x0_and_eps",
    "sample_clip", "training_target",
]
