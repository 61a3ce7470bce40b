"""Noise schedule, DDIM and classifier-free guidance against diffusers' DDIMScheduler and closed-form answers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler
from numerics import assert_close

from vidrd_jax.diffusion import (ClassifierFreeGuidance, NoiseSchedule, SamplerConfig, add_noise, ddim_sample,
                                 draw_noise, get_velocity, training_target)
from vidrd_jax.diffusion.solvers import ddim_step, ddim_tables

SHAPE = (1, 3, 4, 4, 4)
CUMPROD_OPS = 1000  # diffusers' float32 cumprod of 1000 factors rounds once per factor, relative to each element
STEP_OPS = 32  # roundings per DDIM step: linear_denoiser ~8, x0 / eps / x_{t-1} with square roots ~14, eta noise ~10
SD21_BASE_SCHEDULER_JSON = {  # stabilityai/stable-diffusion-2-1-base scheduler/scheduler_config.json
    "_class_name": "PNDMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "trained_betas": None}


def diffusers_ddim(prediction_type="epsilon", **overrides):
    kwargs = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                  clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading",
                  prediction_type=prediction_type)
    kwargs.update(overrides)
    return DDIMScheduler(**kwargs)


def linear_denoiser(z, t, cond):
    """A fixed affine 'model' that depends on z, t, the frame index and the cond."""
    frames = jnp.arange(z.shape[1], dtype=z.dtype)[None, :, None, None, None]
    return 0.3 * z - 0.1 * jnp.mean(z, axis=1, keepdims=True) + 0.02 * frames + cond["bias"] * (t / 1000.0)


def test_config_validation_and_from_diffusers():
    schedule = NoiseSchedule.from_diffusers(SD21_BASE_SCHEDULER_JSON)
    assert schedule == NoiseSchedule.sd21_base() == NoiseSchedule()
    assert NoiseSchedule.from_diffusers(schedule.to_dict()) == schedule
    assert NoiseSchedule.from_diffusers({**SD21_BASE_SCHEDULER_JSON, "prediction_type": "v_prediction"}) \
        .prediction_type == "v_prediction"
    with pytest.raises(ValueError, match="clip_sample"):
        NoiseSchedule.from_diffusers({**SD21_BASE_SCHEDULER_JSON, "clip_sample": True})
    with pytest.raises(ValueError, match="timestep_spacing"):
        NoiseSchedule.from_diffusers({**SD21_BASE_SCHEDULER_JSON, "timestep_spacing": "linspace"})
    with pytest.raises(ValueError, match="prediction_type"):
        NoiseSchedule(prediction_type="sample")
    with pytest.raises(ValueError, match="beta_end"):
        NoiseSchedule(beta_end=0.0001)
    with pytest.raises(ValueError, match="num_steps"):
        SamplerConfig(num_steps=0)
    with pytest.raises(ValueError, match="eta"):
        SamplerConfig(eta=-0.1)
    with pytest.raises(ValueError, match="num_steps=1000"):  # leading + offset 1 would need timestep 1000
        NoiseSchedule().ddim_timesteps(1000)


@pytest.mark.parametrize("num_steps,spacing", [(50, "leading"), (30, "leading"), (7, "leading"), (50, "trailing")])
def test_timesteps_and_alphas_match_diffusers(num_steps, spacing):
    ours = NoiseSchedule(timestep_spacing=spacing)
    theirs = diffusers_ddim(timestep_spacing=spacing)
    theirs.set_timesteps(num_steps)
    np.testing.assert_array_equal(ours.ddim_timesteps(num_steps), theirs.timesteps.numpy())
    want_abar = theirs.alphas_cumprod.numpy()
    assert_close(ours.alphas_cumprod, want_abar, ops=CUMPROD_OPS, scale=want_abar)
    if num_steps == 50 and spacing == "leading":
        assert list(ours.ddim_timesteps(50)[:3]) == [981, 961, 941] and ours.ddim_timesteps(50)[-1] == 1
    tables = ddim_tables(ours, num_steps)
    step = 1000 // num_steps
    for s, t in enumerate(theirs.timesteps.numpy()):  # diffusers' previous timestep is t - T // S
        prev = t - step
        want = theirs.alphas_cumprod[prev] if prev >= 0 else theirs.final_alpha_cumprod
        assert_close(tables.alphas_prev[s], float(want), ops=CUMPROD_OPS, scale=float(want))
    assert tables.alphas_prev[-1] == np.float32(ours.alphas_cumprod[0])  # set_alpha_to_one=False


def test_zero_terminal_snr_matches_diffusers():
    """Lin et al.'s rescaled betas: the last step is pure noise, the first keeps its level, diffusers agrees."""
    ours = NoiseSchedule(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
    theirs = diffusers_ddim("v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing")
    # The rescale shifts sqrt(abar) in [0, 1] (float32 in diffusers, cancelling near the end): compare it there.
    assert_close(np.sqrt(ours.alphas_cumprod), np.sqrt(theirs.alphas_cumprod.numpy()), ops=CUMPROD_OPS)
    assert ours.alphas_cumprod[-1] == 0.0 and ours.alphas_cumprod[0] == pytest.approx(1 - 0.00085)
    assert NoiseSchedule.from_diffusers(ours.to_dict()) == ours
    assert ours.ddim_timesteps(25)[0] == 999
    with pytest.raises(ValueError, match="rescale_betas_zero_snr=True needs prediction_type='v_prediction'"):
        NoiseSchedule(rescale_betas_zero_snr=True)
    # A DDIM loop that starts at SNR 0 stays finite and matches diffusers step by step.
    config = SamplerConfig(num_steps=10)
    latents, _ = draw_noise(jax.random.key(3), SHAPE, config)
    cond = {"bias": jnp.float32(0.5)}
    x_ours = ddim_sample(linear_denoiser, ours, config, cond, latents=latents)
    theirs.set_timesteps(config.num_steps)
    x = torch.from_numpy(np.array(latents))
    for t in theirs.timesteps:
        output = torch.from_numpy(np.array(linear_denoiser(jnp.asarray(x.numpy()), jnp.int32(t), cond)))
        x = theirs.step(output, t, x).prev_sample
    assert np.isfinite(np.asarray(x_ours)).all()
    assert_close(x_ours, x.numpy(), ops=CUMPROD_OPS + config.num_steps * STEP_OPS)  # diffusers' abar, then 10 steps


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_single_step_matches_diffusers(prediction_type, eta):
    schedule = NoiseSchedule(prediction_type=prediction_type)
    tables = ddim_tables(schedule, 50)
    theirs = diffusers_ddim(prediction_type)
    theirs.set_timesteps(50)
    rng = np.random.default_rng(0)
    step = jax.jit(ddim_step, static_argnames=("prediction_type", "eta"))
    for s in (0, 17, 49):  # first, middle and last step (the last uses final_alpha_cumprod)
        sample, output, noise = (rng.standard_normal(SHAPE).astype(np.float32) for _ in range(3))
        ours, _ = step(sample, output, tables.alphas[s], tables.alphas_prev[s], prediction_type=prediction_type,
                       eta=eta, noise=noise if eta > 0 else None)
        want = theirs.step(torch.from_numpy(output), int(tables.timesteps[s]), torch.from_numpy(sample), eta=eta,
                           variance_noise=torch.from_numpy(noise) if eta > 0 else None).prev_sample.numpy()
        assert_close(ours, want, ops=CUMPROD_OPS + STEP_OPS, err_msg=f"step {s}")  # diffusers' abar, one step


@pytest.mark.parametrize("prediction_type,eta", [("epsilon", 0.0), ("v_prediction", 0.0), ("epsilon", 0.5)])
def test_full_loop_matches_diffusers(prediction_type, eta):
    schedule, config = NoiseSchedule(prediction_type=prediction_type), SamplerConfig(num_steps=25, eta=eta)
    cond = {"bias": jnp.float32(0.5)}
    latents, step_noise = draw_noise(jax.random.key(1), SHAPE, config)
    ours = ddim_sample(linear_denoiser, schedule, config, cond, latents=latents, step_noise=step_noise)

    theirs = diffusers_ddim(prediction_type)
    theirs.set_timesteps(config.num_steps)
    x = torch.from_numpy(np.array(latents))
    for s, t in enumerate(theirs.timesteps):
        output = torch.from_numpy(np.array(linear_denoiser(jnp.asarray(x.numpy()), jnp.int32(t), cond)))
        noise = torch.from_numpy(np.array(step_noise[s])) if eta > 0 else None
        x = theirs.step(output, t, x, eta=eta, variance_noise=noise).prev_sample
    assert_close(ours, x.numpy(), ops=CUMPROD_OPS + config.num_steps * STEP_OPS)


def gaussian_denoiser(schedule, mu, sigma):
    """The exact E[eps | x_t] (or E[v | x_t]) for data x0 ~ N(mu, sigma^2 I)."""
    alphas_cumprod = jnp.asarray(schedule.alphas_cumprod, jnp.float32)

    def eps_fn(z, t, cond):
        a = alphas_cumprod[t]
        var = a * sigma ** 2 + 1.0 - a
        eps = jnp.sqrt(1.0 - a) * (z - jnp.sqrt(a) * mu) / var
        if schedule.prediction_type == "epsilon":
            return eps
        x0 = (z - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)
        return jnp.sqrt(a) * eps - jnp.sqrt(1.0 - a) * x0

    return eps_fn


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_gaussian_data_probability_flow(prediction_type):
    """DDIM(eta=0) integrates the probability-flow ODE. For x0 ~ N(mu, sigma^2) the marginal of x_t is
    N(sqrt(a_t) mu, v_t) with v_t = a_t sigma^2 + 1 - a_t and the ODE flow is the increasing affine map between
    marginals: x_end = sqrt(a_end) mu + sqrt(v_end / v_T) (x_T - sqrt(a_T) mu), a_end = alphas_cumprod[0]."""
    schedule = NoiseSchedule(prediction_type=prediction_type)
    mu, sigma = 0.7, 0.5
    eps_fn = gaussian_denoiser(schedule, mu, sigma)
    x_T = np.asarray(jax.random.normal(jax.random.key(3), SHAPE))
    a_end = schedule.final_alpha_cumprod
    v_end = a_end * sigma ** 2 + 1 - a_end
    errors = {}
    for steps in (50, 500):
        a_T = float(schedule.alphas_cumprod[ddim_tables(schedule, steps).timesteps[0]])
        v_T = a_T * sigma ** 2 + 1 - a_T
        want = np.sqrt(a_end) * mu + np.sqrt(v_end / v_T) * (x_T - np.sqrt(a_T) * mu)
        out = ddim_sample(eps_fn, schedule, SamplerConfig(num_steps=steps), {}, latents=x_T)
        errors[steps] = float(np.max(np.abs(np.asarray(out) - want)))
    assert errors[500] < 1e-2 * np.max(np.abs(want)), errors
    assert errors[500] < errors[50] / 5, errors  # first-order convergence in the step count


def test_add_noise_and_velocity_match_diffusers():
    schedule = NoiseSchedule()
    theirs = diffusers_ddim()
    rng = np.random.default_rng(1)
    x0, noise = rng.standard_normal((2,) + SHAPE[1:]).astype(np.float32), rng.standard_normal((2,) + SHAPE[1:])
    noise = noise.astype(np.float32)
    timesteps = np.array([3, 977], np.int32)
    want_xt = theirs.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(timesteps).long())
    want_v = theirs.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), torch.from_numpy(timesteps).long())
    ops = CUMPROD_OPS + 5  # diffusers' abar, then two square roots, two products and a sum
    assert_close(add_noise(schedule, x0, noise, timesteps), want_xt.numpy(), ops=ops)
    assert_close(get_velocity(schedule, x0, noise, timesteps), want_v.numpy(), ops=ops)
    np.testing.assert_array_equal(np.asarray(training_target(schedule, x0, noise, timesteps)), noise)
    v_schedule = NoiseSchedule(prediction_type="v_prediction")
    assert_close(training_target(v_schedule, x0, noise, timesteps), want_v.numpy(), ops=ops)


def test_explicit_noise_equals_key_and_eta_needs_noise():
    schedule, config = NoiseSchedule(), SamplerConfig(num_steps=5, eta=1.0)
    cond = {"bias": jnp.float32(0.1)}
    key = jax.random.key(7)
    from_key = ddim_sample(linear_denoiser, schedule, config, cond, key=key, shape=SHAPE)
    latents, step_noise = draw_noise(key, SHAPE, config)
    explicit = ddim_sample(linear_denoiser, schedule, config, cond, latents=np.asarray(latents),
                           step_noise=np.asarray(step_noise))
    np.testing.assert_array_equal(np.asarray(from_key), np.asarray(explicit))
    with pytest.raises(ValueError, match="step_noise"):
        ddim_sample(linear_denoiser, schedule, config, cond, latents=latents)
    with pytest.raises(ValueError, match="step_noise must have shape"):
        ddim_sample(linear_denoiser, schedule, config, cond, latents=latents, step_noise=step_noise[:2])


def test_guidance_one_batched_call_per_step():
    calls = []

    def model_fn(z, t, text_emb, params):
        calls.append(z.shape[0])
        return params["w"] * z + jnp.mean(text_emb, axis=(1, 2))[:, None, None, None, None] * (t / 1000.0)

    text = jax.random.normal(jax.random.key(0), (1, 5, 8))
    negative = jax.random.normal(jax.random.key(1), (1, 5, 8))
    cond = {"text": text, "negative": negative, "params": {"w": jnp.float32(0.2)}}
    z = jax.random.normal(jax.random.key(2), SHAPE)
    t = jnp.int32(500)

    guided = ClassifierFreeGuidance(model_fn, 7.5)(z, t, cond)
    assert calls == [2]  # one call, both halves batched
    uncond, conditional = model_fn(z, t, negative, cond["params"]), model_fn(z, t, text, cond["params"])
    # model_fn (~5 roundings, batched vs alone) then u + 7.5 (c - u), whose terms reach 8.5 max(|c|, |u|)
    assert_close(guided, uncond + 7.5 * (conditional - uncond), ops=8,
                 scale=8.5 * max(np.abs(uncond).max(), np.abs(conditional).max()))

    calls.clear()
    np.testing.assert_array_equal(np.asarray(ClassifierFreeGuidance(model_fn, 1.0)(z, t, cond)),
                                  np.asarray(conditional))
    assert calls == [1]  # scale 1: the conditional half only

    calls.clear()
    ddim_sample(ClassifierFreeGuidance(model_fn, 7.5), NoiseSchedule(), SamplerConfig(num_steps=6), cond, latents=z)
    assert calls == [2]  # traced once inside the scan: one batched call per step
    assert ClassifierFreeGuidance(model_fn, 7.5) == ClassifierFreeGuidance(model_fn, 7.5)  # jit cache key
    with pytest.raises(ValueError, match="guidance_scale"):
        ClassifierFreeGuidance(model_fn, -1.0)
    with pytest.raises(ValueError, match="'negative'"):
        ClassifierFreeGuidance(model_fn, 2.0)(z, t, {"text": text})


def test_training_timesteps_uniform_or_logit_normal():
    import math

    from vidrd_jax.diffusion.ddim import sample_training_timesteps

    n, key = 200_000, jax.random.key(3)
    uniform = np.asarray(sample_training_timesteps(key, n, 1000))
    assert uniform.dtype == np.int32 and uniform.min() == 0 and uniform.max() == 999
    assert abs(np.mean(uniform >= 850) - 0.15) < 0.005
    shifted = np.asarray(sample_training_timesteps(key, n, 1000, (1.0, 1.5)))
    assert 0 <= shifted.min() and shifted.max() <= 999
    # P(t >= 850) = P(sigmoid(1 + 1.5 n) >= 0.85): 31 % of the batch at the highest noise levels, not 15 %
    for edge in (250, 500, 850):
        want = 0.5 * math.erfc((math.log(edge / (1000 - edge)) - 1.0) / 1.5 / math.sqrt(2))
        assert abs(np.mean(shifted >= edge) - want) < 0.005, edge
    assert abs(np.median(shifted) - 1000 / (1 + math.exp(-1.0))) < 3


def test_min_snr_weights():
    from vidrd_jax.diffusion.ddim import min_snr_weight

    t = np.array([0, 100, 500, 900, 999])
    for prediction_type, denominator in (("epsilon", 0.0), ("v_prediction", 1.0)):
        schedule = NoiseSchedule(prediction_type=prediction_type)
        abar = np.asarray(schedule.alphas_cumprod, np.float64)[t]
        snr = abar / (1 - abar)
        want = np.minimum(snr, 5.0) / (snr + denominator)
        got = np.asarray(min_snr_weight(schedule, t, 5.0))
        # float32 abar rounds relative to 1, so 1 - abar (and the SNR) carry 1 / (1 - abar) of those roundings
        assert_close(got, want, ops=8, scale=np.abs(want) / (1 - abar))
        # low-noise steps (SNR > γ) are down-weighted, high-noise ones keep their weight (epsilon) or less than 1
        assert got[0] < got[-1] if prediction_type == "epsilon" else got.max() <= 1.0 + 1e-6
