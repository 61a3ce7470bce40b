"""Train-step benchmark: compile time, step time, clips/s, peak memory (and MFU on GPU/TPU) per config.

    python benchmarks/train_step.py                         # demo and mid-size configs on this machine
    python benchmarks/train_step.py --configs sd21_256 --steps 20   # the paper set-up (random SD-2.1 init), GPU/TPU

The step is the trainer's own (``vidrd_jax.train.Trainer.make_step``: frozen VAE + text encoder, UNet forward and
backward, AdamW, EMA, non-finite guard), on a mesh over all local devices (``data`` axis), fed one fixed batch from
the data pipeline so that only device work is timed. Peak memory is the process's peak RSS (host) and, on
accelerators, the devices' ``peak_bytes_in_use``. MFU divides the step's model FLOPs (XLA's count of the same step lowered without
rematerialisation) by the step time and the chips' peak dense bf16 FLOP/s; HFU does the same with the compiled step's
count, which includes the recomputed forward passes.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vidrd_jax import parallel, train  # noqa: E402
from vidrd_jax.config_loading import load_module  # noqa: E402

# Peak dense bf16 FLOP/s per chip, by jax device_kind prefix.
PEAK_FLOPS = {"NVIDIA H200": 989e12, "NVIDIA H100": 989e12, "NVIDIA A100": 312e12, "TPU v5p": 459e12,
              "TPU v5 lite": 197e12, "TPU v4": 275e12, "TPU v6 lite": 918e12}


def _module(name: str):
    return load_module(REPO / "configs" / f"{name}.py")


def _load(name: str):
    return _module(name).get_config()


def demo_config():
    """The end-to-end demo's UNet stage (``configs/demo.py``) on a fresh autoencoder of the demo's size."""
    demo = _module("demo")
    c = demo.get_config().unet.config
    c.model.init_from = ""
    c.model.vae.update(demo.VAE)
    return c


def mid_config():
    """Between the demo and SD-2.1: 3-level UNet (64/128/256 ch, 2 layers/block), 3-level VAE, 4-layer CLIP,
    8 frames of 64 x 64 (16 x 16 latents); ~40 M parameters, all UNet ones trainable."""
    c = _load("tiny")
    c.model.unet.update(dict(block_out_channels=(64, 128, 256), layers_per_block=2,
                             down_block_types=("CrossAttnDownBlock3D",) * 2 + ("DownBlock3D",),
                             up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 2,
                             num_attention_heads=(2, 4, 8), cross_attention_dim=256, norm_num_groups=32,
                             temporal_conv_layers=4))
    c.model.vae.update(dict(block_out_channels=(64, 128, 128), layers_per_block=1, norm_num_groups=32))
    c.model.text_encoder.update(dict(hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                     num_attention_heads=4))
    c.data.num_frames, c.data.stride, c.data.resolution = 8, 2, (64, 64)
    c.batch_size = 4
    return c


CONFIGS = {"tiny": lambda: _load("tiny"), "demo": demo_config, "mid": mid_config,
           "sd21_256": lambda: _load("sd21_256")}


def _flops(stage) -> float:
    """XLA's FLOP count of a ``Lowered`` or ``Compiled`` step (0 where the backend gives none)."""
    cost = stage.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


def _model_flops(config, state, batch) -> float:
    """FLOPs of the step without rematerialisation: what the model needs, not what remat recomputes."""
    config = copy.deepcopy(config)
    config.model.unet.remat_policy = "none"
    trainer = train.build_trainer(config)
    with parallel.activation_rules_context(trainer.mesh, trainer.rules):
        return _flops(trainer.make_step({k: v.sharding for k, v in batch.items()}).lower(state, batch))


def _peak_device_bytes() -> int | None:
    stats = [d.memory_stats() for d in jax.local_devices()]
    peaks = [s.get("peak_bytes_in_use") for s in stats if s]
    return max(peaks) if peaks else None


def benchmark(name: str, steps: int, warmup: int, batch_per_device: int | None) -> dict:
    import data_pipelines

    config = CONFIGS[name]()
    if batch_per_device is not None:
        config.batch_size = batch_per_device * jax.device_count()
    config.mesh.update({"data": -1, "fsdp": 1, "tensor": 1})
    config.sample.every_steps = 0
    trainer = train.build_trainer(config)
    iterator = data_pipelines.make_iterator(config.data, batch_size=config.batch_size, seed=0)
    host = trainer.task.host_batch(next(iterator))
    iterator.close()
    with parallel.activation_rules_context(trainer.mesh, trainer.rules):
        t0 = time.perf_counter()
        state = trainer.init_state()
        jax.block_until_ready(state)
        init_s = time.perf_counter() - t0
        batch = trainer.global_batch(host)
        step = trainer.make_step({k: v.sharding for k, v in batch.items()})
        t0 = time.perf_counter()
        compiled = step.lower(state, batch).compile()
        compile_s = time.perf_counter() - t0
        for _ in range(warmup):
            state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready(metrics)
            times.append(time.perf_counter() - t0)
    step_s = float(np.median(times))
    model_flops = _model_flops(config, state, batch)
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
    result = {
        "config": name, "devices": f"{jax.device_count()} x {jax.devices()[0].device_kind}",
        "params_M": count(trainer.abstract_params) / 1e6,
        "trainable_M": count(state.trainable) / 1e6,
        "batch": config.batch_size, "frames": config.data.num_frames,
        "resolution": "x".join(map(str, config.data.resolution)),
        "init_s": init_s, "compile_s": compile_s, "step_ms": 1e3 * step_s,
        "step_ms_min": 1e3 * min(times), "clips_per_s": config.batch_size / step_s,
        "peak_rss_GiB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "loss": float(metrics["loss"]),
    }
    device_peak = _peak_device_bytes()
    if device_peak is not None:
        result["peak_device_GiB"] = device_peak / 2**30
    result["model_tflops_per_step"] = model_flops / 1e12
    result["xla_tflops_per_step"] = _flops(compiled) / 1e12
    kind = jax.devices()[0].device_kind
    peak = next((v for k, v in PEAK_FLOPS.items() if kind.startswith(k)), None)
    if jax.default_backend() != "cpu" and peak:
        result["mfu"] = model_flops / step_s / (peak * jax.device_count())
        result["hfu"] = 1e12 * result["xla_tflops_per_step"] / step_s / (peak * jax.device_count())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="demo,mid", help=f"comma-separated, from {sorted(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-per-device", type=int, default=None, help="override the config's batch size")
    parser.add_argument("--json", default=None, help="append each result as one JSON line to this file")
    args = parser.parse_args()
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; choose from {sorted(CONFIGS)}")
    if len(names) > 1:  # one process per config, so each peak RSS is its own
        for name in names:
            subprocess.run([sys.executable, __file__, "--configs", name, "--steps", str(args.steps), "--warmup",
                            str(args.warmup)]
                           + ([] if args.batch_per_device is None else ["--batch-per-device", str(args.batch_per_device)])
                           + ([] if args.json is None else ["--json", args.json]), check=True)
        return
    print(f"# jax {jax.__version__}, backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    for name in names:
        r = benchmark(name, args.steps, args.warmup, args.batch_per_device)
        line = (f"{r['config']:>9}: {r['devices']}, {r['params_M']:.1f} M params ({r['trainable_M']:.1f} M train), "
                f"batch {r['batch']} x {r['frames']} x {r['resolution']}: step {r['step_ms']:.0f} ms "
                f"(min {r['step_ms_min']:.0f}), {r['clips_per_s']:.2f} clips/s, compile {r['compile_s']:.1f} s, "
                f"init {r['init_s']:.1f} s, peak RSS {r['peak_rss_GiB']:.2f} GiB")
        if "peak_device_GiB" in r:
            line += f", peak device memory {r['peak_device_GiB']:.2f} GiB"
        line += f", {r['model_tflops_per_step']:.3g} model TFLOP/step ({r['xla_tflops_per_step']:.3g} with remat)"
        if "mfu" in r:
            line += f", MFU {100 * r['mfu']:.1f}%, HFU {100 * r['hfu']:.1f}%"
        print(line, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
