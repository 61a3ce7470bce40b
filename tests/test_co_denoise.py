"""Temporal co-denoising (Gen-L-Video, paper 000 eq. 18-19): windows, weights, per-window prompts, chunking."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import assert_close

from vidrd_jax.diffusion import (ClassifierFreeGuidance, CoDenoiseConfig, NoiseSchedule, SamplerConfig,
                                 co_denoise_sample, ddim_sample, draw_noise)
from vidrd_jax.diffusion.solvers import ddim_step, ddim_tables

SCHEDULE = NoiseSchedule()
WEIGHTINGS = ("uniform", "pyramid", "gaussian")
STEP_OPS = 28  # roundings per step: mixing_denoiser ~12, the DDIM update ~12, the weighted merge of windows ~4


def mixing_denoiser(z, t, cond):
    frames = jnp.arange(z.shape[1], dtype=z.dtype)[None, :, None, None, None]
    return 0.2 * z + 0.1 * jnp.mean(z, axis=1, keepdims=True) + 0.05 * frames + cond["bias"] * (t / 1000.0)


def pointwise_denoiser(z, t, cond):
    """Each frame's output depends on that frame and the cond only."""
    return 0.1 * z + cond["bias"] * (t / 1000.0)


def constant_denoiser(z, t, cond):
    return jnp.full_like(z, 0.3) + cond["bias"]


def config(**overrides):
    kwargs = dict(prompts=("a",), num_frames=12, window_size=4, stride=2, num_steps=4)
    kwargs.update(overrides)
    return CoDenoiseConfig(**kwargs)


def latents_for(cfg, seed=0):
    return jax.random.normal(jax.random.key(seed), (1, cfg.num_frames, 4, 4, 4))


def bias(value):
    return {"bias": jnp.float32(value)}


def test_uncovered_length_is_rejected_naming_k_s_l():
    with pytest.raises(ValueError, match=r"L=14 .*K=8 .*S=4.*nearest valid lengths are 12 and 16"):
        CoDenoiseConfig(prompts=("a",), num_frames=14, window_size=8, stride=4)
    with pytest.raises(ValueError, match=r"L=5 .*K=8 .*S=4.*nearest valid lengths are 8 and 12"):
        CoDenoiseConfig(prompts=("a",), num_frames=5, window_size=8, stride=4)
    with pytest.raises(ValueError, match="stride"):
        config(stride=5)
    with pytest.raises(ValueError, match="weighting"):
        config(weighting="cosine")
    with pytest.raises(ValueError, match="window_chunk_size"):
        config(window_chunk_size=0)
    with pytest.raises(ValueError, match="prompts has 6 entries"):
        config(prompts=tuple("abcdef"))  # 5 windows
    assert config().num_windows == 5


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_single_window_equals_plain_ddim(weighting):
    cfg = config(num_frames=4, weighting=weighting)
    assert cfg.num_windows == 1
    latents = latents_for(cfg)
    ours = co_denoise_sample(mixing_denoiser, SCHEDULE, cfg, [bias(0.3)], latents=latents)
    plain = ddim_sample(mixing_denoiser, SCHEDULE, SamplerConfig(num_steps=4), bias(0.3), latents=latents)
    assert_close(ours, plain, ops=4 * STEP_OPS)


def test_single_window_with_eta_and_guidance_shared_cond():
    """eta > 0 with explicit noise, guidance with params and the negative prompt passed unstacked."""
    def model_fn(z, t, text_emb, params):
        return params["w"] * z + jnp.mean(text_emb, axis=(1, 2))[:, None, None, None, None] * (t / 1000.0)

    eps_fn = ClassifierFreeGuidance(model_fn, 5.0)
    cfg = config(num_frames=4, eta=0.8)
    latents, step_noise = draw_noise(jax.random.key(4), (1, 4, 4, 4, 4), cfg.sampler)
    text = jax.random.normal(jax.random.key(5), (1, 3, 8))
    shared = {"params": {"w": jnp.float32(0.25)}, "negative": jnp.zeros((1, 3, 8))}
    ours = co_denoise_sample(eps_fn, SCHEDULE, cfg, [{"text": text}], shared_cond=shared, latents=latents,
                             step_noise=step_noise)
    plain = ddim_sample(eps_fn, SCHEDULE, cfg.sampler, {**shared, "text": text}, latents=latents, step_noise=step_noise)
    assert_close(ours, plain, ops=4 * (STEP_OPS + 8))  # + guidance (2 passes, 3 ops) and eta noise (~5 ops)


@pytest.mark.parametrize("num_windows,num_prompts,expected", [
    (6, 3, (0, 0, 1, 1, 1, 2)),  # anchors 0, 3 (2.5 rounds half up), 5; window 4 is a tie -> prompt 1
    (5, 2, (0, 0, 0, 1, 1)),  # anchors 0, 4; window 2 is a tie -> prompt 0
    (4, 4, (0, 1, 2, 3)),
    (3, 1, (0, 0, 0)),
    (7, 3, (0, 0, 1, 1, 1, 2, 2)),  # anchors 0, 3, 6
])
def test_window_prompt_rule(num_windows, num_prompts, expected):
    cfg = CoDenoiseConfig(prompts=tuple(str(p) for p in range(num_prompts)), num_frames=4 + (num_windows - 1) * 2,
                          window_size=4, stride=2)
    assert cfg.num_windows == num_windows
    assert cfg.window_prompts() == expected


def test_windows_use_their_prompts_cond():
    """Non-overlapping windows (S = K = 2, W = 4, P = 2 -> prompts 0, 0, 1, 1) with a pointwise denoiser: every frame
    is plain DDIM under its window's prompt."""
    cfg = config(prompts=("a", "b"), num_frames=8, window_size=2, stride=2)
    assert cfg.window_prompts() == (0, 0, 1, 1)
    latents = latents_for(cfg)
    ours = np.asarray(co_denoise_sample(pointwise_denoiser, SCHEDULE, cfg, [bias(0.5), bias(-2.0)], latents=latents))
    with_a = np.asarray(ddim_sample(pointwise_denoiser, SCHEDULE, cfg.sampler, bias(0.5), latents=latents))
    with_b = np.asarray(ddim_sample(pointwise_denoiser, SCHEDULE, cfg.sampler, bias(-2.0), latents=latents))
    assert_close(ours[:, :4], with_a[:, :4], ops=4 * STEP_OPS)
    assert_close(ours[:, 4:], with_b[:, 4:], ops=4 * STEP_OPS)
    assert not np.allclose(with_a[:, 4:], with_b[:, 4:], atol=1e-2)


def test_weights_normalise_constant_denoiser():
    """With a frame-wise constant prediction every window proposes the same x_{t-1} for a frame, so every weighting
    must return exactly plain DDIM on the whole video."""
    latents = latents_for(config())
    plain = ddim_sample(constant_denoiser, SCHEDULE, SamplerConfig(num_steps=4), bias(0.1), latents=latents)
    for weighting in WEIGHTINGS:
        ours = co_denoise_sample(constant_denoiser, SCHEDULE, config(weighting=weighting), [bias(0.1)], latents=latents)
        assert_close(ours, plain, ops=4 * STEP_OPS, err_msg=weighting)


@pytest.mark.parametrize("weighting", ["uniform", "pyramid"])
def test_one_step_is_the_weighted_mean_of_window_updates(weighting):
    """Eq. 19 by hand: every window takes a DDIM step; each frame is the weighted mean of its windows' proposals."""
    cfg = config(num_steps=1, weighting=weighting)
    latents = np.asarray(latents_for(cfg))
    ours = np.asarray(co_denoise_sample(mixing_denoiser, SCHEDULE, cfg, [bias(0.3)], latents=latents))
    tables = ddim_tables(SCHEDULE, 1)
    k, s = cfg.window_size, cfg.stride
    weights = cfg.window_weights()
    total, norm = np.zeros_like(latents, dtype=np.float64), np.zeros(cfg.num_frames)
    for w in range(cfg.num_windows):
        window = latents[:, w * s:w * s + k]
        out = mixing_denoiser(jnp.asarray(window), jnp.int32(tables.timesteps[0]), bias(0.3))
        proposal, _ = ddim_step(jnp.asarray(window), out, tables.alphas[0], tables.alphas_prev[0],
                                prediction_type="epsilon")
        total[:, w * s:w * s + k] += weights[None, :, None, None, None] * np.asarray(proposal)
        norm[w * s:w * s + k] += weights
    want = total / norm[None, :, None, None, None]
    assert_close(ours, want, ops=STEP_OPS)  # one step; `want` merges in float64
    if weighting == "pyramid":
        uniform = np.asarray(co_denoise_sample(mixing_denoiser, SCHEDULE, config(num_steps=1), [bias(0.3)],
                                               latents=latents))
        assert not np.allclose(ours, uniform, atol=1e-4)  # the weighting matters when windows disagree


def test_chunk_size_does_not_change_results():
    prompts = ("a", "b", "c")
    conds = [bias(0.3), bias(-0.2), bias(1.0)]
    latents = latents_for(config())
    results = [np.asarray(co_denoise_sample(mixing_denoiser, SCHEDULE,
                                            config(prompts=prompts, weighting="pyramid", window_chunk_size=chunk),
                                            conds, latents=latents))
               for chunk in (None, 1, 2)]  # 5 windows: one vmap, five single-window chunks, three padded chunks of 2
    assert_close(results[1], results[0], ops=4 * STEP_OPS)
    assert_close(results[2], results[0], ops=4 * STEP_OPS)
