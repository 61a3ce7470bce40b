"""Plan a pod run before renting it: compile the SD-2.1-size train step and sampler step for a mesh of fake devices.

    python benchmarks/aot_plan.py --devices 8 --mesh data=-1
    python benchmarks/aot_plan.py --devices 64 --mesh data=8,fsdp=8 --batch-per-device 8
    python benchmarks/aot_plan.py --devices 1 --batch-per-device 1 --resolution 64 --remat none --what train

Nothing is allocated: the trainer of ``configs/sd21_256.py`` (random SD-2.1 init, the paper's trainable set, bf16,
full remat) is built on ``--devices`` fake CPU devices (``--xla_force_host_platform_device_count``), its step is
lowered from abstract state and batch (``jax.ShapeDtypeStruct`` with the trainer's shardings) and compiled. Printed
per device: XLA's ``memory_analysis`` (arguments, outputs, temporaries; the peak is their sum less what donation
aliases) and ``cost_analysis`` FLOPs. The same is done for one guided denoising step of the 8-frame sampler (two UNet
passes: prompt and negative prompt; a clip takes ``--sample-steps`` of them) with the prompts' batch over the data
axes. The predicted step time divides the model FLOPs (the step lowered without remat, whole mesh) by ``--mfu`` of
the mesh's peak bf16 FLOP/s on each accelerator in ``PEAK_FLOPS``.

CPU memory analysis is the CPU backend's buffer assignment: an accelerator's compiler fuses differently, so read the
numbers as a plan to within tens of per cent, and check them with ``benchmarks/accelerator.sh`` on one chip.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Peak dense bf16 FLOP/s per chip (vendors' datasheets).
PEAK_FLOPS = {"H100 SXM": 989e12, "TPU v5p": 459e12}


def _parse_mesh(text: str) -> dict[str, int]:
    axes = {"data": 1, "fsdp": 1, "tensor": 1}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        if name not in axes or not value.lstrip("-").isdigit():
            raise SystemExit(f"error: --mesh: expected comma-separated data=N,fsdp=N,tensor=N, got {text!r}")
        axes[name] = int(value)
    return axes


def _flops(stage) -> float:
    cost = stage.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float((cost or {}).get("flops", 0.0))


# Buffer assignment and FLOP counts come from XLA's HLO passes; LLVM's optimisation of the CPU code (most of a CPU
# compile of this size) changes neither, so it is switched off.
COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _memory(compiled) -> dict[str, float]:
    m = compiled.memory_analysis()
    gib = {k: getattr(m, f"{k}_size_in_bytes") / 2**30 for k in ("argument", "output", "temp", "alias")}
    gib["peak"] = gib["argument"] + gib["output"] + gib["temp"] - gib["alias"]
    return gib


def plan_train(config, batch_per_device: int) -> dict:
    import jax
    import numpy as np

    import data_pipelines
    from vidrd_jax import parallel, train

    config.batch_size = batch_per_device * jax.device_count()
    trainer = train.build_trainer(config)
    iterator = data_pipelines.make_iterator(config.data, batch_size=1, seed=0)
    example = trainer.task.host_batch(next(iterator))
    iterator.close()
    batch = {k: jax.ShapeDtypeStruct((config.batch_size,) + np.shape(v)[1:], np.asarray(v).dtype,
                                     sharding=trainer.batch_sharding((config.batch_size,) + np.shape(v)[1:]))
             for k, v in example.items()}
    shardings = {k: v.sharding for k, v in batch.items()}
    with parallel.activation_rules_context(trainer.mesh, trainer.rules):
        t0 = time.perf_counter()
        compiled = trainer.make_step(shardings).lower(trainer.abstract_state, batch).compile(COMPILER_OPTIONS)
        compile_s = time.perf_counter() - t0
    no_remat = copy.deepcopy(config)
    no_remat.model.unet.remat_policy = "none"
    plain = train.build_trainer(no_remat)
    with parallel.activation_rules_context(plain.mesh, plain.rules):
        model_flops = _flops(plain.make_step(shardings).lower(plain.abstract_state, batch))
    count = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))  # noqa: E731
    return {"what": "train step", "mesh": dict(trainer.mesh.shape), "batch": config.batch_size, "compile_s": compile_s,
            "params_M": count(trainer.abstract_params) / 1e6, "trainable_M": count(trainer.abstract_state.trainable) / 1e6,
            "memory_GiB": _memory(compiled), "device_flops": _flops(compiled), "model_flops": model_flops}


def plan_sample(config, batch_per_device: int) -> dict:
    """One guided denoising step of the 8-frame sampler: prompts' batch over the data axes, the UNet's parameters in its
    compute dtype, sharded as in training."""
    import jax
    import jax.numpy as jnp

    from vidrd_jax import parallel, train
    from vidrd_jax.diffusion import ClassifierFreeGuidance
    from vidrd_jax.models import factory
    from vidrd_jax.pipeline import UNetDenoiser

    trainer = train.build_trainer(config)
    unet_config = trainer.task.model_configs["unet"]
    text_config = trainer.task.model_configs["text_encoder"]
    vae_factor = factory.downsampling_factor(trainer.task.model_configs["vae"])
    b = batch_per_device * jax.device_count()
    h, w = (s // vae_factor for s in config.data.resolution)
    latent = (b, config.sample.num_frames, h, w, unet_config.in_channels)
    text = (b, text_config.max_position_embeddings, text_config.hidden_size)
    # Inference weights are stored in the compute dtype (``export --dtype bf16``), not as fp32 master weights.
    unet_params = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.dtype(unet_config.dtype)),
                               trainer.abstract_params["unet"])
    param_sh = trainer.param_shardings["unet"]
    eps = ClassifierFreeGuidance(UNetDenoiser(unet_config), float(config.sample.guidance_scale))

    def step(params, z, t, text, negative):
        return eps(z, t, {"text": text, "negative": negative, "params": params})

    args = (jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), unet_params, param_sh),
            jax.ShapeDtypeStruct(latent, jnp.float32, sharding=trainer.batch_sharding(latent)),
            jax.ShapeDtypeStruct((), jnp.int32, sharding=trainer.replicated),
            jax.ShapeDtypeStruct(text, jnp.float32, sharding=trainer.batch_sharding(text)),
            jax.ShapeDtypeStruct((1,) + text[1:], jnp.float32, sharding=trainer.replicated))
    with parallel.activation_rules_context(trainer.mesh, trainer.rules):
        lowered = jax.jit(step).lower(*args)
        t0 = time.perf_counter()
        compiled = lowered.compile(COMPILER_OPTIONS)
        compile_s = time.perf_counter() - t0
    return {"what": "sampler step (guided)", "mesh": dict(trainer.mesh.shape), "batch": b, "compile_s": compile_s, "memory_GiB": _memory(compiled),
            "device_flops": _flops(compiled), "model_flops": _flops(lowered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", type=int, default=8, help="fake CPU devices (the mesh's size)")
    parser.add_argument("--mesh", default="data=-1", help="data=N,fsdp=N,tensor=N (-1: the rest)")
    parser.add_argument("--batch-per-device", type=int, default=8, help="training clips per device")
    parser.add_argument("--sample-batch-per-device", type=int, default=1, help="videos per device when sampling")
    parser.add_argument("--sample-steps", type=int, default=50, help="denoising steps per clip")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOP utilisation for the prediction")
    parser.add_argument("--what", default="train,sample", help="comma-separated: train, sample")
    parser.add_argument("--resolution", type=int, default=256, help="frame height = width in pixels")
    parser.add_argument("--remat", default="full", help="the UNet's remat_policy (none, full, ...)")
    parser.add_argument("--json", default=None, help="append the results as JSON lines to this file")
    args = parser.parse_args()
    mesh = _parse_mesh(args.mesh)
    what = set(filter(None, args.what.split(",")))
    if args.devices < 1 or not what or what - {"train", "sample"}:
        parser.error("--devices must be >= 1 and --what a subset of train,sample")
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}").strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    import jax

    from vidrd_jax.config_loading import load_config

    config = load_config(str(REPO / "configs" / "sd21_256.py"))
    config.mesh.update(mesh)
    config.sample.every_steps = 0
    config.data.worker_count = 0  # one example's shapes are all the plan reads
    config.data.resolution = (args.resolution, args.resolution)
    config.sample.update(height=args.resolution, width=args.resolution)
    config.model.unet.remat_policy = args.remat
    print(f"# jax {jax.__version__}, {jax.device_count()} fake devices, mesh {mesh}", flush=True)
    results = []
    if "train" in what:
        results.append(plan_train(config, args.batch_per_device))
    if "sample" in what:
        results.append(plan_sample(config, args.sample_batch_per_device))
    for r in results:
        r["devices"] = args.devices
        per_run = args.sample_steps if r["what"].startswith("sampler") else 1
        r["predicted_s"] = {chip: per_run * r["model_flops"] / (args.mfu * peak * args.devices)
                            for chip, peak in PEAK_FLOPS.items()}
        m = r["memory_GiB"]
        unit = f"per clip ({args.sample_steps} steps)" if per_run > 1 else "per step"
        print(f"{r['what']}: mesh {r['mesh']}, batch {r['batch']}; per device: peak {m['peak']:.2f} GiB "
              f"(arguments {m['argument']:.2f}, outputs {m['output']:.2f}, temporaries {m['temp']:.2f}, aliased "
              f"{m['alias']:.2f}), {r['device_flops'] / 1e12:.2f} TFLOP; model {r['model_flops'] / 1e12:.2f} TFLOP "
              f"(whole mesh); predicted {unit} at {100 * args.mfu:.0f}% MFU: "
              + ", ".join(f"{chip} {s:.3f} s" for chip, s in r["predicted_s"].items())
              + f"; compiled in {r['compile_s']:.0f} s", flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
