r"""The paper set-up (``configs/sd21_256.py``) on a TPU pod slice, e.g. v5p-128 (64 chips, 16 hosts).

    launch/tpu_vm.sh --name vidrd --zone us-east5-a --type v5p-128 --repo https://github.com/YOU/vidrd_jax.git \
        create install
    launch/tpu_vm.sh --name vidrd --zone us-east5-a run -- \
        python -m vidrd_jax.train --workdir gs://bucket/vidrd_pod \
            --config configs/tpu_pod.py:init_from=gs://bucket/ckpt/sd21_video,cache=gs://bucket/jax_cache,\
webvid2m=gs://bucket/idx/webvid.jsonl

Argument: as ``configs/sd21_256.py`` plus ``cache=`` (``config.compilation_cache_dir``).

Every host runs the same command; ``jax.distributed.initialize()`` finds the pod (``distributed.mode="on"``), each
host reads its own data shard, parameters and optimizer state are sharded over ``fsdp`` (8 chips: one ~1.2 B UNet's
state per 8 chips) and the batch over ``data x fsdp``. Checkpoints and the compilation cache live on GCS, so a
pre-empted slice (SIGTERM -> checkpoint at an agreed step) restarts where it stopped without recompiling.

Expected: as sd21_256, with a global batch of 256 clips (4 per chip); steps/s and clips/s are logged.
"""
from pathlib import Path

import ml_collections

from vidrd_jax.config_loading import load_module


def _paper_config(arg: str) -> ml_collections.ConfigDict:
    """``configs/sd21_256.py`` 's config (loaded by path: config files are not a package)."""
    return load_module(Path(__file__).with_name("sd21_256.py")).get_config(arg)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    pairs = [p for p in arg.split(",") if p]
    cache = next((p.split("=", 1)[1] for p in pairs if p.startswith("cache=")), "")
    c = _paper_config(",".join(p for p in pairs if not p.startswith("cache=")))
    c.distributed.mode = "on"  # TPU pods: JAX finds the coordinator and the process ids itself
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 8, "tensor": 1})
    c.batch_size = 256
    c.data.worker_count = 16
    c.compilation_cache_dir = cache  # e.g. gs://bucket/jax_cache: restarts skip compilation
    c.checkpoint.every_steps = 500
    return c
