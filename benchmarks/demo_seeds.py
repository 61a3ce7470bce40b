"""The demo's marks over training seeds and CPU float paths: mean, spread and the worst case of every mark.

    python benchmarks/demo_seeds.py --size test --seeds 0 1 2 --isa default AVX2 --root /tmp/demo_seeds
    python benchmarks/demo_seeds.py --size full --seeds 0 1 2 --isa default AVX2 --root /tmp/demo_seeds_full

Each run is README's main command (``configs/demo.py:[test,]seed=S[,motion=M]``, plus ``--override KEY=VALUE ...`` as
``--config.KEY=VALUE``) in a fresh workdir, in a subprocess
on one CPU device, with ``XLA_FLAGS=--xla_cpu_max_isa=ISA`` unless ISA is ``default`` (another CPU's float path; see
BENCHMARKS.md). A finished run's workdir is reused (its stages are skipped), so an interrupted sweep continues.
``motion/VARIANT`` is the motion ratio (mean per-frame centroid motion of the long videos over the rendered data's),
``continued/VARIANT`` the share of junctions at which the object goes on in the prompt's direction, and
``continues/VARIANT`` 1 when the variant meets all four continuation marks (junction and jump ratio, motion ratio,
continued junctions), so its mean is the share of runs that continue. Prints one row per run and a summary table
(mean ± standard deviation, min, max, runs with a value) in markdown; writes ``ROOT/summary.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import ml_collections
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from vidrd_jax.recipes.demo_evaluation import continuation_marks  # noqa: E402  (after the repository is on the path)

VARIANTS = ("reverse_dsg_pns", "forward_dsg_pns", "reverse_no_dsg_pns", "forward_no_dsg_pns")


def isa_env(isa: str) -> dict[str, str]:
    """This process's environment for a subprocess on one CPU device and the float path ``isa``."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if isa != "default":
        env["XLA_FLAGS"] = f"--xla_cpu_max_isa={isa}"
    return env


def run_demo(size: str, seed: int, isa: str, motion: str, workdir: Path, overrides: list[str]
             ) -> dict[str, float]:
    """Runs the demo once (or reuses a finished run) and returns its marks as a flat dict."""
    if not (workdir / "evaluate" / "evaluation.json").is_file():
        arg = ",".join(filter(None, ["test" if size == "test" else "", f"seed={seed}",
                                     f"motion={motion}" if motion else ""]))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "vidrd_jax.recipes", "--config", f"configs/demo.py:{arg}",
                        *(f"--config.{o}" for o in overrides), "--workdir", str(workdir)],
                       cwd=REPO, env=isa_env(isa), check=True, stdout=subprocess.DEVNULL)
        (workdir / "wall_s.txt").write_text(f"{time.perf_counter() - start:.0f}\n")
    evaluation = json.loads((workdir / "evaluate" / "evaluation.json").read_text())
    summary = json.loads((workdir / "summary.json").read_text())
    model = evaluation["results"]["model"]
    thresholds = ml_collections.ConfigDict(evaluation["config"]["thresholds"])
    row = {"colour": model["reverse_dsg_pns"]["colour_accuracy"],
           "direction": model["reverse_dsg_pns"]["direction_accuracy"],
           "reconstruction_colour": model["reconstruction"]["colour_accuracy"]}  # the autoencoder's bound
    for variant in VARIANTS:
        row[f"junction/{variant}"] = model[variant]["junction_ratio"]
        if "jump_ratio" in model[variant]:
            row[f"jump/{variant}"] = model[variant]["jump_ratio"]
        if "motion_ratio" in model[variant]:  # per-frame centroid motion over the rendered data's
            row[f"motion/{variant}"] = model[variant]["motion_ratio"]
            row[f"continued/{variant}"] = model[variant]["continued_junctions"]
            row[f"continues/{variant}"] = float(all(continuation_marks(model[variant], thresholds).values()))
    # The ablation's margin: how much smoother the main variant's junctions are than the next best variant's.
    row["ablation_margin"] = min(model[v]["junction_ratio"] for v in VARIANTS[1:]) - row["junction/reverse_dsg_pns"]
    tvae = summary["stages"]["temporal_vae"]["evaluation"]
    for latents in ("mean", "sample"):
        row[f"flicker_delta/{latents}"] = tvae[f"{latents}/delta/flicker"]
        row[f"psnr_delta/{latents}"] = tvae[f"{latents}/delta/psnr"]
    wall = workdir / "wall_s.txt"
    if wall.is_file():
        row["wall_s"] = float(wall.read_text())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=("test", "full"), default="test")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--isa", nargs="+", default=["default", "AVX2"], help="default, SSE4_2, AVX, AVX2, AVX512")
    parser.add_argument("--motion", default="", help="configs/demo.py's motion=NAME (its MOTIONS; default: the "
                        "config's)")
    parser.add_argument("--override", nargs="+", default=[], metavar="KEY=VALUE",
                        help="config overrides, passed as --config.KEY=VALUE (e.g. unet.config.total_steps=540)")
    parser.add_argument("--root", type=Path, required=True, help="one workdir per run goes under it")
    args = parser.parse_args()
    rows = {}
    for seed in args.seeds:
        for isa in args.isa:
            name = f"{args.size}_seed{seed}_{isa}"
            rows[name] = run_demo(args.size, seed, isa, args.motion, args.root / name, args.override)
            print(name, json.dumps({k: round(v, 4) for k, v in rows[name].items()}), flush=True)
    keys = sorted({k for row in rows.values() for k in row})
    print(f"\n{len(rows)} runs ({args.size} size, motion {args.motion or 'default'}, seeds {args.seeds}, float paths "
          f"{args.isa}, overrides {args.override})\n")
    print("| mark | mean ± std | min | max | runs |\n|---|---|---|---|---|")
    table = {}
    for key in keys:
        values = np.array([row[key] for row in rows.values() if key in row], np.float64)
        values = values[~np.isnan(values)]  # a jump ratio is NaN when no frame pair shows the object
        if not len(values):
            continue
        table[key] = dict(mean=values.mean(), std=values.std(), min=values.min(), max=values.max(), runs=len(values))
        print(f"| {key} | {values.mean():.4f} ± {values.std():.4f} | {values.min():.4f} | {values.max():.4f} | "
              f"{len(values)} |")
    (args.root / "summary.json").write_text(json.dumps(dict(runs=rows, table=table), indent=1))


if __name__ == "__main__":
    main()
