"""``tests/test_vae_temporal.py``'s fine-tuning run for one training seed: flicker / PSNR change on 64 held-out clips.

    python benchmarks/vae_temporal_seeds.py --seed 1
    XLA_FLAGS=--xla_cpu_max_isa=AVX2 python benchmarks/vae_temporal_seeds.py --seed 1   # another CPU's float path

Pre-trains the test's small VAE (replicate temporal padding) with ``--seed``, fine-tunes its Temp-Convs with
``configs/vae_temporal.py:demo`` and prints one JSON line: the after - before change of flicker (all and interior
frame pairs) and PSNR for posterior-mean and posterior-sample latents, and the image decoder's flicker before.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import conftest  # noqa: E402,F401  (8 fake devices, fp32 matmuls: the test's set-up)
import jax  # noqa: E402
import test_vae_temporal as T  # noqa: E402

from vidrd_jax import checkpoints, train  # noqa: E402
from vidrd_jax.models.vae import VAEConfig  # noqa: E402
from vidrd_jax.tasks.vae_temporal import VAETemporalTask  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start, root = time.perf_counter(), tempfile.mkdtemp()
    config = T.load_config("demo")
    config.seed = args.seed
    config.sample.num_batches = 4  # 64 evaluation clips
    vae_config = VAEConfig.tiny(block_out_channels=(8, 16), temporal_padding="replicate")
    pretrained = T.pretrain_vae(vae_config, config.data, T.PRETRAIN_STEPS, seed=args.seed)
    config.model.init_from = checkpoints.save_inference_checkpoint(f"{root}/small_vae", {"vae": pretrained},
                                                                   {"vae": vae_config.to_dict()})
    config.total_steps = T.FINETUNE_STEPS
    config.progress_bar = False
    config.checkpoint.update(every_steps=T.FINETUNE_STEPS, async_save=False)
    config.sample.every_steps = T.FINETUNE_STEPS
    state = train.train_and_evaluate(config, f"{root}/run")
    task = VAETemporalTask(config)
    before = task.evaluate({"vae": pretrained})
    after = task.evaluate({"vae": jax.device_get(state.params(use_ema=True))["vae"]})
    out = {"seed": args.seed}
    for latents in ("mean", "sample"):
        out[f"{latents}/flicker_before"] = before[f"{latents}/image_decoder/flicker"]
        for metric in ("flicker", "flicker_interior", "psnr"):
            out[f"{latents}/delta/{metric}"] = after[f"{latents}/delta/{metric}"]
    out["wall_s"] = round(time.perf_counter() - start)
    print(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
