r"""Temporal decoder fine-tuning on the built-in data: flicker / PSNR / SSIM before vs after (paper §4.4, eq. 9).

    python benchmarks/vae_temporal.py [--pretrain_steps 300] [--steps 300] [--num_frames 8] [--workdir DIR]

1. Pre-trains a small KL autoencoder (channels (8, 16), 16x16 pixels) frame by frame on the built-in clips (L1 + KL
   with LDM's weighting, posterior samples) and saves it as a VAE-only inference checkpoint.
2. Fine-tunes its Temp-Convs with the trainer and ``configs/vae_temporal.py:demo`` (eq. 9 with a 3-D patch
   discriminator, 8 keyframes), on all local devices (``XLA_FLAGS=--xla_force_host_platform_device_count=8`` on CPU).
3. Evaluates the image decoder (= the decoder before fine-tuning) and the temporal decoder on fixed clips, decoding
   the posterior mean and per-frame posterior samples, exports the inference checkpoint (``vidrd_jax.export``) and
   checks that the exported VAE evaluates identically.

Prints one table (PSNR dB, SSIM, flicker = mean |Δ_t x − Δ_t x̂| in [-1, 1] pixel units over all frame pairs, and
over the interior pairs only: the Temp-Convs' zero padding in time treats the first and last frame differently) and
the discriminator's clip accuracy over training (from ``metrics.jsonl``).
"""
from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

import data_pipelines  # noqa: E402
from vidrd_jax import checkpoints, config_loading, export, train  # noqa: E402
from vidrd_jax import metric_writer as metrics_lib  # noqa: E402
from vidrd_jax.models.vae import AutoencoderKL, VAEConfig  # noqa: E402
from vidrd_jax.tasks.autoencoder_losses import kl_divergence  # noqa: E402
from vidrd_jax.tasks.vae_temporal import VAETemporalTask  # noqa: E402

CONFIG_FILE = Path(__file__).resolve().parents[1] / "configs" / "vae_temporal.py"
KL_WEIGHT = 1e-8  # LDM's 1e-6 on sums over pixels, for a per-pixel mean L1


def load_config(arg: str):
    return config_loading.load_config(f"{CONFIG_FILE}:{arg}")


def pretrain(vae_config: VAEConfig, data_config, steps: int, batch_size: int = 4, seed: int = 0):
    """Frame-wise KL-autoencoder training of every 2-D parameter (the Temp-Convs are not used)."""
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
            return jnp.mean(jnp.abs(recon - x)) + KL_WEIGHT * jnp.mean(kl_divergence(mean, logvar))

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    iterator = data_pipelines.make_iterator(data_config, batch_size=batch_size, seed=seed + 100)
    for i in range(steps):
        params, opt_state, loss = step(params, opt_state, next(iterator)["video"], jax.random.key(i))
    print(f"pre-training: {steps} steps, final L1+KL {float(loss):.4f}")
    return jax.device_get(params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrain_steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    parser.add_argument("--num_frames", type=int, default=8, help="keyframes per clip")
    parser.add_argument("--workdir", default="/tmp/vae_temporal_bench")
    args = parser.parse_args()
    root = Path(args.workdir)
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()

    config = load_config("demo")
    config.data.num_frames = args.num_frames
    vae_config = VAEConfig.tiny(block_out_channels=(8, 16))
    pretrained = pretrain(vae_config, config.data, args.pretrain_steps)
    config.model.init_from = checkpoints.save_inference_checkpoint(
        str(root / "small_vae"), {"vae": pretrained}, {"vae": vae_config.to_dict()})
    config.total_steps = args.steps
    config.progress_bar = False
    config.checkpoint.update(every_steps=args.steps, async_save=False)
    config.sample.update(every_steps=0, batch_size=32, num_batches=2)
    task = VAETemporalTask(config)
    before = task.evaluate({"vae": pretrained})
    t0 = time.perf_counter()
    state = train.train_and_evaluate(config, str(root / "run"))
    train_s = time.perf_counter() - t0
    use_ema = config.ema.decay > 0
    after = task.evaluate({"vae": jax.device_get(state.params(use_ema=use_ema)["vae"])})
    exported, _ = checkpoints.load_inference_checkpoint(
        export.export(str(root / "run"), str(root / "exported"), use_ema=use_ema))
    assert task.evaluate({"vae": exported["vae"]}) == after, "exported VAE evaluates differently"

    clips = config.sample.batch_size * config.sample.num_batches
    print(f"\n{clips} held-out clips of {config.data.num_frames} frames at {config.data.resolution}; "
          f"{args.steps} fine-tuning steps of {config.batch_size} clips in {train_s:.0f} s "
          f"({len(jax.devices())} {jax.devices()[0].platform} devices); after = "
          f"{'EMA of the ' if use_ema else ''}Temp-Convs")
    print(f"{'latents':8s} {'metric':16s} {'before (image dec.)':>20s} {'after (temporal dec.)':>22s} {'change':>9s}")
    for latents in ("mean", "sample"):
        for metric in ("psnr", "ssim", "flicker", "flicker_interior"):
            b = before[f"{latents}/image_decoder/{metric}"]
            a = after[f"{latents}/temporal_decoder/{metric}"]
            print(f"{latents:8s} {metric:16s} {b:20.4f} {a:22.4f} {a - b:+9.4f}")
    history = metrics_lib.read_jsonl(str(root / "run"))
    acc = ", ".join(f"{h['step']}: {h['disc_accuracy']:.2f}" for h in history if "disc_accuracy" in h)
    print(f"discriminator clip accuracy (training batches, per logging interval): {acc}")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
