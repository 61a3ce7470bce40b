"""Long-video sampling cost against video length: compile seconds, seconds per frame and peak RSS for K clips.

    python benchmarks/sample_long_video.py [--clips 1,4,16] [--steps 10] [--resolution 64]

Runs the real CLI (``vidrd_jax.generate.main``: sampling, temporal decoding, mp4 + GIF + contact-sheet writing) on a
tiny random checkpoint (``make_tiny_checkpoint``: 2-level UNet with 32/64 channels, 2-level VAE) with VidRD's
N = 8, M = 4 and classifier-free guidance, once per clip count, each in a fresh subprocess so its peak RSS is its
own. Reports, per run:

- compile: seconds JAX spent tracing, lowering and compiling during the run (``jax.monitoring`` duration events;
  includes the parameter-shape check's tracing and the eager ops' small programs);
- s/frame: steady sampling + decoding + writing time per output frame: clips 1..K-1 of the run, plus clip 0 timed
  again in a second, warm 1-clip run in the same process (the cold clip 0 includes compilation);
- peak RSS of the process (``ru_maxrss``);
and the ratios against the 1-clip run (``--repeats R``: the fastest of R runs). The goal is flat: compile once
whatever K, constant cost per frame, and memory that does not grow with the video (clips are decoded and streamed
one at a time). The CPU numbers in BENCHMARKS.md come from a shared 2-core machine: expect +-30% run to run.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile


def _generate(args: argparse.Namespace, clips: int, name: str) -> dict:
    """One CLI run (sampling, temporal decoding, mp4 + GIF + contact sheet); returns its JSON record."""
    from vidrd_jax import generate

    out = os.path.join(args.workdir, f"{name}.mp4")
    code = generate.main([
        "generate", "--config", os.path.join(os.path.dirname(__file__), "..", "configs", "generate_default.py"),
        "--checkpoint", args.checkpoint, "--prompt", "a red square moving right", "--num_clips", str(clips),
        "--out", out, "--noprogress", f"--config.resolution={args.resolution}", f"--config.num_steps={args.steps}",
        "--config.vidrd.num_frames=8", "--config.vidrd.num_prompt_frames=4"])
    if code:
        raise SystemExit(code)
    with open(os.path.splitext(out)[0] + ".json") as f:
        return json.load(f)


def _clip_seconds(clip: dict) -> float:
    return clip["sample_s"] + clip["decode_s"] + clip["write_s"]


def _worker(args: argparse.Namespace) -> None:
    import jax

    compile_seconds = []
    events = {"/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
              "/jax/core/compile/backend_compile_duration"}
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: compile_seconds.append(duration) if event in events else None)
    record = _generate(args, args.clips, f"clips_{args.clips}")
    compile_s = sum(compile_seconds)
    # Clip 0 of the cold run includes compilation: its steady cost is taken from a second, warm 1-clip run.
    warm = _generate(args, 1, f"warm_{args.clips}")
    steady = sum(_clip_seconds(c) for c in record["clips"][1:]) + _clip_seconds(warm["clips"][0])
    print(json.dumps({
        "clips": args.clips, "frames": record["frames_per_video"], "compile_s": compile_s,
        "s_per_frame": steady / record["frames_per_video"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "device": record["device"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default="1,4,16", help="comma-separated clip counts")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--resolution", type=int, default=64, help="frame height = width in pixels")
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs per clip count (fresh processes); the fastest is reported (shared machines)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.clips = int(args.clips)
        _worker(args)
        return

    from vidrd_jax.make_tiny_checkpoint import make_tiny_checkpoint

    counts = [int(c) for c in args.clips.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        checkpoint = make_tiny_checkpoint(os.path.join(workdir, "ckpt"))
        results = []
        for count in counts:
            command = [sys.executable, __file__, "--worker", "--clips", str(count), "--steps", str(args.steps),
                       "--resolution", str(args.resolution), "--checkpoint", checkpoint, "--workdir", workdir]
            runs = []
            for _ in range(args.repeats):
                lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()
                runs.append(json.loads(lines[-1]))
            results.append(min(runs, key=lambda r: r["s_per_frame"]))
            print(f"  {count:3d} clips: {[round(r['s_per_frame'], 3) for r in runs]} s/frame", file=sys.stderr)
    base = results[0]
    print(f"VidRD long video, tiny random model, {args.resolution}x{args.resolution} px, N=8, M=4, {args.steps} DDIM "
          f"steps, guidance on, device {base['device']}")
    print(f"{'clips':>5} {'frames':>6} {'compile s':>9} {'s/frame':>8} {'peak RSS MB':>11} "
          f"{'compile x':>9} {'s/frame x':>9} {'RSS x':>6}")
    for r in results:
        print(f"{r['clips']:5d} {r['frames']:6d} {r['compile_s']:9.2f} {r['s_per_frame']:8.4f} "
              f"{r['peak_rss_mb']:11.0f} {r['compile_s'] / base['compile_s']:9.2f} "
              f"{r['s_per_frame'] / base['s_per_frame']:9.2f} {r['peak_rss_mb'] / base['peak_rss_mb']:6.2f}")


if __name__ == "__main__":
    main()
