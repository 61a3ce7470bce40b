"""Temporal decoder fine-tuning (paper §4.4, eq. 9) end to end on the built-in data with a small VAE.

The module pre-trains a small KL autoencoder (channels (8, 16), 16x16 pixels, clips of 8 keyframes) for reconstruction,
saves it as a VAE-only inference checkpoint, fine-tunes its Temp-Convs with the trainer
(``configs/vae_temporal.py:demo``, 8 fake devices) and evaluates before/after once; the tests share that run.
"""
import types
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import skimage.metrics
from numerics import assert_close

import data_pipelines
from vidrd_jax import checkpoints, config_loading, export, train, train_config, video_metrics
from vidrd_jax import metric_writer as metrics_lib
from vidrd_jax import train_state as ts
from vidrd_jax.convert import naming
from vidrd_jax.models.discriminator import clip_accuracy
from vidrd_jax.models.vae import AutoencoderKL, VAEConfig
from vidrd_jax.tasks import autoencoder_losses, kl_autoencoder
from vidrd_jax.tasks.vae_temporal import VAETemporalTask

CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "vae_temporal.py"
REFERENCE_KEYS = Path(__file__).resolve().parent / "reference" / "vidrd_temporal_vae_keys.tsv"
PRETRAIN_STEPS = 150
FINETUNE_STEPS = 200
# LDM's KL weight (1e-6 on sums over pixels) for a per-pixel mean L1: the posterior keeps a large variance this early,
# so per-frame posterior samples disagree from frame to frame as generated latents do.
KL_WEIGHT = 1e-8
# The small VAE's encoder + decoder chain (~12 conv / norm / attention layers, ~80 roundings each) and the metrics.
VAE_EVAL_OPS = 1000


def load_config(arg: str = "demo") -> ml_collections.ConfigDict:
    return config_loading.load_config(f"{CONFIG_FILE}:{arg}")


def pretrain_vae(vae_config: VAEConfig, data_config, steps: int, seed: int = 0):
    """Frame-wise KL-autoencoder training (L1 + KL, posterior samples) of every 2-D parameter; Temp-Convs unused."""
    model = AutoencoderKL(vae_config)
    size = 2 ** (len(vae_config.block_out_channels) - 1)
    params = nn.meta.unbox(jax.jit(lambda r: model.init(r, jnp.zeros((2, size, size, 3)), num_frames=2))(
        jax.random.key(seed))["params"])
    tx = optax.adam(optax.cosine_decay_schedule(1e-2, steps, 0.1))

    @jax.jit
    def step(params, opt_state, video, rng):
        x = video.reshape((-1,) + video.shape[2:])

        def loss_fn(p):
            recon, mean, logvar = model.apply({"params": p}, x, sample_posterior=True, rng=rng)
            return jnp.mean(jnp.abs(recon - x)) + KL_WEIGHT * jnp.mean(autoencoder_losses.kl_divergence(mean, logvar))

        grads = jax.grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    iterator = data_pipelines.make_iterator(data_config, batch_size=4, seed=seed + 100)
    for i in range(steps):
        params, opt_state = step(params, opt_state, next(iterator)["video"], jax.random.key(i))
    return jax.device_get(params)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("vae_temporal")
    config = load_config("demo")
    config.sample.num_batches = 4  # 64 fixed evaluation clips: the flicker change is a mean over enough clips
    # Replicate padding in time (as the demo's VAE): the end frames decode like the inner ones, so whole-clip flicker
    # measures what the Temp-Convs learn; with zero padding its sign depends on the seed and the float path.
    vae_config = VAEConfig.tiny(block_out_channels=(8, 16), temporal_padding="replicate")
    pretrained = pretrain_vae(vae_config, config.data, PRETRAIN_STEPS)
    init_from = checkpoints.save_inference_checkpoint(str(root / "small_vae"), {"vae": pretrained},
                                                      {"vae": vae_config.to_dict()})
    config.model.init_from = init_from
    config.total_steps = FINETUNE_STEPS
    config.log_every_steps = 10
    config.progress_bar = False
    config.checkpoint.update(every_steps=FINETUNE_STEPS, async_save=False)
    config.sample.every_steps = FINETUNE_STEPS  # the trainer evaluates the final EMA and writes previews
    task = VAETemporalTask(config)
    before = task.evaluate({"vae": pretrained})
    workdir = str(root / "run")
    state = train.train_and_evaluate(config, workdir)
    final = jax.device_get(state.params())
    final_ema = jax.device_get(state.params(use_ema=True))
    after = task.evaluate({"vae": final_ema["vae"]})
    print("\nbefore:", {k: round(v, 4) for k, v in before.items() if "image_decoder" in k})
    print("after: ", {k: round(v, 4) for k, v in after.items() if "temporal_decoder" in k or "delta" in k})
    return types.SimpleNamespace(config=config, task=task, pretrained=pretrained, before=before, after=after,
                                 state=state, final=final, final_ema=final_ema, workdir=workdir,
                                 history=[r for r in metrics_lib.read_jsonl(workdir) if "loss" in r],
                                 evaluation=[r for r in metrics_lib.read_jsonl(workdir) if "loss" not in r])


def test_zero_initialised_temporal_decoder_is_the_image_decoder(run):
    # Before fine-tuning, decoding clips (Temp-Convs active) equals decoding frame by frame, exactly.
    for latents in ("mean", "sample"):
        for metric in ("psnr", "ssim", "flicker"):
            assert run.before[f"{latents}/delta/{metric}"] == 0.0
    # Bitwise, also in training mode (dropout active before the zero conv).
    vae = AutoencoderKL(run.task.vae_config)
    z = jax.random.normal(jax.random.key(1), (8, 8, 8, 4))

    @jax.jit
    def decodes(params):
        def decode(num_frames, deterministic):
            return vae.apply({"params": params}, z, num_frames=num_frames, deterministic=deterministic,
                             method="decode", rngs={"dropout": jax.random.key(2)})
        return [(decode(4, det), decode(1, det)) for det in (True, False)]

    for clip, frames in decodes(run.pretrained):  # pre-trained 2-D layers, Temp-Convs as initialised
        np.testing.assert_array_equal(clip, frames)
    clip, frames = decodes(run.final["vae"])[0]
    assert not np.array_equal(clip, frames)


def test_only_temporal_decoder_parameters_change(run):
    before, after = ts.flatten(run.pretrained), ts.flatten(run.final["vae"])
    assert before.keys() == after.keys()
    temporal = {p for p in before if "/temp_convs_" in p}
    assert temporal and all(p.startswith("decoder/") for p in temporal)
    for path in before:
        if path in temporal:
            assert not np.array_equal(before[path], after[path]), f"{path} did not train"
        else:
            assert before[path].dtype == after[path].dtype and np.array_equal(before[path], after[path]), path
    assert run.history[-1]["skipped_steps"] == 0


def test_discriminator_learns_to_tell_real_from_reconstructed_clips(run):
    first, last = run.history[0], run.history[-1]
    assert last["d_loss"] < first["d_loss"]
    assert last["disc_accuracy"] >= 0.75, [h["disc_accuracy"] for h in run.history]
    # Measured on the fixed evaluation clips (not trained on), against temporal-decoder reconstructions.
    task, params = run.task, run.final

    @jax.jit
    def accuracy(params, video, rng):
        mean, logvar = task.encode(params, video)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(rng, mean.shape)
        recon = task.vae.apply({"params": params["vae"]}, z, num_frames=video.shape[1], method="decode")
        logits = task.discriminator.apply({"params": params["discriminator"]},
                                          jnp.concatenate([video, recon.reshape(video.shape)]))
        return clip_accuracy(*jnp.split(logits, 2))

    measured = np.mean([accuracy(params, jnp.asarray(c), jax.random.key(i)) for i, c in enumerate(task.eval_clips)])
    print(f"discriminator clip accuracy on held-out clips: {measured:.3f}")
    assert measured > 0.6


def test_fine_tuning_keeps_psnr_and_leaves_the_image_decoder_unchanged(run):
    before, after = run.before, run.after  # after: the EMA of the Temp-Convs (the demo config's choice)
    # Whether this tiny run (16² px, 150 + 200 steps) lowers flicker depends on the seed and the float path: over
    # seeds 0-2 x (default, AVX2 cap) the posterior samples' flicker changed by -0.0056 to +0.0060 (BENCHMARKS.md,
    # "Temporal VAE decoder fine-tuning"), so it is not asserted here. tests/test_demo.py asserts the fall on the
    # demo's temporal-VAE stage, where it holds with a margin over seeds and float paths. PSNR rose in every run
    # (+0.02 to +1.04 dB).
    for latents in ("mean", "sample"):
        assert after[f"{latents}/temporal_decoder/psnr"] > before[f"{latents}/image_decoder/psnr"] - 0.5
        assert np.isfinite(after[f"{latents}/temporal_decoder/flicker"])
    # evaluate() reports the image decoder alongside the temporal one: the frozen 2-D path is unchanged.
    for k, v in before.items():
        if "image_decoder" in k:
            assert after[k] == v


def test_checkpoints_hold_both_players_and_export_loads_in_the_generator_tree(run, tmp_path):
    config = run.config
    trainer = train.build_trainer(config)
    ckpt = checkpoints.TrainCheckpointer(str(Path(run.workdir) / checkpoints.TRAIN_CHECKPOINT_DIR), read_only=True)
    try:
        iterator = train.make_data_iterator(config, trainer.data_shard())
        restored, _ = ckpt.restore(ckpt.latest_step(), trainer.abstract_state, iterator)
    finally:
        ckpt.close()
    inner = restored.opt_state.inner_states
    assert set(inner) == {kl_autoencoder.GENERATOR, kl_autoencoder.DISCRIMINATOR}
    for a, b in zip(jax.tree.leaves(jax.device_get(restored.opt_state)), jax.tree.leaves(jax.device_get(
            run.state.opt_state))):
        np.testing.assert_array_equal(a, b)

    out = export.export(run.workdir, str(tmp_path / "exported"), use_ema=True)
    params, model_config = checkpoints.load_inference_checkpoint(out)
    assert set(params) == {"vae"} and set(model_config) >= {"vae", "source"}
    exported_vae = jax.tree.map(np.asarray, params["vae"])
    jax.tree.map(np.testing.assert_array_equal, exported_vae, run.final_ema["vae"])
    vae_config = VAEConfig.from_dict(model_config["vae"])
    assert vae_config == run.task.vae_config
    # The generator's tree: the exported VAE evaluates exactly as the trained one.
    assert run.task.evaluate({"vae": exported_vae}) == run.after
    # export_into: the other models of a full checkpoint are kept as stored; only the VAE is replaced (and cast).
    full = checkpoints.save_inference_checkpoint(
        str(tmp_path / "full"), {"vae": run.pretrained, "unet": {"conv_in": {"kernel": np.arange(6.0).reshape(2, 3)}}},
        {"vae": run.task.vae_config.to_dict(), "unet": {"in_channels": 4}, "scheduler": {"beta_schedule": "x"}})
    config = ml_collections.ConfigDict(run.config.to_dict())
    config.model.export_into = full
    params, model_config = VAETemporalTask(config).export(run.final_ema, "bfloat16")
    np.testing.assert_array_equal(params["unet"]["conv_in"]["kernel"], np.arange(6.0).reshape(2, 3))
    assert model_config["unet"] == {"in_channels": 4} and model_config["scheduler"] == {"beta_schedule": "x"}
    assert model_config["vae"]["dtype"] == "bfloat16"
    assert {x.dtype for x in jax.tree.leaves(params["vae"])} == {jnp.dtype(jnp.bfloat16)}
    # Diffusers / VidRD-release key layout for the temporal layers.
    reference = {line.split("\t")[0] for line in REFERENCE_KEYS.read_text().splitlines()[1:]}
    keys = naming.params_to_state_dict({"decoder": exported_vae["decoder"]})
    temporal = {f"{k}" for k in keys if ".temp_convs." in k}
    assert temporal and temporal <= reference, sorted(temporal - reference)[:5]


def test_adaptive_weight_gradient_and_disc_start(run):
    config = ml_collections.ConfigDict(run.config.to_dict())
    config.loss.disc_start = 3
    task = VAETemporalTask(config)
    # The trained discriminator may be past the hinge's margin on these clips (zero gradient either way): a zeroed
    # last layer puts every logit at 0, inside the margin, so at disc_start its loss has a gradient.
    disc = dict(run.final["discriminator"])
    last = max((k for k in disc if k.startswith("conv_")), key=lambda k: int(k.split("_")[1]))
    disc[last] = jax.tree.map(jnp.zeros_like, disc[last])
    params = {**run.final, "discriminator": disc}
    video = jnp.asarray(task.eval_clips[0][:2])
    inputs = task.preprocess(params, {"video": video}, jax.random.key(0))
    labels = task.param_labels(params)
    trainable, frozen = ts.partition(params, labels)
    z = task.encode(params, video)[0]
    kernel = params["vae"]["decoder"]["conv_out"]["kernel"]

    def with_kernel(k):
        decoder = {**params["vae"]["decoder"], "conv_out": {**params["vae"]["decoder"]["conv_out"], "kernel": k}}
        return {**params, "vae": {**params["vae"], "decoder": decoder}}

    @jax.jit
    def check(trainable, kernel, step):
        loss_fn = lambda t: task.loss(ts.merge(t, frozen), inputs, jax.random.key(1), step=step)  # noqa: E731
        grads = jax.grad(loss_fn, has_aux=True)(trainable)
        # The last-layer gradients behind LDM's adaptive weight vs autodiff through the decoder w.r.t. conv_out.
        recon, last_input = task.decode(params, z, video.shape[1])
        nll = lambda r: task.reconstruction_loss(params, video, r.reshape(video.shape))[0]  # noqa: E731
        via_conv = autoencoder_losses.conv_kernel_grads(last_input, kernel, jax.grad(nll)(recon))[0]
        autodiff = jax.grad(lambda k: nll(task.decode(with_kernel(k), z, video.shape[1])[0]))(kernel)
        return grads, via_conv, autodiff

    (g2, m2), via_conv, autodiff = check(trainable, kernel, jnp.int32(2))
    (g3, m3), _, _ = check(trainable, kernel, jnp.int32(3))  # same program, step is an argument
    assert float(m2["disc_factor"]) == 0.0 and float(m3["disc_factor"]) == 1.0
    assert all(not np.any(x) for x in jax.tree.leaves(g2["discriminator"]))
    assert any(np.any(x) for x in jax.tree.leaves(g3["discriminator"]))
    assert_close(via_conv, autodiff, ops=2 * 8 * 16 * 16)  # a sum over 2 clips x 8 frames x 16 x 16, reordered
    assert float(jnp.max(jnp.abs(autodiff))) > 0


def test_saturation_weight_scales_each_pixels_error_by_its_targets_saturation(run):
    config = ml_collections.ConfigDict(run.config.to_dict())
    rng = np.random.default_rng(0)
    video = rng.uniform(-1.0, 1.0, (2, 3, 8, 8, 3)).astype(np.float32)
    recon = rng.uniform(-1.0, 1.0, video.shape).astype(np.float32)
    saturation = (video.max(-1) - video.min(-1)) / 2.0  # in [0, 1]
    for pixel_loss, error in (("l1", np.abs(video - recon)), ("l2", np.square(video - recon))):
        for weight in (0.0, 5.0):
            config.loss.update(pixel_loss=pixel_loss, saturation_weight=weight)
            loss, metrics = VAETemporalTask(config).reconstruction_loss(
                {"vae": run.final["vae"]}, jnp.asarray(video), jnp.asarray(recon))
            expected = np.mean(error * (1.0 + weight * saturation)[..., None], dtype=np.float64)
            assert_close(metrics[pixel_loss], expected, ops=error.size, scale=expected, err_msg=(pixel_loss, weight))
            assert_close(loss, config.loss.rec_weight * expected, ops=error.size, scale=expected)
    # A gray target pixel (saturation 0) weighs 1, a fully saturated one 1 + s.
    config.loss.update(pixel_loss="l1", saturation_weight=5.0)
    target = np.zeros((1, 1, 1, 2, 3), np.float32)  # pixel 0 gray, pixel 1 pure red
    target[..., 1, :] = (1.0, -1.0, -1.0)
    loss = VAETemporalTask(config).reconstruction_loss({"vae": run.final["vae"]}, jnp.asarray(target),
                                                      jnp.asarray(target + 0.5))[1]["l1"]
    assert_close(loss, 0.5 * (1.0 + 6.0) / 2.0, ops=target.size)


def test_trainer_logs_the_evaluation_and_writes_previews(run):
    # After the last step the trainer ran Task.evaluate on the EMA weights and logged it under eval/.
    assert [r["step"] for r in run.evaluation] == [FINETUNE_STEPS]
    logged = {k[len("eval/"):]: v for k, v in run.evaluation[-1].items() if k.startswith("eval/")}
    assert logged.keys() == run.after.keys()
    for key, value in run.after.items():  # sharded (8 devices) vs one device; a delta at its metric's scale
        scale = abs(run.after[key.replace("delta", "image_decoder")])
        assert_close(logged[key], value, ops=VAE_EVAL_OPS, scale=scale, err_msg=key)
    assert sorted(p.name for p in (Path(run.workdir) / train.SAMPLES_DIR).iterdir())[0].endswith(".gif")
    previews = run.task.sample({"vae": run.final["vae"]}, jax.random.key(0))
    s = run.config.sample
    h, w = run.config.data.resolution
    assert previews.dtype == jnp.uint8 and previews.shape == (s.num_previews, run.config.data.num_frames, h, 3 * w, 3)


def test_config_errors_name_the_field(tmp_path):
    def broken(**changes):
        config = load_config("demo")
        for path, value in changes.items():
            node = config
            *parents, leaf = path.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        return config

    cases = {("loss.disc_start", -1): "loss.disc_start", ("loss.disc_weight", -0.5): "loss.disc_weight",
             ("model.discriminator.num_layers", 4): "discriminator", ("data.num_frames", 1): "data.num_frames",
             ("loss.lpips_dir", str(tmp_path / "missing")): "loss.lpips_dir",
             ("loss.saturation_weight", -1.0): "loss.saturation_weight",
             ("trainable_regex", "("): "trainable_regex",
             ("model.export_into", str(tmp_path / "nothing")): "model.export_into"}
    for (path, value), field in cases.items():
        with pytest.raises(ValueError, match=field.replace(".", r"\.")):
            train_config.validate_config(broken(**{path: value}))
    with pytest.raises(ValueError, match="trainable_regex"):
        task = VAETemporalTask(broken(trainable_regex=r"^vae/encoder/"))
        task.param_labels(task.abstract_params()[0])
    train_config.validate_config(load_config("demo"))
    train_config.validate_config(load_config(""))


def test_video_metrics():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 3, 16, 16, 3)).astype(np.float32)
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), -1, 1).astype(np.float32)
    ssim = np.asarray(video_metrics.ssim(jnp.asarray(x), jnp.asarray(y)))
    expected = [[skimage.metrics.structural_similarity(x[b, f], y[b, f], gaussian_weights=True, sigma=1.5,
                                                       use_sample_covariance=False, data_range=2.0, channel_axis=-1)
                 for f in range(3)] for b in range(2)]
    assert_close(ssim, expected, ops=2 * 121 + 20)  # 11 x 11 Gaussian windows for means and moments, then the ratio
    psnr = np.asarray(video_metrics.psnr(jnp.asarray(x), jnp.asarray(y)))
    mse = np.mean((x.astype(np.float64) - y) ** 2, axis=(2, 3, 4))  # 768 terms; d psnr = 10 / ln 10 * d mse / mse
    assert_close(psnr, 10 * np.log10(4.0 / mse), ops=768 + 4, scale=10 / np.log(10))
    # Flicker: an error that is the same in every frame does not flicker; per-frame errors do.
    constant = x + 0.2 * rng.standard_normal((1, 1) + x.shape[2:]).astype(np.float32)
    assert float(jnp.max(video_metrics.temporal_flicker(jnp.asarray(x), jnp.asarray(constant)))) < 1e-6
    assert float(jnp.min(video_metrics.temporal_flicker(jnp.asarray(x), jnp.asarray(y)))) > 0.05
    pairs = np.asarray(video_metrics.frame_pair_flicker(jnp.asarray(x), jnp.asarray(y)))
    assert pairs.shape == (2, 2)
    assert_close(pairs, np.mean(np.abs(np.diff(x, axis=1) - np.diff(y, axis=1)), axis=(2, 3, 4)), ops=768 + 3)
    four = np.concatenate([x, x[:, :1]], axis=1)
    metrics = video_metrics.reconstruction_metrics(jnp.asarray(four), jnp.asarray(four[:, ::-1]))
    assert set(metrics) == {"psnr", "ssim", "flicker", "flicker_interior"}
    assert set(video_metrics.reconstruction_metrics(jnp.asarray(x), jnp.asarray(y))) == {"psnr", "ssim", "flicker"}
    with pytest.raises(ValueError, match="at least 2 frames"):
        video_metrics.temporal_flicker(jnp.asarray(x[:, :1]), jnp.asarray(y[:, :1]))
    with pytest.raises(ValueError, match="win_size"):
        video_metrics.ssim(jnp.asarray(x[..., :8, :8, :]), jnp.asarray(y[..., :8, :8, :]))
