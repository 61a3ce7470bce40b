"""Solvers behind one interface: DPM-Solver++(2M) against diffusers' DPMSolverMultistepScheduler, and both samplers
(VidRD long video, co-denoising) with either solver."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DPMSolverMultistepScheduler
from numerics import assert_close

from vidrd_jax.diffusion import (CoDenoiseConfig, LongVideoConfig, NoiseSchedule, SamplerConfig, co_denoise_sample,
                                 ddim_sample, sample_clip)
from vidrd_jax.diffusion.solvers import DDIMSolver, DPMSolverPP2M

SHAPE = (1, 3, 4, 4, 4)
CUMPROD_OPS = 1000  # diffusers' float32 cumprod of 1000 factors rounds once per factor, relative to each element
# roundings per DPM-Solver++ step: linear_denoiser ~8, x0 ~4, the update ~6, diffusers' float32 log/exp of lambda ~12
STEP_OPS = 32
DPM = "dpm_solver++"


def linear_denoiser(z, t, cond):
    """A fixed affine 'model' of z, t, the frame index and the cond (the same one drives both implementations)."""
    frames = jnp.arange(z.shape[1], dtype=z.dtype)[None, :, None, None, None]
    return 0.3 * z - 0.1 * jnp.mean(z, axis=1, keepdims=True) + 0.02 * frames + cond["bias"] * (t / 1000.0)


def pointwise_denoiser(z, t, cond):
    """Each frame's output depends on that frame and the cond only."""
    return 0.1 * z + cond["bias"] * (t / 1000.0)


def diffusers_dpm(schedule: NoiseSchedule) -> DPMSolverMultistepScheduler:
    """diffusers' DPM-Solver++(2M), every setting that changes the arithmetic spelled out."""
    return DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.num_train_timesteps, beta_start=schedule.beta_start, beta_end=schedule.beta_end,
        beta_schedule=schedule.beta_schedule, prediction_type=schedule.prediction_type, algorithm_type="dpmsolver++",
        solver_order=2, solver_type="midpoint", lower_order_final=True, euler_at_final=False,
        final_sigmas_type="zero", thresholding=False, use_karras_sigmas=False, use_lu_lambdas=False,
        timestep_spacing=schedule.timestep_spacing, steps_offset=schedule.steps_offset)


@pytest.mark.parametrize("num_steps,spacing,prediction_type",
                         [(25, "leading", "epsilon"), (7, "leading", "v_prediction"), (20, "trailing", "epsilon")])
def test_dpm_solver_trajectory_matches_diffusers(num_steps, spacing, prediction_type):
    schedule = NoiseSchedule(prediction_type=prediction_type, timestep_spacing=spacing)
    theirs = diffusers_dpm(schedule)
    ours_timesteps = schedule.ddim_timesteps(num_steps)
    if spacing == "leading":  # diffusers' DPM "leading" differs from its DDIM one: hand it SD's (DDIM) timesteps
        theirs.set_timesteps(timesteps=ours_timesteps.tolist())
    else:
        theirs.set_timesteps(num_steps)
    np.testing.assert_array_equal(theirs.timesteps.numpy(), ours_timesteps)

    solver, cond = DPMSolverPP2M(), {"bias": jnp.float32(0.5)}
    tables = solver.tables(schedule, num_steps)
    step = jax.jit(lambda row, state, x: solver.step(schedule, row, state, x, linear_denoiser(x, row.timesteps, cond),
                                                     None))
    latents = jax.random.normal(jax.random.key(1), SHAPE)
    x, state, x_theirs = latents, solver.init_state(latents), torch.from_numpy(np.array(latents))
    for s, t in enumerate(theirs.timesteps):
        x, state = step(jax.tree.map(lambda a: a[s], tables), state, x)
        output = torch.from_numpy(np.array(linear_denoiser(jnp.asarray(x_theirs.numpy()), jnp.int32(t), cond)))
        x_theirs = theirs.step(output, t, x_theirs).prev_sample
        assert_close(x, x_theirs.numpy(), ops=CUMPROD_OPS + (s + 1) * STEP_OPS, err_msg=f"step {s}")
    # The scanned sampler runs the same maths.
    full = ddim_sample(linear_denoiser, schedule, SamplerConfig(num_steps, solver=DPM), cond, latents=latents)
    assert_close(full, x_theirs.numpy(), ops=CUMPROD_OPS + num_steps * STEP_OPS)


def test_dpm_solver_is_second_order_between_first_order_ends():
    """The table: the first and the last step (to sigma 0) are first order; the last returns that step's x0."""
    schedule = NoiseSchedule()
    tables = DPMSolverPP2M().tables(schedule, 10)
    assert tables.diff[0] == 0 and tables.diff[-1] == 0 and (tables.diff[1:-1] > 0).all()
    assert tables.sample[-1] == 0 and tables.data[-1] == 1
    x, out = jnp.full(SHAPE, 0.7), jnp.full(SHAPE, 0.2)
    last = jax.tree.map(lambda a: a[-1], tables)
    x_next, x0 = DPMSolverPP2M().step(schedule, last, jnp.zeros(SHAPE), x, out, None)
    np.testing.assert_array_equal(x_next, x0)


def test_solver_field_is_validated_naming_the_field():
    with pytest.raises(ValueError, match="solver must be one of"):
        SamplerConfig(solver="euler")
    with pytest.raises(ValueError, match=r"eta must be 0 with solver='dpm_solver\+\+'"):
        SamplerConfig(eta=0.5, solver=DPM)
    with pytest.raises(ValueError, match="eta must be 0"):
        LongVideoConfig(prompts=("a",), eta=0.3, solver=DPM)
    with pytest.raises(ValueError, match="solver must be one of"):
        CoDenoiseConfig(prompts=("a",), solver="heun")
    assert isinstance(SamplerConfig().make_solver(), DDIMSolver)
    assert isinstance(SamplerConfig(solver=DPM).make_solver(), DPMSolverPP2M)


def _reference_clip(schedule, cfg, cond, noise, prev_state):
    """Clip 1 of VidRD written out step by step: PNS init, DSG replacement before the denoiser, one solver state
    carried over this clip's own steps."""
    solver = cfg.sampler.make_solver()
    tables = solver.tables(schedule, cfg.num_steps)
    n, m = cfg.num_frames, cfg.num_prompt_frames
    src, guided = np.asarray(cfg.source_frames()), cfg.guided_steps()
    a, b = cfg.pns_coefficients()
    reused = np.asarray(prev_state.init_latents)[:, src]
    x = np.where(np.arange(n)[None, :, None, None, None] < m, reused, a * reused + b * np.asarray(noise))
    x, state = jnp.asarray(x, jnp.float32), solver.init_state(jnp.asarray(x))
    for s in range(cfg.num_steps):
        x = np.array(x)
        for k in range(m):
            if s < guided[k]:
                x[:, k] = np.asarray(prev_state.trajectory)[s, :, src[k] - (n - m)]
        x = jnp.asarray(x)
        row = jax.tree.map(lambda t: t[s], tables)
        x, state = solver.step(schedule, row, state, x, linear_denoiser(x, row.timesteps, cond), None)
    return x


def test_long_video_runs_dpm_solver_with_fnr_pns_dsg():
    """Clip 0 is plain DPM-Solver++ sampling; clip 1 (another prompt, frame-mixing denoiser, DSG on 3 of 6 steps)
    matches the step-by-step reference with the solver's state threaded through this clip's own steps."""
    schedule = NoiseSchedule()
    cfg = LongVideoConfig(prompts=("a", "b"), num_clips=2, num_frames=4, num_prompt_frames=2, num_steps=6,
                          dsg_beta=0.5, solver=DPM)
    assert cfg.guided_steps() == (3, 2)
    n0, n1 = (jax.random.normal(k, SHAPE[:1] + (4,) + SHAPE[2:]) for k in jax.random.split(jax.random.key(2)))
    c0, c1 = {"bias": jnp.float32(0.5)}, {"bias": jnp.float32(-0.7)}
    clip0 = sample_clip(linear_denoiser, schedule, cfg, c0, n0)
    plain = ddim_sample(linear_denoiser, schedule, cfg.sampler, c0, latents=n0)
    assert_close(clip0.latents, plain, ops=6 * STEP_OPS)  # the same maths, compiled in another program
    clip1 = sample_clip(linear_denoiser, schedule, cfg, c1, n1, clip0.state)
    assert clip1.guided_steps.tolist() == [3, 2]
    want = _reference_clip(schedule, cfg, c1, n1, clip0.state)
    assert_close(clip1.latents, want, ops=6 * STEP_OPS)
    ddim_cfg = dataclasses.replace(cfg, solver="ddim")
    ddim = sample_clip(linear_denoiser, schedule, ddim_cfg, c1, n1,
                       sample_clip(linear_denoiser, schedule, ddim_cfg, c0, n0).state)
    assert not np.allclose(clip1.latents, ddim.latents, atol=1e-3)  # the solver field is used


@pytest.mark.parametrize("weighting,chunk", [("uniform", None), ("pyramid", 2)])
def test_co_denoise_with_dpm_solver_fuses_its_state(weighting, chunk):
    """A pointwise denoiser under one prompt gives every window the same prediction for a frame, so co-denoising with
    DPM-Solver++ (overlapping windows, state fused with the window weights) is plain DPM-Solver++ on the video."""
    schedule = NoiseSchedule()
    cfg = CoDenoiseConfig(prompts=("a",), num_frames=12, window_size=4, stride=2, num_steps=5, weighting=weighting,
                          window_chunk_size=chunk, solver=DPM)
    latents = jax.random.normal(jax.random.key(3), (1, 12, 4, 4, 4))
    cond = {"bias": jnp.float32(0.4)}
    ours = co_denoise_sample(pointwise_denoiser, schedule, cfg, [cond], latents=latents)
    plain = ddim_sample(pointwise_denoiser, schedule, cfg.sampler, cond, latents=latents)
    assert_close(ours, plain, ops=5 * (STEP_OPS + 4))  # + the weighted merge of windows per step
    ddim = ddim_sample(pointwise_denoiser, schedule, SamplerConfig(5), cond, latents=latents)
    assert not np.allclose(plain, ddim, atol=1e-3)
