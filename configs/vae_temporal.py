r"""Temporal-aware decoder fine-tuning (paper §4.4, eq. 9, §5.1): only the VAE decoder's Temp-Conv layers train,
against a 3-D patch discriminator, with α_rec = 1, α_reg = 1e-5, α_disc = 0.5 and LDM's adaptive weight.

    # SD-2.1 size, 8 keyframes at 256²: fine-tune the VAE of a full VidRD checkpoint (its fresh, zero-initialised
    # Temp-Convs); the export keeps that checkpoint's UNet and text encoder as stored
    python -m vidrd_jax.train --workdir gs://bucket/vidrd_vae_temporal \
        --config configs/vae_temporal.py:init_from=ckpt/vidrd_256,lpips_dir=weights/lpips
    python -m vidrd_jax.export --workdir gs://bucket/vidrd_vae_temporal --out ckpt/vidrd_256_temporal_vae

    # CPU demo: a small VAE (e.g. the one benchmarks/vae_temporal.py pre-trains) on the built-in clips, 16², 8 frames
    python -m vidrd_jax.train --config configs/vae_temporal.py:demo,init_from=/tmp/small_vae --workdir /tmp/vae_t
    python -m vidrd_jax.export --workdir /tmp/vae_t --out /tmp/vae_t_export --ema

Argument: comma-separated; an optional first word ``demo`` (small model, CPU) and ``key=value`` pairs: ``init_from``
(inference checkpoint whose ``vae`` part is fine-tuned; "" = fresh init of the preset, only useful for timing),
``export_into`` (inference checkpoint whose other models the export keeps; default ``init_from``), ``lpips_dir``
(LPIPS weights folder, see ``vidrd_jax.models.lpips``; "" = L1 only), and any Table 1 dataset name -> index file
(``data_pipelines.config.get_paper_config``). Only ``init_from`` 's ``vae`` is read.

What to watch (metrics.jsonl; the sample hook logs ``VAETemporalTask.evaluate``): ``{mean,sample}/delta/psnr`` > 0,
``{mean,sample}/delta/flicker_interior`` < 0 (frames inside the clip flicker less than with the image decoder),
``disc_accuracy`` above 0.5 and ``d_weight`` well below α_disc. ``…/delta/flicker`` over all frame pairs can rise: the
Temp-Convs' zero padding in time (official layout) makes the first and last frame decode differently. Demo numbers
(``benchmarks/vae_temporal.py``, BENCHMARKS.md): +0.45 to +0.85 dB PSNR; interior flicker −0.0001 to −0.0047.
The paper gives no optimizer settings for this stage; LDM's (Adam, betas (0.5, 0.9), no weight decay, no clipping,
no EMA) with a constant 1e-4 are our choice.
"""
import ml_collections

from vidrd_jax.train_config import base_config

TASK = "vae_temporal"
_KEYS = ("init_from", "export_into", "lpips_dir")


def _parse(arg: str) -> tuple[bool, dict[str, str]]:
    words = [w for w in arg.split(",") if w]
    demo = bool(words) and words[0] == "demo"
    pairs = words[1:] if demo else words
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise ValueError(f"configs/vae_temporal.py: arguments must be 'demo' then key=value pairs, got {bad}")
    return demo, dict(p.split("=", 1) for p in pairs)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    import data_pipelines.config

    demo, args = _parse(arg)
    options = {k: args.pop(k) for k in _KEYS if k in args}
    c = base_config(TASK)
    if args:
        c.data = data_pipelines.config.get_paper_config(args)
    c.model.init_from = options.get("init_from", "")
    c.model.export_into = options.get("export_into", "")
    c.loss.lpips_dir = options.get("lpips_dir", "")
    c.loss.update(rec_weight=1.0, reg_weight=1e-5, disc_weight=0.5)  # §5.1
    opt = dict(learning_rate=1e-4, schedule="constant", warmup_steps=0, end_lr_factor=1.0, b1=0.5, b2=0.9,
               weight_decay=0.0, max_grad_norm=0.0)
    c.optimizer.update(opt)
    c.discriminator_optimizer.update(opt)
    c.ema.decay = 0.0

    if demo:
        c.model.preset = "tiny"
        if not c.model.init_from:  # a fresh small VAE (must match the checkpoint's config when init_from is set)
            c.model.vae.update(dict(block_out_channels=(8, 16)))
        c.model.discriminator.update(dict(base_channels=8, num_layers=2, num_groups=8))
        c.optimizer.learning_rate = 1e-2
        c.discriminator_optimizer.learning_rate = 1e-3
        # 8 keyframes as in §5.1: with 4, half the frames sit at the clip border, where the Temp-Convs' zero padding
        # makes them decode differently from the inner ones.
        c.data.num_frames, c.data.stride, c.data.resolution = 8, 2, (16, 16)
        c.data.read_threads = 1
        c.data.prefetch_batches = 1
        c.total_steps, c.batch_size, c.log_every_steps = 300, 8, 25
        c.ema.decay = 0.98  # this high a learning rate makes single iterates noisy: evaluate/export the EMA
        c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
        c.checkpoint.update(every_steps=100, keep=2)
        c.sample.update(every_steps=100, batch_size=16, num_batches=1, num_previews=4)
        return c

    c.model.preset = "sd21"  # only used when init_from is empty (a random SD-2.1-size VAE: benchmarks)
    c.model.vae.update(dict(dtype="bfloat16", remat_policy="full"))
    c.data.num_frames, c.data.stride, c.data.resolution = 8, 4, (256, 256)  # §5.1
    c.data.worker_count = 8
    c.data.read_threads = 8
    c.total_steps, c.batch_size, c.log_every_steps = 20_000, 32, 50
    c.checkpoint.update(every_steps=1000, keep=3, async_save=True)
    c.sample.update(every_steps=1000, batch_size=8, num_batches=4, num_previews=4)
    return c
