"""Seconds per sampled clip: text encoder + DDIM with classifier-free guidance + temporal VAE decode, random weights.

    python benchmarks/sample_clip.py --preset sd21 --frames 8 --resolution 256 --steps 50   # accelerator
    python benchmarks/sample_clip.py --preset tiny --resolution 64 --steps 5 --repeats 2     # CPU smoke run

The models are ``UNet3DConfig.<preset>()``, ``VAEConfig.<preset>()`` and ``CLIPTextConfig.<preset>()`` with
parameters drawn by ``make_tiny_checkpoint.random_params`` (no download, nothing trained), run through
``VideoPipeline.generate_long_video`` with one clip: the path ``vidrd_jax.generate`` takes. The first clip pays for
compilation; the next ``--repeats`` clips are timed and reported as median (min-max): sampling (all denoising
steps, two UNet passes each for guidance) and decoding separately, and seconds per clip = (sample + decode) / batch.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidrd_jax.diffusion import LongVideoConfig  # noqa: E402
from vidrd_jax.make_tiny_checkpoint import random_params  # noqa: E402
from vidrd_jax.models.factory import CONFIG_CLASSES  # noqa: E402
from vidrd_jax.pipeline import VideoPipeline  # noqa: E402

PROMPT = "a corgi running on the beach, sunset"


def build_pipeline(preset: str, dtype: str, attention_impl: str | None, seed: int) -> VideoPipeline:
    """A pipeline of ``preset``-size models with random weights stored in ``dtype``."""
    rng = np.random.default_rng(seed)
    configs = {}
    for kind, cls in CONFIG_CLASSES.items():
        overrides = {"dtype": dtype, "param_dtype": dtype}
        if attention_impl and kind == "unet":
            overrides["attention_impl"] = attention_impl
        configs[kind] = getattr(cls, preset)(**overrides)
    params = {kind: random_params(kind, config, rng) for kind, config in configs.items()}
    model_config = {kind: config.to_dict() for kind, config in configs.items()}
    model_config.update(scheduler=None, tokenizer=None)
    return VideoPipeline(params, model_config)


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values))}


def benchmark(pipe: VideoPipeline, args: argparse.Namespace, batch: int) -> dict:
    config = LongVideoConfig(prompts=(PROMPT,), num_clips=1, num_frames=args.frames, num_steps=args.steps,
                             guidance_scale=args.guidance)
    prompts = [(PROMPT,)] * batch
    sample_s, decode_s = [], []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        (chunk,) = list(pipe.generate_long_video(config, key=jax.random.key(i), height=args.resolution,
                                                 width=args.resolution, prompts=prompts))
        total = time.perf_counter() - t0
        if i == 0:
            first_s = total
        else:
            sample_s.append(chunk.sample_seconds)
            decode_s.append(chunk.decode_seconds)
    assert chunk.frames.shape == (batch, args.frames, args.resolution, args.resolution, 3), chunk.frames.shape
    clip_s = [(s + d) / batch for s, d in zip(sample_s, decode_s)]
    result = {
        "benchmark": "sample_clip", "preset": args.preset, "dtype": args.dtype,
        "attention_impl": pipe.configs["unet"].attention_impl,
        "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}", "jax": jax.__version__,
        "batch": batch, "frames": args.frames, "resolution": args.resolution, "steps": args.steps,
        "guidance": args.guidance, "first_clip_s": first_s,
        "sample_s": _stats(sample_s), "decode_s": _stats(decode_s), "seconds_per_clip": _stats(clip_s),
        "ms_per_step": 1e3 * float(np.median(sample_s)) / args.steps,
    }
    peaks = [s.get("peak_bytes_in_use") for s in (d.memory_stats() for d in jax.local_devices()) if s]
    if peaks:
        result["peak_device_GiB"] = max(peaks) / 2**30
    return result


def report(r: dict, json_path: str | None) -> None:
    s, d, c = r["sample_s"], r["decode_s"], r["seconds_per_clip"]
    print(f"sample_clip {r['preset']} {r['dtype']} ({r['attention_impl']}), {r['devices']}, batch {r['batch']} x "
          f"{r['frames']} x {r['resolution']}^2, {r['steps']} steps, CFG {r['guidance']}: "
          f"{c['median']:.3f} s/clip ({c['min']:.3f}-{c['max']:.3f}); sample {s['median']:.3f} s "
          f"({r['ms_per_step']:.1f} ms/step), decode {d['median']:.3f} s; first clip (compile) {r['first_clip_s']:.1f} s"
          + (f", peak device memory {r['peak_device_GiB']:.1f} GiB" if "peak_device_GiB" in r else "")
          + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
    if json_path:
        with open(json_path, "a") as f:
            f.write(json.dumps(r) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "sd21"), default="tiny")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--attention-impl", default=None, help="the UNet's attention_impl (default: the config's)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=64, help="height = width in pixels")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--batch", default="1", help="videos sampled together; a comma-separated list runs each")
    parser.add_argument("--repeats", type=int, default=3, help="timed clips after the compiling one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    try:
        batches = [int(b) for b in args.batch.split(",")]
    except ValueError:
        parser.error(f"--batch must be comma-separated integers, got {args.batch!r}")
    if min(batches) < 1:
        parser.error(f"--batch sizes must be >= 1, got {args.batch!r}")
    t0 = time.perf_counter()
    pipe = build_pipeline(args.preset, args.dtype, args.attention_impl, args.seed)
    print(f"# jax {jax.__version__}, backend {jax.default_backend()}; random {args.preset} models built in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    for batch in batches:
        report(benchmark(pipe, args, batch), args.json)


if __name__ == "__main__":
    main()
