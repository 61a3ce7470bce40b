r"""VidRD's training set-up (paper §4.1, §5.1): SD-2.1 initialisation, 256 x 256 clips of 8 keyframes every 4 frames;
the new temporal layers and the spatial transformer blocks of the UNet train (565 M of 1.18 B parameters), the VAE
and the text encoder stay frozen; eq. 3 with SD-2.1-base's epsilon target.

    # 1. SD-2.1-base (diffusers folder) -> inference checkpoint with fresh, zero-initialised temporal layers
    python -m vidrd_jax.convert sd --folder stable-diffusion-2-1-base --out ckpt/sd21_video
    # 2. train (built-in data unless index files are given; keys are the paper's Table 1 datasets)
    python -m vidrd_jax.train --workdir gs://bucket/vidrd_sd21_256 \
        --config configs/sd21_256.py:init_from=ckpt/sd21_video,webvid2m=idx/webvid.jsonl,laion5b=idx/laion.jsonl
    # 3. inference checkpoint for the generator
    python -m vidrd_jax.export --workdir gs://bucket/vidrd_sd21_256 --out ckpt/vidrd_256 --ema --dtype bf16

Argument: comma-separated ``key=value`` pairs: ``init_from`` (required: the converted checkpoint) and any Table 1
dataset name -> index file (``data_pipelines.config.get_paper_config``: sources weighted by the paper's video counts).

Expected: the epsilon loss starts low (SD-2.1 already denoises each frame; the temporal layers start as identities,
their last layers being zero) and decreases slowly; temporally coherent EMA samples appear in ``WORKDIR/samples``.
The paper gives no optimizer settings, batch size or step count: AdamW 5e-5 with 1k warm-up, batch 64, EMA 0.9999
and 100k steps are our choice. bf16 compute with fp32 master weights, per-block rematerialisation and
``attention_impl="auto"`` (cuDNN flash attention on GPU where it applies); measure memory and speed on the target accelerator with
``python benchmarks/train_step.py --configs sd21_256 --batch-per-device N``.
"""
import ml_collections

from vidrd_jax.train_config import base_config


def _parse(arg: str) -> dict[str, str]:
    pairs = [p for p in arg.split(",") if p]
    bad = [p for p in pairs if "=" not in p]
    if bad:
        raise ValueError(f"configs/sd21_256.py: arguments must be key=value, got {bad}")
    return dict(p.split("=", 1) for p in pairs)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    import data_pipelines.config

    args = _parse(arg)
    init_from = args.pop("init_from", "")
    c = base_config("denoising")
    if args:
        c.data = data_pipelines.config.get_paper_config(args)
    c.data.num_frames, c.data.stride, c.data.resolution = 8, 4, (256, 256)  # §5.1
    c.data.caption_dropout = 0.1
    c.data.worker_count = 8
    c.data.read_threads = 8

    c.total_steps = 100_000
    c.batch_size = 64
    c.grad_accum_steps = 1
    c.log_every_steps = 50
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.optimizer.update(learning_rate=5e-5, warmup_steps=1000, schedule="cosine", end_lr_factor=0.1,
                       weight_decay=1e-2, max_grad_norm=1.0)
    c.ema.decay = 0.9999
    c.checkpoint.update(every_steps=1000, keep=3, async_save=True)

    c.model.init_from = init_from
    c.model.preset = "sd21"  # only used when init_from is empty (random SD-2.1-size model: benchmarks)
    c.model.unet.update(dtype="bfloat16", remat_policy="full", attention_impl="auto")
    c.model.vae.update(dtype="bfloat16")
    c.model.text_encoder.update(dtype="bfloat16")
    # c.trainable_regex: the default, PAPER_TRAINABLE_REGEX (temporal layers + spatial transformer blocks).

    c.sample.update(every_steps=2000, num_frames=8, height=256, width=256, num_steps=25, guidance_scale=7.5)
    c.sample.prompts = ("a corgi running on the beach, sunset", "fireworks over a city at night",
                        "a timelapse of clouds over mountains")
    return c
