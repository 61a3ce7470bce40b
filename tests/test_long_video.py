"""VidRD long-video sampling (paper 002 eq. 5-8): FNR, PNS, DSG, frame mappings, outputs, reproducibility."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numerics import assert_close

from vidrd_jax.diffusion import (LongVideoConfig, NoiseSchedule, SamplerConfig, ddim_sample, draw_noise,
                                 generate_long_video, sample_clip)

SCHEDULE = NoiseSchedule()
B, N, HW, C = 1, 4, 4, 4
SHAPE = (B, N, HW, HW, C)
COND = {"bias": jnp.float32(0.3)}
STEP_OPS = 24  # roundings per DDIM step: mixing_denoiser ~12 (a 4-frame mean, 3 products, 3 sums), the update ~12


def mixing_denoiser(z, t, cond):
    """Mixes frames and depends on the frame position, so frame order and every frame's history matter."""
    frames = jnp.arange(z.shape[1], dtype=z.dtype)[None, :, None, None, None]
    return 0.2 * z + 0.1 * jnp.mean(z, axis=1, keepdims=True) + 0.05 * frames + cond["bias"] * (t / 1000.0)


def config(**overrides):
    kwargs = dict(prompts=("a",), num_clips=3, num_frames=N, num_prompt_frames=2, num_steps=8)
    kwargs.update(overrides)
    return LongVideoConfig(**kwargs)


def noises(num_clips, seed=0, shape=SHAPE):
    keys = jax.random.split(jax.random.key(seed), num_clips)
    return [jax.random.normal(k, shape) for k in keys]


def run(cfg, eps_fn=mixing_denoiser, conds=(COND,), **kwargs):
    return list(generate_long_video(eps_fn, SCHEDULE, cfg, list(conds), progress=False, **kwargs))


def two_clips(cfg, eps_fn=mixing_denoiser, cond1=COND):
    n0, n1 = noises(2)
    clip0 = sample_clip(eps_fn, SCHEDULE, cfg, COND, n0)
    clip1 = sample_clip(eps_fn, SCHEDULE, cfg, cond1, n1, clip0.state)
    return n0, n1, clip0, clip1


def test_config_validation_names_fields():
    cases = {"num_prompt_frames": dict(num_prompt_frames=5), "dsg_beta": dict(dsg_beta=1.5),
             "pns_alpha": dict(pns_alpha=-1.0), "num_steps": dict(num_steps=0), "eta": dict(eta=-1.0),
             "frame_mapping": dict(frame_mapping="sideways"), "output": dict(output="some"),
             "prompts": dict(prompts=("a", "b")), "num_clips": dict(num_clips=0),
             "guidance_scale": dict(guidance_scale=float("nan")),
             "drop_prompt_frames": dict(num_prompt_frames=N, output="drop_prompt_frames")}
    for field, overrides in cases.items():
        with pytest.raises(ValueError, match=field):
            config(**overrides)
    assert config(prompts="one prompt").prompts == ("one prompt",)
    assert config(prompts=["x", "y", "z"]).prompt_index(2) == 2 and config().prompt_index(2) == 0


def test_guided_step_formula():
    paper = LongVideoConfig(prompts=("a",))  # S=50, M=4, beta=0.4
    assert (paper.num_frames, paper.num_prompt_frames, paper.pns_alpha, paper.dsg_beta, paper.num_steps,
            paper.guidance_scale, paper.negative_prompt) == (8, 4, 4.0, 0.4, 50, 10.0, "watermark")
    assert paper.guided_steps() == (20, 15, 10, 5)
    assert config(num_prompt_frames=4, dsg_beta=1.0, num_steps=10).guided_steps() == (10, 8, 5, 3)
    assert config(num_prompt_frames=4, dsg_beta=0.0).guided_steps() == (0, 0, 0, 0)
    for cfg in (config(num_prompt_frames=3, dsg_beta=0.7, num_steps=13), paper):
        m, s, beta = cfg.num_prompt_frames, cfg.num_steps, cfg.dsg_beta
        brute = tuple(sum(step < (m - k) * (s / m) * beta - 1e-9 for step in range(s)) for k in range(m))
        assert cfg.guided_steps() == brute


def test_guided_steps_are_applied_per_clip():
    cfg = LongVideoConfig(prompts=("a",), num_clips=3, num_frames=N, num_steps=50)  # M=4, beta=0.4
    clips = run(cfg, noise=noises(3))
    assert [c.guided_steps.tolist() for c in clips] == [[0, 0, 0, 0], [20, 15, 10, 5], [20, 15, 10, 5]]


def test_one_clip_equals_plain_ddim():
    noise = noises(1)
    (clip,) = run(config(num_clips=1), noise=noise)
    plain = ddim_sample(mixing_denoiser, SCHEDULE, SamplerConfig(num_steps=8), COND, latents=noise[0])
    assert_close(clip.latents, plain, ops=8 * STEP_OPS)  # 8 steps of the same maths, possibly compiled differently


@pytest.mark.parametrize("mapping", ["reverse", "forward"])
def test_dsg_copies_previous_trajectory_for_the_formula_steps(mapping):
    """M = N so the stored trajectory holds every frame; beta = 1 gives counts 8, 6, 4, 2 over S = 8 steps. Clip 1
    gets another prompt (cond), else the forward mapping with M = N would simply replay clip 0."""
    cfg = config(num_prompt_frames=N, dsg_beta=1.0, frame_mapping=mapping)
    _, _, clip0, clip1 = two_clips(cfg, cond1={"bias": jnp.float32(-0.4)})
    src = cfg.source_frames()
    assert src == ((3, 2, 1, 0) if mapping == "reverse" else (0, 1, 2, 3))
    counts = cfg.guided_steps()
    assert counts == (8, 6, 4, 2) and clip1.guided_steps.tolist() == list(counts)
    prev, cur = np.asarray(clip0.state.trajectory), np.asarray(clip1.state.trajectory)  # [S, B, M, h, w, C]
    for m in range(N):
        for s in range(cfg.num_steps):
            same = np.array_equal(cur[s, :, m], prev[s, :, src[m]])
            assert same == (s < counts[m]), (m, s)


def test_beta_zero_never_copies():
    cfg = config(num_prompt_frames=N, dsg_beta=0.0)
    _, _, clip0, clip1 = two_clips(cfg)
    assert clip1.guided_steps.tolist() == [0] * N
    prev, cur = np.asarray(clip0.state.trajectory), np.asarray(clip1.state.trajectory)
    np.testing.assert_array_equal(cur[0], prev[0][:, ::-1])  # step 0 input: FNR, the reversed initial latents
    for s in range(1, cfg.num_steps):
        for m in range(N):
            assert not np.allclose(cur[s, :, m], prev[s, :, N - 1 - m], atol=1e-4), (m, s)


@pytest.mark.parametrize("mapping", ["reverse", "forward"])
def test_fnr_and_pns_initial_latents(mapping):
    cfg = config(frame_mapping=mapping, pns_alpha=4.0)
    _, n1, clip0, clip1 = two_clips(cfg)
    prev, init = np.asarray(clip0.state.init_latents), np.asarray(clip1.state.init_latents)
    src = cfg.source_frames()
    expected_src = [N - 1 - j for j in range(N)] if mapping == "reverse" else [(j + N - 2) % N for j in range(N)]
    assert list(src) == expected_src
    a, b = 4 / math.sqrt(17), 1 / math.sqrt(17)
    for j in range(N):
        want = prev[:, src[j]] if j < cfg.num_prompt_frames else a * prev[:, src[j]] + b * np.asarray(n1)[:, j]
        assert_close(init[:, j], want, ops=4)  # a*x + b*n, with a, b rounded to float32
    np.testing.assert_array_equal(prev, np.asarray(noises(1)[0]))  # clip 0: eq. 5, the noise itself


def test_large_alpha_pns_equals_fnr_and_zero_alpha_is_fresh_noise():
    inits = {}
    for alpha in (1e8, math.inf, 0.0):
        _, n1, clip0, clip1 = two_clips(config(pns_alpha=alpha))
        inits[alpha] = np.asarray(clip1.state.init_latents)
    fnr = np.asarray(clip0.state.init_latents)[:, ::-1]  # eq. 6 for every frame
    np.testing.assert_array_equal(inits[math.inf], fnr)
    assert_close(inits[1e8], fnr, ops=2)  # a = 1 - 5e-17, b = 1e-8: a*x + b*n is x within a rounding or two
    np.testing.assert_array_equal(inits[0.0][:, 2:], np.asarray(n1)[:, 2:])
    np.testing.assert_array_equal(inits[0.0][:, :2], fnr[:, :2])


def test_output_modes_and_per_clip_conds():
    noise = noises(3)
    conds = [COND, {"bias": jnp.float32(-0.5)}, {"bias": jnp.float32(0.9)}]
    full = run(config(prompts=("a", "b", "c")), conds=conds, noise=noise)
    dropped = run(config(prompts=("a", "b", "c"), output="drop_prompt_frames"), conds=conds, noise=noise)
    assert [c.latents.shape[1] for c in full] == [N, N, N]
    assert [c.latents.shape[1] for c in dropped] == [N, N - 2, N - 2]
    for f, d in zip(full[1:], dropped[1:]):
        np.testing.assert_array_equal(np.asarray(f.latents)[:, 2:], np.asarray(d.latents))
    np.testing.assert_array_equal(np.asarray(full[0].latents), np.asarray(dropped[0].latents))
    # Clip 1 used conds[1]: rebuilding clip 1 by hand with that cond reproduces it, with conds[0] it does not.
    clip0 = sample_clip(mixing_denoiser, SCHEDULE, config(), conds[0], noise[0])
    by_hand = sample_clip(mixing_denoiser, SCHEDULE, config(), conds[1], noise[1], clip0.state)
    wrong = sample_clip(mixing_denoiser, SCHEDULE, config(), conds[0], noise[1], clip0.state)
    np.testing.assert_array_equal(np.asarray(full[1].latents), np.asarray(by_hand.latents))
    assert not np.allclose(np.asarray(full[1].latents), np.asarray(wrong.latents), atol=1e-3)
    with pytest.raises(ValueError, match="conds has 1 entries"):
        run(config(prompts=("a", "b", "c")), noise=noise)


def test_explicit_noise_is_bitwise_reproducible_and_matches_key():
    cfg = config(eta=0.5)
    key = jax.random.key(11)
    from_key = run(cfg, key=key, latent_shape=SHAPE)
    drawn = [draw_noise(jax.random.fold_in(key, i), SHAPE, cfg.sampler) for i in range(cfg.num_clips)]
    explicit = [run(cfg, noise=[np.asarray(d[0]) for d in drawn], step_noise=[np.asarray(d[1]) for d in drawn])
                for _ in range(2)]
    for a, b, c in zip(from_key, *explicit):
        np.testing.assert_array_equal(np.asarray(a.latents), np.asarray(b.latents))
        np.testing.assert_array_equal(np.asarray(b.latents), np.asarray(c.latents))
    with pytest.raises(ValueError, match="step_noise"):
        run(cfg, noise=[d[0] for d in drawn])
    with pytest.raises(ValueError, match="num_frames=4"):
        run(cfg, key=key, latent_shape=(1, 5, 4, 4, 4))


def test_clip_function_traced_once_for_any_number_of_clips():
    traces = []

    def counting_denoiser(z, t, cond):
        traces.append(z.shape)
        return mixing_denoiser(z, t, cond)

    run(config(num_clips=1), eps_fn=counting_denoiser, noise=noises(1))
    assert len(traces) == 1
    six = run(config(num_clips=6, prompts=("p",) * 6), eps_fn=counting_denoiser, conds=[COND] * 6, noise=noises(6))
    assert len(six) == 6 and len(traces) == 1  # clip 0 and clips 1-5 reuse the one compiled program
