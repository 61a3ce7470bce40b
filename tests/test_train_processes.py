"""The trainer as separate processes (``python -m vidrd_jax.train --config configs/tiny.py``):

* a run SIGKILLed after its first checkpoint, restarted (past a planted, never-committed checkpoint) and stopped by
  SIGTERM ends exactly where a straight run is at that step: parameters, optimizer state, EMA, RNG, data order;
* the straight run's loss falls; export turns its checkpoint into an inference checkpoint;
* two JAX processes (gloo collectives over a localhost coordinator, one CPU device each) train like one process
  that reads both processes' data shards into its batch.

All runs share a persistent compilation cache (``config.compilation_cache_dir``), so only the first compiles.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import portpicker
import pytest

from vidrd_jax import checkpoints, export, metrics
from vidrd_jax import train_state as ts
from vidrd_jax.tasks.denoising import DenoisingTask

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600


def tiny_config():
    spec = importlib.util.spec_from_file_location("tiny_config", REPO / "configs" / "tiny.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _env(devices: int) -> dict:
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", JAX_DEFAULT_MATMUL_PRECISION="highest",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla_cache"))


def _train_cmd(workdir, cache: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "vidrd_jax.train", "--config", "configs/tiny.py", "--workdir",
            str(workdir), "--config.progress_bar=False", f"--config.compilation_cache_dir={cache}",
            "--verbosity=-1", *overrides]


def _start(cmd: list[str], log: Path, devices: int = 1) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=_env(devices), stdout=open(log, "w"), stderr=subprocess.STDOUT)


def _finish(proc: subprocess.Popen, log: Path, expect: int = 0) -> None:
    code = proc.wait(timeout=TIMEOUT)
    assert code == expect, f"exit code {code} (expected {expect}); log tail:\n{log.read_text()[-4000:]}"


def _steps(workdir) -> list[int]:
    """Committed checkpoint steps (Orbax renames a finished save from ``<step>.orbax-checkpoint-tmp``)."""
    directory = Path(workdir) / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def _wait_for_checkpoint(proc: subprocess.Popen, workdir, after: int, log: Path) -> None:
    deadline = time.time() + TIMEOUT
    while not any(s > after for s in _steps(workdir)):
        assert proc.poll() is None, f"run ended early ({proc.returncode}):\n{log.read_text()[-4000:]}"
        assert time.time() < deadline, "no checkpoint in time"
        time.sleep(0.02)


def _losses(workdir) -> dict[int, float]:
    """step -> loss from metrics.jsonl (a restarted run re-logs steps after its checkpoint: the last one wins)."""
    return {r["step"]: r["loss"] for r in metrics.read_jsonl(str(workdir))}


def _flat(tree) -> dict[str, np.ndarray]:
    """``{"opt_state/1/0/mu/unet/conv_in/kernel": array, ...}`` for any pytree (dicts, lists, named tuples)."""
    name = lambda k: str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))  # noqa: E731
    return {"/".join(map(name, path)): np.asarray(x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _state(workdir, step: int) -> dict[str, np.ndarray]:
    """A saved train state as flat numpy arrays, read without a target (tuples come back as lists)."""
    path = Path(workdir) / "checkpoints" / str(step) / "state"
    checkpointer = ocp.PyTreeCheckpointer()
    tree = checkpointer.metadata(path).item_metadata.tree
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return _flat(checkpointer.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cache):
    """A run SIGKILLed after its first checkpoint, restarted and stopped by SIGTERM after step ~24; then a straight
    run to the step where the SIGTERM saved."""
    root = tmp_path_factory.mktemp("runs")
    resumed, straight = root / "resumed", root / "straight"
    endless = ("--config.total_steps=1000", "--config.checkpoint.every_steps=3")
    proc = _start(_train_cmd(resumed, cache, *endless), root / "killed.log")
    _wait_for_checkpoint(proc, resumed, 0, root / "killed.log")
    proc.send_signal(signal.SIGKILL)
    _finish(proc, root / "killed.log", expect=-signal.SIGKILL)
    killed_at = _steps(resumed)[-1]
    # A save that never committed: complete-looking files under Orbax's temporary name, a later step.
    planted = resumed / "checkpoints" / f"{killed_at + 100}.orbax-checkpoint-tmp"
    shutil.copytree(resumed / "checkpoints" / str(killed_at), planted)

    proc = _start(_train_cmd(resumed, cache, *endless), root / "restarted.log")
    _wait_for_checkpoint(proc, resumed, max(killed_at, 21), root / "restarted.log")
    proc.send_signal(signal.SIGTERM)
    _finish(proc, root / "restarted.log", expect=0)
    stopped_at = _steps(resumed)[-1]

    proc = _start(_train_cmd(straight, cache, f"--config.total_steps={stopped_at}",
                             "--config.checkpoint.every_steps=1000", f"--config.sample.every_steps={stopped_at}",
                             "--config.sample.num_steps=2"), root / "straight.log")
    _finish(proc, root / "straight.log")
    return dict(straight=straight, resumed=resumed, killed_at=killed_at, stopped_at=stopped_at, planted=planted)


def test_tiny_loss_falls(runs):
    losses = _losses(runs["straight"])
    n = runs["stopped_at"]
    assert sorted(losses) == list(range(1, n + 1)) and n >= 24
    first, last = np.mean([losses[s] for s in range(1, 9)]), np.mean([losses[s] for s in range(n - 7, n + 1)])
    assert last < 0.8 * first, (first, last)
    records = metrics.read_jsonl(str(runs["straight"]))
    assert {"grad_norm", "lr", "skipped_steps", "clips_per_sec", "data/skipped_total"} <= set(records[-1])
    assert list((runs["straight"] / "tensorboard").glob("events.out.tfevents.*"))


def test_sample_videos_from_the_ema_weights(runs):
    from vidrd_jax import media

    n = runs["stopped_at"]
    config = tiny_config()
    for i in range(len(config.sample.prompts)):
        video = media.read_video(runs["straight"] / "samples" / f"step_{n:08d}_{i}.gif")
        assert video.shape == (config.sample.num_frames, config.sample.height, config.sample.width, 3)
        assert video.std() > 0


def test_restart_after_sigkill_and_sigterm_is_exact(runs):
    straight, resumed = runs["straight"], runs["resumed"]
    killed_at, stopped_at = runs["killed_at"], runs["stopped_at"]
    assert 3 <= killed_at < stopped_at, (killed_at, stopped_at)
    # The restarted run logged exactly the steps after the committed checkpoint, with the straight run's losses
    # (same data order, same noise); it never restored the uncommitted save, which was cleaned up.
    losses_straight, losses_resumed = _losses(straight), _losses(resumed)
    assert max(losses_resumed) == stopped_at
    assert [losses_resumed[s] for s in range(1, stopped_at + 1)] == \
        [losses_straight[s] for s in range(1, stopped_at + 1)]
    assert not runs["planted"].exists()
    # SIGTERM saved the step it stopped at: the whole state is bit-identical to the straight run's.
    a, b = _state(resumed, stopped_at), _state(straight, stopped_at)
    assert a.keys() == b.keys() and any("/mu/" in k for k in a) and "rng" in a
    for key in a:
        assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key
    assert int(a["step"]) == stopped_at
    data = lambda w: (Path(w) / "checkpoints" / str(stopped_at) / "data" / "process_0-of-1.json").read_text()  # noqa
    assert json.loads(data(resumed)) == json.loads(data(straight))
    saved_config = json.loads((resumed / "checkpoints" / str(stopped_at) / "config" / "metadata").read_text())
    assert saved_config["total_steps"] == 1000 and saved_config["model"]["preset"] == "tiny"


def test_export_writes_the_ema_weights_as_an_inference_checkpoint(runs, tmp_path):
    out = export.export(str(runs["straight"]), str(tmp_path / "exported"), use_ema=True, dtype="bfloat16")
    params, model_config = checkpoints.load_inference_checkpoint(out)
    state = _state(runs["straight"], runs["stopped_at"])
    flat = ts.flatten(params)
    assert set(flat) == {k.split("/", 1)[1] for k in state if k.startswith(("ema/", "frozen/"))}
    for key, value in flat.items():
        source = state.get(f"ema/{key}", state.get(f"frozen/{key}"))
        assert value.dtype == np.dtype("bfloat16")
        np.testing.assert_array_equal(np.asarray(value), source.astype("bfloat16"), err_msg=key)
    assert model_config["unet"]["param_dtype"] == "bfloat16" and "scheduler" in model_config
    assert not np.array_equal(state["ema/unet/conv_in/kernel"], state["trainable/unet/conv_in/kernel"])


_EMULATE = r"""
import importlib.util, json, sys
import jax, numpy as np, data_pipelines
from vidrd_jax import parallel, train
spec = importlib.util.spec_from_file_location("demo", "configs/tiny.py")
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
config = module.get_config()
config.model.init_from, out = sys.argv[1], sys.argv[2]
trainer = train.build_trainer(config)  # 1 device: the straight run's step program (compilation cache hit)
iterators = [data_pipelines.make_iterator(config.data, batch_size=config.batch_size // 2, process_index=i,
                                          process_count=2, seed=config.seed) for i in range(2)]
losses = []
with parallel.activation_rules_context(trainer.mesh, trainer.rules):
    state, step = trainer.init_state(), None
    for _ in range(2):
        parts = [trainer.task.host_batch(next(it)) for it in iterators]
        batch = trainer.global_batch({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})
        step = step or trainer.make_step({k: v.sharding for k, v in batch.items()})
        state, m = step(state, batch)
        losses.append(float(m["loss"]))
name = lambda k: str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))))
flat = {"/".join(map(name, p)): np.asarray(x)
        for p, x in jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]}
np.savez(out, **{k.replace("/", "|"): v for k, v in flat.items()}, losses=np.asarray(losses))
for it in iterators:
    it.close()
"""


def _write_random_checkpoint(directory: Path) -> str:
    config = tiny_config()
    task = DenoisingTask(config)
    shapes, _ = task.abstract_params()
    rng = np.random.default_rng(1)

    def leaf(path, x):
        name = path[-1].key
        if name in ("scale", "bias"):
            return np.full(x.shape, name == "scale", x.dtype)
        std = 1.0 / np.sqrt(np.prod(x.shape[:-1])) if name == "kernel" else 0.02
        return (std * rng.standard_normal(x.shape)).astype(x.dtype)

    params, model_config = task.export(jax.tree_util.tree_map_with_path(leaf, shapes), "float32")
    return checkpoints.save_inference_checkpoint(str(directory), params, model_config)


def test_two_processes_train_like_one(tmp_path, cache):
    """2 steps on 2 processes x 1 device == 2 steps of one process that reads both data shards into one batch.

    Tolerance: rtol 1e-6, atol 1e-8 (the cross-process all-reduce adds the same two partial sums).
    """
    init = _write_random_checkpoint(tmp_path / "init")
    workdir = tmp_path / "two_processes"
    port = portpicker.pick_unused_port()
    common = ("--config.total_steps=2", "--config.checkpoint.every_steps=2", f"--config.model.init_from={init}",
              f"--config.distributed.coordinator_address=localhost:{port}", "--config.distributed.num_processes=2",
              "--config.distributed.cpu_collectives=gloo", "--config.distributed.initialization_timeout=120")
    workers = [_start(_train_cmd(workdir, cache, *common, f"--config.distributed.process_id={i}"),
                      tmp_path / f"worker{i}.log") for i in range(2)]
    single_out = tmp_path / "single.npz"
    single = subprocess.Popen([sys.executable, "-c", _EMULATE, init, str(single_out)], cwd=REPO, env=_env(1),
                              stdout=open(tmp_path / "single.log", "w"), stderr=subprocess.STDOUT)
    for i, proc in enumerate(workers):
        _finish(proc, tmp_path / f"worker{i}.log")
    _finish(single, tmp_path / "single.log")

    reference = {k.replace("|", "/"): v for k, v in np.load(single_out).items()}
    losses = _losses(workdir)
    np.testing.assert_allclose([losses[1], losses[2]], reference.pop("losses"), rtol=1e-6)
    assert sorted(p.name for p in (workdir / "checkpoints" / "2" / "data").glob("*.json")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]
    state = _state(workdir, 2)
    assert state.keys() == reference.keys() and int(state["step"]) == 2
    for key, value in reference.items():  # parameters, Adam moments, EMA, counters, RNG
        np.testing.assert_allclose(state[key], value, rtol=1e-6, atol=1e-8, err_msg=key)
