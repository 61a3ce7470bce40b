"""The demo's main-variant marks at other classifier-free guidance scales, for runs ``demo_seeds.py`` finished.

    python benchmarks/demo_seeds.py --size full --seeds 0 1 2 --isa default AVX2 --root /tmp/demo_seeds_full
    python benchmarks/demo_guidance.py --root /tmp/demo_seeds_full --guidance 1.5 2 3 7.5

Training does not depend on the guidance scale, so each finished run (``ROOT/<size>_seed<S>_<ISA>``) is re-sampled
with its evaluation's settings (``evaluate/evaluation.json``) at every scale, in a subprocess on the run's CPU float
path, and scored like the evaluation's main variant (reverse frame mapping, DSG + PNS). Prints one row per run and
scale, and a table per scale (mean ± standard deviation over the runs, runs that meet each mark); writes
``ROOT/guidance.json``.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import ml_collections
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from demo_seeds import isa_env  # noqa: E402  (benchmarks/, this script's folder, is on the path)
from vidrd_jax.recipes import demo_evaluation  # noqa: E402  (after the repository is on the path)

MARKS = ("colour_accuracy", "direction_accuracy", "junction_ratio", "jump_ratio", "motion_ratio",
         "continued_junctions")


def score_run(workdir: Path, scales: list[float]) -> list[dict]:
    """The main variant's marks of one finished run at each guidance scale (in this process's float path), and which
    of the run's pass marks each meets."""
    record = json.loads((workdir / "evaluate" / "evaluation.json").read_text())
    c = ml_collections.ConfigDict(record["config"])
    rows = []
    data = record["results"]["data"]  # the rendered data's motion, for motion_ratio and continued_junctions
    for scale in scales:
        c.sampling.guidance_scale = scale
        results = {"model": demo_evaluation.evaluate_model(c.checkpoint, c, [demo_evaluation.MAIN_VARIANT],
                                                           str(workdir / "guidance"), f"g{scale:g}",
                                                           data["rendered"]["motion"]),
                   "data": data}
        demo_evaluation.add_motion_ratios(results)
        main = results["model"][demo_evaluation.MAIN_VARIANT]
        rows.append({"guidance": scale, "marks": {k: main[k] for k in MARKS},
                     "passes": demo_evaluation.passes(results, c.thresholds)})
    return rows


def run_isa(name: str) -> str:
    """The float path a ``demo_seeds.py`` run used: the last part of its directory name."""
    return name.rsplit("_", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, required=True, help="demo_seeds.py's --root")
    parser.add_argument("--guidance", type=float, nargs="+", required=True, help="classifier-free guidance scales")
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)  # the child: score one run, print JSON
    args = parser.parse_args()
    if args.workdir:
        print(json.dumps(score_run(args.workdir, args.guidance)))
        return
    runs = sorted(p.parent.parent for p in args.root.glob("*/evaluate/evaluation.json"))
    if not runs:
        raise SystemExit(f"--root {args.root}: no finished demo_seeds.py run (*/evaluate/evaluation.json) under it")
    results = {}
    for workdir in runs:
        out = subprocess.run([sys.executable, __file__, "--root", str(args.root), "--workdir", str(workdir),
                              "--guidance", *map(str, args.guidance)], env=isa_env(run_isa(workdir.name)),
                             check=True, capture_output=True, text=True).stdout
        results[workdir.name] = json.loads(out.strip().splitlines()[-1])
        for row in results[workdir.name]:
            print(workdir.name, f"guidance {row['guidance']:g}",
                  json.dumps({k: round(v, 4) for k, v in row["marks"].items()}), flush=True)
    print(f"\n{len(runs)} runs: {', '.join(results)}\n")
    print("| guidance | " + " | ".join(MARKS) + " |\n" + "|---" * (len(MARKS) + 1) + "|")
    table = {}
    for i, scale in enumerate(args.guidance):
        cells, table[scale] = [], {}
        for mark in MARKS:
            values = np.array([rows[i]["marks"][mark] for rows in results.values()], np.float64)
            meets = sum(rows[i]["passes"][mark] for rows in results.values())
            table[scale][mark] = dict(mean=values.mean(), std=values.std(), min=values.min(), max=values.max(),
                                      meets=meets)
            cells.append(f"{values.mean():.3f} ± {values.std():.3f} ({meets}/{len(values)})")
        print(f"| {scale:g} | " + " | ".join(cells) + " |")
    (args.root / "guidance.json").write_text(json.dumps(dict(runs=results, table=table), indent=1))


if __name__ == "__main__":
    main()
