"""Average fusion (paper 000 eq. 11) and the step-range sampler it runs between."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vidrd_jax.diffusion.average_fusion import average_fusion, fitted_weights, sample_steps, timestep_at
from vidrd_jax.diffusion.schedule import NoiseSchedule
from vidrd_jax.diffusion.solvers import SamplerConfig, ddim_sample

SHAPE = (2, 3, 4, 4, 4)  # [B, F, h, w, C]


def _inputs(n: int, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 3)
    backgrounds = jax.random.normal(keys[0], (n,) + SHAPE)
    foreground = jax.random.normal(keys[1], SHAPE)
    mask = (jax.random.uniform(keys[2], SHAPE[:-1] + (1,)) < 0.3).astype(jnp.float32)
    return backgrounds, foreground, mask


def test_one_background_weights_one_zero_return_the_background():
    backgrounds, foreground, mask = _inputs(1)
    fused = np.asarray(average_fusion(backgrounds, foreground, mask, (1.0, 0.0)))
    np.testing.assert_array_equal(fused, np.asarray((1 - mask) * backgrounds[0]))
    outside = np.broadcast_to(np.asarray(mask) == 0, SHAPE)
    np.testing.assert_array_equal(fused[outside], np.asarray(backgrounds[0])[outside])
    assert not fused[~outside].any()


def test_masks_respected_bit_exactly():
    """Inside the mask eq. 11 is w2 · foreground, outside w1 · the mean background, whatever the other region
    holds."""
    backgrounds, foreground, mask = _inputs(3)
    w = (0.7, 1.3)
    fused = np.asarray(average_fusion(backgrounds, foreground, mask, w))
    inside = np.broadcast_to(np.asarray(mask) == 1, SHAPE)
    np.testing.assert_array_equal(fused[inside], np.asarray(w[1] * (mask * foreground))[inside])
    poisoned = average_fusion(jnp.where(inside, 1e6, backgrounds), jnp.where(inside, foreground, -1e6), mask, w)
    np.testing.assert_array_equal(np.asarray(poisoned), fused)
    expected_bg = w[0] * np.sum(np.asarray(backgrounds), 0) / 3
    np.testing.assert_allclose(fused[~inside], expected_bg[~inside], rtol=1e-6, atol=1e-6 * np.abs(expected_bg).max())


def test_same_latent_everywhere_with_unit_weights_is_the_identity():
    _, foreground, mask = _inputs(1)
    fused = average_fusion(jnp.stack([foreground] * 4), foreground, mask, (1.0, 1.0))
    np.testing.assert_allclose(np.asarray(fused), np.asarray(foreground), rtol=1e-6, atol=1e-6)


def test_fitted_weights_match_region_rms():
    backgrounds, foreground, mask = _inputs(4, seed=1)
    w = np.asarray(fitted_weights(backgrounds, foreground, mask))
    fused = np.asarray(average_fusion(backgrounds, foreground, mask, w))
    m = np.broadcast_to(np.asarray(mask), SHAPE)
    for region in (m == 0, m == 1):
        np.testing.assert_allclose(np.sqrt(np.mean(fused[region] ** 2)),
                                   np.sqrt(np.mean(np.asarray(foreground)[region] ** 2)), rtol=1e-5)
    assert w[1] == pytest.approx(1.0, abs=1e-6)
    assert w[0] > 1.3  # the mean of 4 independent normals has rms 1/2: the fit restores it (about x2)


def test_bad_shapes_are_named():
    backgrounds, foreground, mask = _inputs(2)
    with pytest.raises(ValueError, match="backgrounds must be"):
        average_fusion(backgrounds[0], foreground, mask, (1.0, 1.0))
    with pytest.raises(ValueError, match="fg_mask"):
        average_fusion(backgrounds, foreground, mask[:1, :2], (1.0, 1.0))


def _toy_eps(z, t, cond):
    return jnp.tanh(z * cond["scale"] + t.astype(jnp.float32) / 1000.0)


@pytest.mark.parametrize("solver,eta", [("ddim", 0.0), ("ddim", 1.0), ("dpm_solver++", 0.0)])
def test_step_ranges_chain_to_the_full_sampler(solver, eta):
    schedule = NoiseSchedule.sd21_base()
    config = SamplerConfig(num_steps=6, eta=eta, solver=solver)
    cond = {"scale": jnp.float32(0.5)}
    key = jax.random.key(3)
    latents = jax.random.normal(key, SHAPE)
    noise = jax.random.normal(jax.random.fold_in(key, 1), (6,) + SHAPE) if eta else None
    full = ddim_sample(_toy_eps, schedule, config, cond, latents=latents, step_noise=noise)
    x, state = sample_steps(_toy_eps, schedule, config, cond, latents, start=0, stop=2, step_noise=noise)
    x, _ = sample_steps(_toy_eps, schedule, config, cond, x, start=2, stop=6, state=state, step_noise=noise)
    np.testing.assert_allclose(np.asarray(x), np.asarray(full), rtol=1e-5, atol=1e-5 * float(jnp.abs(full).max()))
    assert timestep_at(schedule, config, 0) == int(schedule.ddim_timesteps(6)[0])
    with pytest.raises(ValueError, match="start <= stop"):
        sample_steps(_toy_eps, schedule, config, cond, latents, start=3, stop=2, step_noise=noise)
