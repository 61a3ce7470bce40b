"""The trainer as separate processes (``python -m vidrd_jax.train --config configs/tiny.py``):

* a run SIGKILLed after its first checkpoint, restarted (past a planted, never-committed checkpoint) and stopped by
  SIGTERM (exit status 75) ends exactly where a straight run is at that step: parameters, optimizer state, EMA, RNG,
  data order, one metrics record per step;
* the straight run's loss falls; export turns its checkpoint into an inference checkpoint; at the default verbosity
  its log has no Orbax INFO lines;
* resuming with a smaller ``total_steps`` or another model shape is a one-line error; a training workdir or a file
  given as an inference checkpoint says what it is;
* two JAX processes (gloo collectives over a localhost coordinator, one CPU device each) train like one process
  that reads both processes' data shards into its batch.

All runs share a persistent compilation cache (``config.compilation_cache_dir``), so only the first compiles.
"""
import json
import os
import re
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
from numerics import assert_close

from vidrd_jax import checkpoints, export, train
from vidrd_jax import metric_writer as metrics
from vidrd_jax import train_state as ts
from vidrd_jax.tasks.denoising import DenoisingTask

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 600


def _env(devices: int) -> dict:
    """The test session's environment (its XLA_FLAGS, e.g. an ISA cap, kept) with ``devices`` CPU devices."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    env = dict(os.environ, JAX_PLATFORMS="cpu", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", JAX_DEFAULT_MATMUL_PRECISION="highest",
               XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("xla_cache"))


def _train_cmd(workdir, cache: str, *overrides: str, quiet: bool = True) -> list[str]:
    return [sys.executable, "-m", "vidrd_jax.train", "--config", "configs/tiny.py", "--workdir",
            str(workdir), "--config.progress_bar=False", f"--config.compilation_cache_dir={cache}",
            *(["--verbosity=-1"] if quiet else []), *overrides]


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
    """step -> loss from metrics.jsonl."""
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
    # Records of steps after the checkpoint, as a run killed a few steps later leaves them.
    with open(resumed / metrics.JSONL_FILE, "a") as f:
        f.writelines(json.dumps({"step": s, "loss": -1.0}) + "\n" for s in range(killed_at + 1, killed_at + 4))

    proc = _start(_train_cmd(resumed, cache, *endless), root / "restarted.log")
    _wait_for_checkpoint(proc, resumed, max(killed_at, 21), root / "restarted.log")
    proc.send_signal(signal.SIGTERM)
    _finish(proc, root / "restarted.log", expect=train.EXIT_PREEMPTED)
    stopped_at = _steps(resumed)[-1]

    proc = _start(_train_cmd(straight, cache, f"--config.total_steps={stopped_at}",
                             "--config.checkpoint.every_steps=1000", f"--config.sample.every_steps={stopped_at}",
                             "--config.sample.num_steps=2", quiet=False), root / "straight.log")
    _finish(proc, root / "straight.log")
    return dict(straight=straight, resumed=resumed, killed_at=killed_at, stopped_at=stopped_at, planted=planted,
                logs=root)


def test_tiny_loss_falls(runs):
    losses = _losses(runs["straight"])
    n = runs["stopped_at"]
    assert sorted(losses) == list(range(1, n + 1)) and n >= 24
    first, last = np.mean([losses[s] for s in range(1, 9)]), np.mean([losses[s] for s in range(n - 7, n + 1)])
    assert last < 0.8 * first, (first, last)
    records = metrics.read_jsonl(str(runs["straight"]))
    assert {"grad_norm", "lr", "skipped_steps", "clips_per_sec", "data/skipped_total"} <= set(records[-1])
    assert list((runs["straight"] / "tensorboard").glob("events.out.tfevents.*"))


def test_default_verbosity_hides_orbax_info_lines(runs):
    """The straight run logs at the default verbosity (INFO) and saves one checkpoint (Orbax: ~50 INFO lines)."""
    log = (runs["logs"] / "straight.log").read_text()
    assert "initialised a new run" in log
    assert not [line for line in log.splitlines() if f"{os.sep}orbax{os.sep}" in line or "checkpoint_manager.py" in
                line], log[-3000:]


def test_sample_videos_from_the_ema_weights(runs, tiny_config):
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
    # One record per step: the restart dropped the records after its checkpoint (planted ones included) ...
    assert [r["step"] for r in metrics.read_jsonl(str(resumed))] == list(range(1, stopped_at + 1))
    # ... and its event file starts with TensorBoard's purge marker at the first step it trains.
    assert killed_at + 1 in _tensorboard_purge_steps(resumed / "tensorboard")
    assert f"pre-empted at step {stopped_at}" in (runs["logs"] / "restarted.log").read_text()
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


def _tensorboard_purge_steps(directory: Path) -> list[int]:
    """Steps of the SessionLog START events (tensorboardX ``purge_step``) in ``directory`` 's event files (TFRecords:
    length, length CRC, event, event CRC)."""
    from tensorboardX.proto import event_pb2

    steps = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset < len(data):
            length = int.from_bytes(data[offset:offset + 8], "little")
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            offset += 16 + length
            if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
                steps.append(event.step)
    return steps


def test_resume_errors_name_the_problem(runs, tmp_path, capsys):
    """In-process ``python -m vidrd_jax.train`` on a copy of the resumed run's last checkpoint: a ``total_steps``
    below it, or a changed model shape, is one ``error:`` line (status 2) naming the step or the differing
    parameters, not Orbax's advice to disable its checks."""
    stopped_at = runs["stopped_at"]
    shutil.copytree(runs["resumed"] / "checkpoints" / str(stopped_at), tmp_path / "checkpoints" / str(stopped_at))
    argv = ["train", "--config", str(REPO / "configs" / "tiny.py"), "--workdir", str(tmp_path),
            "--config.progress_bar=False", "--config.batch_size=8"]  # 8 batch shards on the test's 8 devices
    assert train.main(argv + [f"--config.total_steps={stopped_at - 1}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: config.total_steps={stopped_at - 1} is below step {stopped_at} of the latest "
                          f"checkpoint in {str(tmp_path / 'checkpoints')!r}"), err
    assert train.main(argv + ["--config.model.unet.block_out_channels=(64,)"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot resume: checkpoint {stopped_at} in") and err.count("\n") == 1, err
    assert "trainable/unet/conv_in/kernel: checkpoint (3, 3, 4, 32) vs model (3, 3, 4, 64)" in err
    assert "config fields changed since: batch_size, model;" in err and "strict" not in err
    assert not (tmp_path / metrics.JSONL_FILE).exists()  # nothing written before the state fits


def test_inference_loaders_say_what_they_were_given_instead(runs, tmp_path, capsys):
    """A training workdir (or its checkpoints/, or one step of it) points to ``export``; a file is a file."""
    from vidrd_jax import generate

    straight = runs["straight"]
    hint = f"is a training checkpoint, not an inference checkpoint: convert it first with `python -m " \
           f"vidrd_jax.export --workdir {straight} --out OUT`"
    for given in (straight, straight / "checkpoints", straight / "checkpoints" / str(runs["stopped_at"])):
        with pytest.raises(FileNotFoundError, match=re.escape(f"{str(given)!r} {hint}")):
            checkpoints.load_inference_checkpoint(str(given))
    a_file = tmp_path / "model.safetensors"
    a_file.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=re.escape(f"{str(a_file)!r} is a file, not an inference checkpoint "
                                                          "directory")):
        checkpoints.load_model_config(str(a_file))
    for given, message in ((straight, hint), (a_file, "is a file, not an inference checkpoint directory")):
        argv = ["generate", "--checkpoint", str(given), "--prompt", "a cat", "--out", str(tmp_path / "o.mp4")]
        assert generate.main(argv) == 2
        assert f"error: --checkpoint: {str(given)!r} {message}" in capsys.readouterr().err


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
import json, sys
import jax, numpy as np, data_pipelines
from vidrd_jax import parallel, train
from vidrd_jax.config_loading import load_config
config = load_config("configs/tiny.py")
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


def _write_random_checkpoint(directory: Path, config) -> str:
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


def test_two_processes_train_like_one(tmp_path, cache, tiny_config):
    """2 steps on 2 processes x 1 device == 2 steps of one process that reads both data shards into one batch.

    Tolerance (numerics.py): gradients of the tiny UNet (forward + backward chains of ~100 roundings) are summed in
    another order (two partial sums + all-reduce), so 256 roundings of each leaf's scale; parameters and their EMA
    also get the most two Adam steps can move them (2 x the peak learning rate), the scale their updates differ at.
    """
    init = _write_random_checkpoint(tmp_path / "init", tiny_config())
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
    assert_close([losses[1], losses[2]], reference.pop("losses"), ops=256)
    assert sorted(p.name for p in (workdir / "checkpoints" / "2" / "data").glob("*.json")) == \
        ["process_0-of-2.json", "process_1-of-2.json"]
    state = _state(workdir, 2)
    assert state.keys() == reference.keys() and int(state["step"]) == 2
    moved = 2 * tiny_config().optimizer.learning_rate  # Adam moves a parameter by at most ~lr per step
    for key, value in reference.items():  # parameters, Adam moments, EMA, counters, RNG
        if not np.issubdtype(value.dtype, np.floating):
            np.testing.assert_array_equal(state[key], value, err_msg=key)
            continue
        updated = key.startswith(("trainable/", "ema/"))
        assert_close(state[key], value, ops=256, scale=np.abs(value).max() + (moved if updated else 0), err_msg=key)
