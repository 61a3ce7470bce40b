r"""The end-to-end demo: a small VidRD trained from scratch on the built-in data, on CPU, then sampled and measured.

    python -m vidrd_jax.recipes --config configs/demo.py --workdir workdirs/demo
    python -m vidrd_jax.recipes.demo_evaluation --workdir workdirs/demo   # re-run the evaluation alone

Stages (``vidrd_jax.recipes.stages``; each resumes from its checkpoints, a finished one is skipped on a rerun):

1. ``autoencoder``: a small AutoencoderKL (SD's architecture, 4 latent channels, 4x downsampling) learns the 32 x 32
   frames of the built-in clips and photo pseudo-videos (``tasks/autoencoder.py``); PSNR on held-out clips is logged.
2. ``unet``: a small UNet3D (Temp-Conv + Temp-Attn) and a small CLIP-architecture text encoder with the real CLIP
   BPE tokenizer learn eq. 3 together on the frozen autoencoder's latents of captioned clips and pseudo-videos.
3. ``baseline`` (opt-in, argument ``baseline``): the same without temporal layers (``use_temporal=False``), for the
   evaluation's comparison.
4. ``temporal_vae``: the decoder's Temp-Convs are fine-tuned with eq. 9 (``tasks/vae_temporal.py``); its export
   (the UNet stage's models with the fine-tuned VAE) is the final model, ``WORKDIR/temporal_vae/export``.
5. ``long_video`` / ``co_denoise``: ``vidrd_jax.generate`` writes a VidRD long video (4 clips; with the part-captioned
   motions clip k is prompted with part k's caption) and a co-denoised video with per-window prompts for held-out
   prompts (mp4 + GIF + PNG contact sheet + JSON record).
6. ``evaluate``: ``vidrd_jax.recipes.demo_evaluation`` (colour / direction accuracy on held-out combinations,
   junction vs inside-clip smoothness and continuation of long videos per sampler variant, the baseline's numbers)
   -> table + JSON.

``WORKDIR/summary.json`` says where everything is. Arguments (comma-separated): ``test`` shrinks the steps for the
end-to-end test (``tests/test_demo.py``), ``baseline`` adds stage 3, ``seed=N`` sets every training stage's seed,
``motion=NAME`` picks the training clips' motion (``MOTIONS``; the default, ``parts``, makes the long videos
continue; the test size defaults to ``centred``).
Any field can be overridden, e.g. ``--config.unet.config.total_steps=4000``.

Wall time on 2 CPU cores, per-stage times and the measured marks (over training seeds and CPU float paths, with
``benchmarks/demo_seeds.py``): BENCHMARKS.md, section "End-to-end demo".
"""
from pathlib import Path
from typing import NamedTuple

import ml_collections

from data_pipelines.builtin import caption_for, heldout_combos
from data_pipelines.config import source
from vidrd_jax.config_loading import load_module
from vidrd_jax.recipes import demo_evaluation
from vidrd_jax.train_config import base_config

generate_default = load_module(Path(__file__).with_name("generate_default.py"))

RESOLUTION = 32
FRAMES = 4  # keyframes per training clip = frames per generated clip (N)
NUM_CLIPS = 4  # clips per long video
# Argument motion=NAME: the shapes sources' (weight, render_clip motion, start frames); the evaluation renders the last
# one's motion. "parts" (the full size's default): three quarters of the clips show the centred path (each spans half
# the frame through its centre line, so where the object is also tells its direction, which the direction mark relies on
# at this budget); the other quarter show that path going on past the clip (wrapping at the edges) from where the long
# video's later clips start, each captioned with its part (", part k": the clip starting at frame 3(k-1), PART_MOTIONS).
# The long videos prompt clip k with part k's caption, so clip k+1 goes on from clip k. "parts_35" and "parts_even": the
# same with 35 % and half of the clips part-captioned ("parts_even" teaches the direction's sign less reliably).
# "centred" (the test size's default): the centred path alone; no clip shows the path going on, and every long-video
# clip restarts it or runs back along it. "continued": clips start where the long video's clips do, all captioned alike;
# "centred_continued": "parts_even" without the part captions; "wrap": random phases of endless wrapping paths;
# "wrap_trail": the same, each object trailing a fading streak; "centred_wrap": half centred, half wrapping. Without
# part captions, every motion whose clips start anywhere but the path's start loses the direction's sign.
# What each gives: BENCHMARKS.md, section "End-to-end demo".
CONTINUED_STARTS = tuple(range(0, NUM_CLIPS * (FRAMES - 1), FRAMES - 1))  # where the long video's clips start
CENTRED = dict(travel_range=(0.5, 0.55), lateral_spread=0.0)
WRAP = dict(motion="wrap", step_range=(0.16, 0.18), lateral_spread=0.0)


def _later_windows(share: float) -> list:
    """The centred path from frame 0 for 1 - ``share`` of the clips; its later windows, from where the long video's
    later clips start, for ``share``."""
    return [(1 - share, CENTRED, (0,)), (share, CENTRED, CONTINUED_STARTS[1:])]


MOTIONS = {"parts": _later_windows(0.25),
           "parts_35": _later_windows(0.35),
           "parts_even": _later_windows(0.5),
           "centred": [(1.0, CENTRED, (0,))],
           "continued": [(1.0, CENTRED, CONTINUED_STARTS)],
           "centred_continued": _later_windows(0.5),
           "wrap": [(1.0, WRAP, (0,))],
           "wrap_trail": [(1.0, dict(WRAP, trail=1.5), (0,))],
           "centred_wrap": [(0.5, CENTRED, (0,)), (0.5, WRAP, (0,))]}
PART_MOTIONS = ("parts", "parts_35", "parts_even")  # motions whose captions and long-video prompts name the part


def _data(num_frames: int, photos_weight: float, motion: str) -> ml_collections.ConfigDict:
    c = base_config().data
    shapes = MOTIONS[motion]
    parts = dict(part_stride=FRAMES - 1) if motion in PART_MOTIONS else {}
    c.sources = [source(f"shapes{i}" if len(shapes) > 1 else "shapes", "shapes", weight, num_items=10000,
                        split="train", holdout_fraction=0.2, holdout_seed=0, start_frames=starts, **render, **parts)
                 for i, (weight, render, starts) in enumerate(shapes)]
    if photos_weight:
        c.sources.append(source("photos", "photos", photos_weight, num_items=1000))
    c.num_frames, c.stride, c.resolution = num_frames, 2, (RESOLUTION, RESOLUTION)
    c.read_threads, c.prefetch_batches = 1, 1
    return c


def _trainer(task: str, steps: int, batch: int, lr: float) -> ml_collections.ConfigDict:
    c = base_config(task)
    c.total_steps, c.batch_size, c.log_every_steps = steps, batch, 25
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.optimizer.update(learning_rate=lr, schedule="cosine", warmup_steps=min(50, steps // 10), end_lr_factor=0.1,
                       weight_decay=0.0)
    c.checkpoint.update(every_steps=max(1, steps // 2), keep=1)
    return c


def _stage(kind: str, config: ml_collections.ConfigDict, **extra) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"kind": kind, "config": config, **extra})


VAE = dict(block_out_channels=(16, 32, 32), layers_per_block=1, norm_num_groups=8, temporal_padding="replicate")
# From scratch: no image model to preserve, so the temporal layers start live (temporal_zero_init=False).
UNET = dict(block_out_channels=(32, 64), layers_per_block=1, num_attention_heads=(1, 2),
            down_block_types=("CrossAttnDownBlock3D", "CrossAttnDownBlock3D"),
            up_block_types=("CrossAttnUpBlock3D", "CrossAttnUpBlock3D"), cross_attention_dim=64, norm_num_groups=8,
            temporal_conv_layers=2, temporal_position_embedding="residual", temporal_zero_init=False, dropout=0.0)
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


class DemoArgs(NamedTuple):
    test: bool = False  # the end-to-end test's size
    baseline: bool = False  # add the baseline stage
    seed: int = 0  # every training stage's seed
    motion: str = ""  # a key of MOTIONS; "" is the size's default ("centred" at test size, else "parts")


def _parse_arg(arg: str) -> DemoArgs:
    """``"[test][,baseline][,seed=N][,motion=NAME]"`` -> :class:`DemoArgs`."""
    args = DemoArgs()
    for part in filter(None, arg.split(",")):
        key, eq, value = part.partition("=")
        if key in ("test", "baseline") and not eq:
            args = args._replace(**{key: True})
        elif key == "seed" and eq and value.isdigit():
            args = args._replace(seed=int(value))
        elif key == "motion" and eq and value in MOTIONS:
            args = args._replace(motion=value)
        else:
            raise ValueError(f"configs/demo.py: unknown argument {part!r} (expected 'test', 'baseline', 'seed=N' "
                             f"and/or 'motion=NAME', NAME in {sorted(MOTIONS)}; e.g. configs/demo.py:test,seed=1)")
    return args


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    test, with_baseline, seed, motion = _parse_arg(arg)
    # The test size keeps the motion its margins (tests/test_demo.py) were measured with.
    motion = motion or ("centred" if test else "parts")
    c = ml_collections.ConfigDict()
    c.stages = ("autoencoder", "unet") + (("baseline",) if with_baseline else ()) + (
        "temporal_vae", "long_video", "co_denoise", "evaluate")

    # Batch 16 x 500 steps: the objects are a few percent of the pixels, and a smaller budget loses their colour
    # (green washes out to gray, yellow turns orange); the generator's colour can be no better than the autoencoder's.
    ae = _trainer("autoencoder", 150 if test else 500, 8 if test else 16, 1e-3)
    ae.data = _data(2, 0.2, motion)
    ae.model.vae.update(VAE)
    # No adversarial term for the image autoencoder (a 3-D GAN costs 20x here); squared error learns faster than L1.
    # Pixel errors weighted by saturation: under the plain mean the few object pixels' hue is learned last (green
    # decodes bluish gray, yellow orange), and the generator's colour is bounded by the autoencoder's (reconstruction
    # colour with and without: BENCHMARKS.md). The test size asserts no colour mark and keeps the plain mean its
    # margins were measured with.
    ae.loss.update(disc_weight=0.0, pixel_loss="l2", saturation_weight=0.0 if test else 12.0)
    ae.ema.decay = 0.99
    ae.sample.update(every_steps=ae.total_steps, split="heldout", batch_size=16, num_previews=4)
    c.autoencoder = _stage("train", ae, export=dict(ema=True, dtype="float32"))

    # 800 steps: at 540 the part-captioned quarter of the clips has not yet taught clip k+1 to go on from clip k
    # (BENCHMARKS.md, "End-to-end demo").
    unet = _trainer("denoising", 60 if test else 800, 8 if test else 16, 2e-3)
    unet.data = _data(FRAMES, 0.1, motion)
    unet.model.update(init_from="{export:autoencoder}", preset="tiny", allow_missing="^(unet|text_encoder)/")
    unet.model.unet.update(UNET)
    unet.model.text_encoder.update(TEXT)
    unet.trainable_regex = r"^(unet|text_encoder)/"  # trained from scratch (no pretrained image model here)
    # At the full rate the text encoder merges "left" and "right" (the UNet cannot use the sign yet, so nothing keeps
    # them apart) within a few hundred steps; at a tenth they stay as distinct as at init.
    unet.lr_mults = ((r"^text_encoder/", 0.1),)
    # Zero terminal SNR + v-prediction (Lin et al. 2024): the last training step is pure noise, as sampling starts;
    # with SD's schedule the model learns to read colour and position from the signal left at t = T and draws
    # mixed-colour blobs from pure noise. The plain v loss keeps weight on the noisy steps that fix the layout.
    unet.model.scheduler.update(dict(prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                     timestep_spacing="trailing"))
    # Logit-normal timesteps (SD3's sampler, shifted to noisy steps): 57 % of clips at t >= 850 instead of 15 %,
    # 2 % at t < 250 instead of 25 %. Which way the object moves is decided only at the noisiest steps; with the
    # colours learnable (the autoencoder above) a milder shift, (1.0, 1.5), leaves the sign unlearned in 540 steps
    # (BENCHMARKS.md). The test size keeps (1.0, 1.5), which its margins were measured with.
    unet.timestep_logit_normal = (1.0, 1.5) if test else (2.0, 1.5)
    unet.ema.decay = 0.99
    c.unet = _stage("train", unet, export=dict(ema=True, dtype="float32"))

    baseline = ml_collections.ConfigDict(unet.to_dict())
    baseline.model.unet.use_temporal = False
    if test:
        baseline.total_steps = 20
    c.baseline = _stage("train", baseline, export=dict(ema=True, dtype="float32"))

    # Test size: 40 steps at 5e-3 (fewer steps do not lower the posterior samples' flicker reliably).
    tvae = _trainer("vae_temporal", 40 if test else 70, 4, 5e-3 if test else 3e-3)
    tvae.data = _data(8, 0.0, motion)
    tvae.model.update(init_from="{export:unet}")
    tvae.model.discriminator.update(dict(base_channels=8, num_layers=2, num_groups=8))
    tvae.optimizer.update(schedule="constant", b1=0.5, b2=0.9, max_grad_norm=0.0)
    tvae.discriminator_optimizer.learning_rate = 1e-3
    tvae.ema.decay = 0.9
    tvae.sample.update(every_steps=tvae.total_steps, split="heldout", batch_size=16, num_previews=4)
    c.temporal_vae = _stage("train", tvae, export=dict(ema=True, dtype="float32"))
    for stage in (ae, unet, baseline, tvae):
        stage.seed = seed  # parameter init, data order, noise and timesteps of every training stage
        if test:  # one checkpoint per stage, at its end (the full demo also saves half-way, to resume)
            stage.checkpoint.every_steps = stage.total_steps

    held = heldout_combos(0.2, 0)
    steps = 8 if test else NUM_STEPS  # DDIM steps of the generate stages
    clip_parts = range(1, NUM_CLIPS + 1) if motion in PART_MOTIONS else (1,)  # one caption per clip, or for all
    long_prompts = [" | ".join(caption_for(*combo, part) for part in clip_parts) for combo in held[:4]]
    c.long_video = _stage("generate", _generate("vidrd", long_prompts, "long_video.mp4", steps))
    # Co-denoising: the first video's object turns half-way (per-window prompts), the second keeps one prompt.
    colour, shape, direction = held[0]
    turn = {"left": "up", "right": "down", "up": "right", "down": "left"}[direction]
    windows = [f"{caption_for(colour, shape, direction)} | {caption_for(colour, shape, turn)}",
               f"{caption_for(*held[1])} | {caption_for(*held[1])}"]
    c.co_denoise = _stage("generate", _generate("codenoise", windows, "co_denoise.mp4", steps))

    ev = demo_evaluation.get_default_config()
    ev.render.update(MOTIONS[motion][-1][1])
    ev.update(checkpoint="{export:temporal_vae}", baseline_checkpoint="{export:baseline}" if with_baseline else "",
              num_prompts=16, ablation_prompts=4, sampling=_sampling("vidrd", steps),
              part_prompts=motion in PART_MOTIONS)
    if test:
        ev.sampling.vidrd.num_clips, ev.sampling.codenoise.num_frames = 2, 2 * FRAMES
    c.evaluate = _stage("evaluate_demo", ev)
    return c


NUM_STEPS = 25
# Classifier-free guidance 2, not SD's 7.5: with this zero-terminal-SNR v-prediction model stronger guidance shifts
# the objects' hue away from the prompt's colour (Lin et al. 2024 report over-exposure under guidance at zero terminal
# SNR); 1.5-3 keeps colour and direction >= 0.8 in every measured run (sweep: BENCHMARKS.md, "End-to-end demo").
GUIDANCE = 2.0


def _sampling(mode: str, num_steps: int) -> ml_collections.ConfigDict:
    """``configs/generate_default.py`` at the demo's size: 4 clips of N frames, or as many co-denoised frames."""
    sampling = generate_default.get_config()
    sampling.update(mode=mode, resolution=RESOLUTION, num_steps=num_steps, guidance_scale=GUIDANCE,
                    negative_prompt="")
    sampling.vidrd.update(num_clips=NUM_CLIPS, num_frames=FRAMES, num_prompt_frames=FRAMES // 2)
    sampling.codenoise.update(num_frames=NUM_CLIPS * FRAMES, window_size=FRAMES, stride=FRAMES // 2,
                              decode_frames=FRAMES)
    return sampling


def _generate(mode: str, prompts: list[str], out: str, num_steps: int) -> ml_collections.ConfigDict:
    """A generate stage: the demo's sampling settings on the final model."""
    return ml_collections.ConfigDict(dict(sampling=_sampling(mode, num_steps), checkpoint="{export:temporal_vae}",
                                          prompts=prompts, out=out))
