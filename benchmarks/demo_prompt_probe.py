"""Which words of the demo's prompts does a trained model use, and how much could each word be worth?

    python benchmarks/demo_prompt_probe.py --checkpoint workdirs/demo/unet/export \
        [--render '{"travel_range": [0.5, 0.55], "lateral_spread": 0.0}'] [--clips 24] [--split heldout]

1. Caption swap: the denoising loss (eq. 3, the checkpoint's own target) on rendered clips of training combinations
   (every third; ``--split heldout``: the held-out ones, which the model never saw captioned), with the right
   caption and with one word changed (the opposite direction, the perpendicular direction, another colour, another
   shape, the empty caption), at t = 900 / 750 / 500 / 250; same clips, noise and t for every caption. A word the
   model ignores changes the loss by ~0 %.
2. Text embeddings: mean |difference| of the encoder's outputs for "left" vs "right" (direction token and the
   positions after it) and for "red" vs "blue".
3. What a word is worth at t = T (pure noise, where sampling fixes the layout): the share of the latents' variance
   explained by the word's conditional mean, E_word |E[z0 | word, frame] - E[z0 | frame]|^2 / Var z0, over clips
   of all 120 combinations rendered with ``--render``: the loss a perfect model saves at t = T by knowing the word.

``--render`` holds ``builtin.render_clip`` keyword arguments; use the training data's (``configs/demo.py``
``MOTIONS``).
"""
from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np

from data_pipelines import builtin
from vidrd_jax.diffusion.ddim import add_noise, training_target
from vidrd_jax.pipeline import VideoPipeline

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
PERPENDICULAR = {"left": "up", "up": "right", "right": "down", "down": "left"}


def encode_clips(pipeline: VideoPipeline, clips: np.ndarray) -> jax.Array:
    """Scaled posterior-mean latents ``[B, F, h, w, C]`` of uint8 clips ``[B, F, H, W, 3]``, 64 clips at a time."""
    return jnp.concatenate([pipeline.encode_clip(clips[i:i + 64]) for i in range(0, len(clips), 64)])


def render(combos, frames: int, size: int, render_kwargs: dict, seed: int = 0) -> np.ndarray:
    """Clips of ``frames`` keyframes 2 apart (as the demo samples them), alternating backgrounds."""
    return np.stack([builtin.render_clip(*c, num_frames=2 * frames - 1, height=size, seed=seed + i,
                                         background=builtin.BACKGROUNDS[i % 2], **render_kwargs)[::2]
                     for i, c in enumerate(combos)])


def caption_swap(pipeline: VideoPipeline, z0: jax.Array, combos) -> dict[int, dict[str, float]]:
    colours, shapes = list(builtin.COLOURS), list(builtin.SHAPES)
    captions = {
        "right caption": [builtin.caption_for(*c) for c in combos],
        "opposite direction": [builtin.caption_for(c[0], c[1], OPPOSITE[c[2]]) for c in combos],
        "perpendicular direction": [builtin.caption_for(c[0], c[1], PERPENDICULAR[c[2]]) for c in combos],
        "other colour": [builtin.caption_for(colours[(colours.index(c[0]) + 3) % 6], c[1], c[2]) for c in combos],
        "other shape": [builtin.caption_for(c[0], shapes[(shapes.index(c[1]) + 2) % 5], c[2]) for c in combos],
        "empty": [""] * len(combos)}
    embeddings = {k: pipeline.encode_prompts(v) for k, v in captions.items()}
    unet = jax.jit(lambda z, t, e: pipeline.model_fn(z, t, e, pipeline.params["unet"]))
    results = {}
    for t in (900, 750, 500, 250):
        losses = dict.fromkeys(captions, 0.0)
        for k in range(4):
            noise = jax.random.normal(jax.random.key(1000 * k + t), z0.shape)
            steps = jnp.full((z0.shape[0],), t, jnp.int32)
            z_t = add_noise(pipeline.schedule, z0, noise, steps)
            target = training_target(pipeline.schedule, z0, noise, steps)
            for name, e in embeddings.items():
                losses[name] += float(jnp.mean(jnp.square(unet(z_t, t, e) - target))) / 4
        results[t] = losses
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="inference checkpoint (the demo's unet/export)")
    parser.add_argument("--render", default="{}", help="JSON keyword arguments of builtin.render_clip")
    parser.add_argument("--clips", type=int, default=24, help="clips for the caption swap")
    parser.add_argument("--split", choices=("train", "heldout"), default="train",
                        help="combinations of the caption swap's clips")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    render_kwargs = json.loads(args.render)
    pipeline = VideoPipeline.from_checkpoint(args.checkpoint)

    swap = builtin.split_combos(args.split)[:: 3 if args.split == "train" else 1][: args.clips]
    z0 = encode_clips(pipeline, render(swap, args.frames, args.size, render_kwargs, seed=100))
    print(f"1. caption swap ({len(swap)} {args.split} clips; loss, change vs the right caption)")
    for t, losses in caption_swap(pipeline, z0, swap).items():
        base = losses["right caption"]
        print(f"  t={t}: " + ", ".join(f"{k} {v:.4f} ({100 * (v / base - 1):+.1f} %)" for k, v in losses.items()))

    e = np.asarray(pipeline.encode_prompts(["a red circle moving left", "a red circle moving right",
                                            "a blue circle moving left"]))
    print("2. text embeddings, mean |difference| at token positions 2..7 (<start> a red circle moving left <end>)")
    print(f"  left vs right: {np.abs(e[0] - e[1]).mean(-1)[2:8].round(3)}")
    print(f"  red vs blue:   {np.abs(e[0] - e[2]).mean(-1)[2:8].round(3)}")

    combos = builtin.all_combos() * 12
    z = np.asarray(encode_clips(pipeline, render(combos, args.frames, args.size, render_kwargs)))
    total = z.var(0).mean()

    def worth(key) -> float:
        groups: dict = {}
        for i, c in enumerate(combos):
            groups.setdefault(key(c), []).append(i)
        mean = z.mean(0)
        return sum(len(ix) * np.square(z[ix].mean(0) - mean).mean() for ix in groups.values()) / len(combos) / total

    print(f"3. share of the latents' variance at t = T explained by the word ({len(combos)} clips, "
          f"render {render_kwargs or 'defaults'})")
    for name, key in (("direction", lambda c: c[2]), ("axis only", lambda c: builtin.DIRECTIONS[c[2]][0] == 0),
                      ("colour", lambda c: c[0]), ("shape", lambda c: c[1]), ("whole caption", lambda c: c)):
        print(f"  {name:13s} {100 * worth(key):5.2f} %")


if __name__ == "__main__":
    main()
