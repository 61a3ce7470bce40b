r"""The four-module long-video framework (paper 000) on the built-in data, on CPU.

    python -m vidrd_jax.four_module --config configs/four_module.py --workdir workdirs/four_module
    python -m vidrd_jax.four_module --config configs/four_module.py:test --workdir /tmp/fm   # test size
    # start from a trained model instead of training a small one (e.g. the demo's final export):
    python -m vidrd_jax.four_module --config configs/four_module.py --workdir W \
        --config.base.checkpoint=workdirs/demo/temporal_vae/export

Modules (``vidrd_jax.recipes.four_module``; each resumes, a finished one is skipped on a rerun): ``base`` (the demo's
autoencoder and UNet stages, shorter; skipped when ``base.checkpoint`` is set) -> ``separate`` (clips ``r`` from
the rendered condition, the renderer's exact masks) -> ``fusion`` (eq. 11 with fitted weights at an early step) ->
``combined`` (eq. 20, λ = (1, 4, 1): the few object pixels weigh 5x, the background 2x) -> ``consistency``
(co-denoising with the tuned model) -> ``evaluate`` (vs plain co-denoising and VidRD on the base model:
``WORKDIR/evaluate/evaluation.md``). Argument ``test`` shrinks every step count for the end-to-end test.
"""
from pathlib import Path

import ml_collections

from data_pipelines.builtin import caption_for, split_combos
from vidrd_jax.config_loading import load_module

demo = load_module(Path(__file__).with_name("demo.py"))

FRAMES = 4  # frames per clip r = co-denoising window K


def _prompts() -> tuple[str, ...]:
    """Two training combinations (the base model has seen them), a red and a blue object."""
    train = split_combos("train", 0.2, 0)
    return tuple(caption_for(*next(c for c in train if c[0] == colour)) for colour in ("red", "blue"))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg not in ("", "test"):
        raise ValueError(f"configs/four_module.py: unknown argument {arg!r} (expected '' or 'test')")
    test = arg == "test"
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.prompts = _prompts()

    # 0. the base model: the demo's autoencoder and UNet stages at a fraction of their steps
    staged = demo.get_config("test" if test else "")
    base = ml_collections.ConfigDict({"stages": ("autoencoder", "unet"), "autoencoder": staged.autoencoder,
                                      "unet": staged.unet})
    ae, unet = base.autoencoder.config, base.unet.config
    ae.total_steps, unet.total_steps = (20, 10) if test else (300, 400)
    ae.batch_size = unet.batch_size = 8
    for stage in (ae, unet):
        stage.checkpoint.every_steps = stage.total_steps
        stage.optimizer.warmup_steps = min(stage.optimizer.warmup_steps, stage.total_steps // 10)
    ae.sample.update(every_steps=ae.total_steps, batch_size=8, num_previews=2)
    c.base = ml_collections.ConfigDict({"checkpoint": "", "stages": base})

    sampling = demo.generate_default.get_config()
    sampling.update(mode="codenoise", resolution=demo.RESOLUTION, num_steps=4 if test else 25,
                    guidance_scale=demo.GUIDANCE, negative_prompt="")
    sampling.codenoise.update(num_frames=(2 if test else 4) * FRAMES, window_size=FRAMES, stride=FRAMES // 2,
                              decode_frames=FRAMES)
    sampling.vidrd.update(num_clips=2 if test else 4, num_frames=FRAMES, num_prompt_frames=FRAMES // 2)
    c.sampling = sampling

    # 1. separate tuning: r from the rendered condition, the renderer's exact masks
    c.separate = ml_collections.ConfigDict(dict(
        num_frames=FRAMES, condition="builtin", condition_strength=0.75,
        render=dict(background="plain", seed=0, **demo.CENTRED),
        segmenter=dict(kind="builtin", path="")))  # files: .npy / PNG folder; sam: a local SamModel folder

    # 2. average fusion at the condition's second step (paper: the 5th of 1000 DDPM steps)
    start = round(0.25 * sampling.num_steps)
    c.fusion = ml_collections.ConfigDict(dict(step=start + 1, num_backgrounds=2 if test else 4, eta=1.0,
                                              weights="fitted", fixed_weights=(1.0, 1.0)))

    # 3. combined tuning: the whole UNet on the fused clips
    tune = demo._trainer("combined_tuning", 4 if test else 60, 8, 2e-4)  # pylint: disable=protected-access
    tune.model.update(preset="tiny")
    tune.trainable_regex = r"^unet/"
    tune.loss_weights = (1.0, 4.0, 1.0)
    tune.optimizer.update(schedule="constant", warmup_steps=0)
    tune.ema.decay = 0.0
    tune.checkpoint.every_steps = tune.total_steps
    tune.data.read_threads, tune.data.prefetch_batches = 1, 1
    c.combined = tune
    c.combined_export = ml_collections.ConfigDict(dict(ema=False, dtype="float32"))

    # 5. the probes (vidrd_jax.recipes.four_module_evaluation)
    c.evaluate = ml_collections.ConfigDict(dict(saturation=60.0, min_blob_pixels=3))
    return c
