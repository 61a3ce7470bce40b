"""Co-denoising window chunking against a sequential window loop: s/step and peak RSS for n window strides.

    python benchmarks/co_denoise_windows.py [--ns 4,8,16] [--chunks 1,2,4,0] [--steps 10] [--reps 3]

A tiny random UNet3D (``UNet3DConfig.tiny()``, ``make_tiny_checkpoint.random_params``) under classifier-free
guidance samples ``L = K + n·S`` latent frames (K = 8, S = 4, W = n + 1 windows, 8x8x4 latents, DDIM) two ways:

- ``loop``: Gen-L-Video's released scheme: per step, a Python loop over windows, each window's guided eps + DDIM
  update one jitted call, then one jitted eq. 19 fusion of the W window results;
- ``chunk=c``: ``co_denoise_sample`` with ``window_chunk_size=c`` (0: all windows in one vmap).

Every configuration runs in a fresh subprocess (its own peak RSS, ``ru_maxrss``); s/step is the median of
``--iters`` warm samplings after a compiling one. Repetitions are interleaved (rep r runs every configuration once)
so machine load hits all alike. Before timing, each chunking's video is checked equal to the loop's within
``tests/numerics.py`` tolerance. Prints a markdown table: median [min, max] over reps, ratio vs the loop (loop
s/step / chunk s/step, > 1 is faster), peak RSS and its n_max / n_min ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

K, S, LATENT = 8, 4, (1, 8, 8, 4)  # window size, stride, (B, h, w, C)


def _setup(n: int, steps: int, chunk: int | None):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vidrd_jax.diffusion import ClassifierFreeGuidance, CoDenoiseConfig, NoiseSchedule
    from vidrd_jax.make_tiny_checkpoint import random_params
    from vidrd_jax.models.unet3d import UNet3DConfig
    from vidrd_jax.pipeline import UNetDenoiser

    unet = UNet3DConfig.tiny()
    params = jax.tree.map(jnp.asarray, random_params("unet", unet, np.random.default_rng(0)))
    eps_fn = ClassifierFreeGuidance(UNetDenoiser(unet), 7.5)
    rng = np.random.default_rng(1)
    text = jnp.asarray(rng.standard_normal((1, 8, unet.cross_attention_dim)), jnp.float32)
    shared = {"params": params, "negative": jnp.zeros_like(text)}
    config = CoDenoiseConfig(prompts=("p",), num_frames=K + n * S, window_size=K, stride=S, num_steps=steps,
                             guidance_scale=7.5, window_chunk_size=chunk)
    b, h, w, c = LATENT
    latents = jnp.asarray(rng.standard_normal((b, config.num_frames, h, w, c)), jnp.float32)
    return eps_fn, NoiseSchedule(), config, {"text": text}, shared, latents


def _loop_sampler(eps_fn, schedule, config, cond, shared):
    """The sequential baseline: a Python loop over windows per step (jitted window step, jitted fusion)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vidrd_jax.diffusion.co_denoise import _WindowPlan

    plan = _WindowPlan.from_config(config)
    solver = config.sampler.make_solver()
    tables = solver.tables(schedule, config.num_steps)
    rows = [jax.tree.map(lambda a, i=i: jnp.asarray(a[i]), tables) for i in range(config.num_steps)]
    starts = plan.starts[:config.num_windows]
    weights = np.asarray(plan.weights[:config.num_windows], np.float32)

    @jax.jit
    def window_step(row, z):
        return solver.step(schedule, row, (), z, eps_fn(z, row.timesteps, {**shared, **cond}), None)[0]

    @jax.jit
    def fuse(x, windows):
        out = jnp.zeros_like(x)
        for start, wts, win in zip(starts, weights, windows):
            out = out.at[:, start:start + K].add(jnp.asarray(wts)[None, :, None, None, None] * win)
        return out

    def sample(x):
        for row in rows:
            x = fuse(x, [window_step(row, x[:, s:s + K]) for s in starts])
        return x

    return sample


def _worker(args: argparse.Namespace) -> None:
    import numpy as np

    from vidrd_jax.diffusion import co_denoise_sample

    chunk = None if args.mode == "loop" else (int(args.mode.split("=")[1]) or None)
    eps_fn, schedule, config, cond, shared, latents = _setup(args.n, args.steps, chunk)
    if args.mode == "loop":
        sample = _loop_sampler(eps_fn, schedule, config, cond, shared)
    else:
        def sample(x):
            return co_denoise_sample(eps_fn, schedule, config, [cond], shared_cond=shared, latents=x)
    out = np.asarray(sample(latents))  # compiles
    times = []
    for _ in range(args.iters):
        t0 = time.perf_counter()
        sample(latents).block_until_ready()
        times.append((time.perf_counter() - t0) / args.steps)
    if args.save:
        np.save(args.save, out)
    print(json.dumps({"s_per_step": statistics.median(times),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _run(args: argparse.Namespace, n: int, mode: str, save: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--worker", f"--n={n}", f"--mode={mode}", f"--steps={args.steps}",
           f"--iters={args.iters}"] + ([f"--save={save}"] if save else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{mode} n={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _check_equal(args: argparse.Namespace, ns: list[int], modes: list[str]) -> None:
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from numerics import assert_close

    with tempfile.TemporaryDirectory() as tmp:
        for n in ns:
            outs = {}
            for mode in modes:
                outs[mode] = os.path.join(tmp, f"{n}_{mode.replace('=', '')}.npy")
                _run(args, n, mode, outs[mode])
            loop = np.load(outs["loop"])
            for mode in modes[1:]:
                # ~20 roundings per step (UNet accumulation, guidance, DDIM, fusion) at the latents' scale.
                assert_close(np.load(outs[mode]), loop, ops=20 * args.steps, err_msg=f"{mode} n={n}")
            print(f"n={n}: every chunking equals the loop", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ns", default="4,8,16", help="comma-separated window stride counts n (W = n + 1)")
    parser.add_argument("--chunks", default="1,2,4,0", help="window_chunk_size values (0: all windows at once)")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--iters", type=int, default=3, help="warm samplings per process (median)")
    parser.add_argument("--reps", type=int, default=3, help="interleaved repetitions (fresh processes)")
    parser.add_argument("--no-check", action="store_true", help="skip the loop-equality check")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    ns = [int(v) for v in args.ns.split(",")]
    modes = ["loop"] + [f"chunk={int(c)}" for c in args.chunks.split(",")]
    if not args.no_check:
        _check_equal(args, ns, modes)
    if not args.reps:
        return
    print(f"load before: {os.getloadavg()}", file=sys.stderr)
    results: dict = {}
    for rep in range(args.reps):
        for n in ns:
            for mode in modes:
                results.setdefault((n, mode), []).append(_run(args, n, mode))
                print(f"rep {rep} n={n} {mode}: {results[(n, mode)][-1]}", file=sys.stderr)
    print(f"load after: {os.getloadavg()}", file=sys.stderr)
    print("| n | W | chunking | s/step median [min, max] | loop / this median [min, max] | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for n in ns:
        loop = [r["s_per_step"] for r in results[(n, "loop")]]
        for mode in modes:
            t = [r["s_per_step"] for r in results[(n, mode)]]
            ratio = [a / b for a, b in zip(loop, t)]  # same rep: interleaved pairs
            rss = statistics.median(r["peak_rss_mb"] for r in results[(n, mode)])
            label = "all" if mode == "chunk=0" else mode
            print(f"| {n} | {n + 1} | {label} | {statistics.median(t):.4f} [{min(t):.4f}, {max(t):.4f}] | "
                  f"{statistics.median(ratio):.2f} [{min(ratio):.2f}, {max(ratio):.2f}] | {rss:.0f} |")
    for mode in modes:
        rss = [statistics.median(r["peak_rss_mb"] for r in results[(n, mode)]) for n in (ns[0], ns[-1])]
        print(f"peak RSS n={ns[-1]} / n={ns[0]}, {mode}: {rss[1] / rss[0]:.2f}")


if __name__ == "__main__":
    main()
