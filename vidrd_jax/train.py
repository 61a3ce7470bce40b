"""The trainer: ``python -m vidrd_jax.train --config configs/X.py[:arg] --workdir DIR [--config.a.b=v ...]``.

One run trains one model. A staged config (``configs/demo.py``: several runs of this trainer, then generation and
evaluation) is run by ``python -m vidrd_jax.recipes`` (:mod:`vidrd_jax.recipes.stages`); this command rejects it.

One loop for every task (``vidrd_jax.tasks``), in big_vision-style sections:

1. config: validated (errors name the field), locked; JSON copy in every checkpoint.
2. cluster + mesh: ``jax.distributed.initialize`` when multi-process; a ``data x fsdp x tensor`` mesh.
3. state: parameter shardings from the models' logical axis names and ``config.sharding_rules``; the state is created
   directly sharded (``jax.jit(..., out_shardings=...)``), optionally over an inference checkpoint (SD-2.1: only
   the parameters it lacks are initialised).
4. data: each process reads its shard of every global batch; host batches become global ``jax.Array`` s.
5. step: micro-batches (``lax.scan``) -> mean gradient of the trainable leaves -> non-finite guard -> optax -> EMA;
   jitted with explicit in/out shardings, the state donated; a fresh run compiles it while the state is created.
6. checkpoints (Orbax, async) every ``checkpoint.every_steps``, at the end and on SIGTERM; a restart with the same
   workdir resumes from the latest complete checkpoint, bit for bit (state, RNG, data position). A checkpoint that
   does not fit the config's train state, or a ``total_steps`` below its step, is an error naming what differs.
7. metrics to TensorBoard + ``metrics.jsonl`` (one record per step across restarts), tqdm progress; every
   ``config.sample.every_steps`` and after the last step, the task's evaluation of the EMA weights (``eval/…``
   metrics) and preview samples.

Exit status: 0 when ``total_steps`` is reached; 75 (``EX_TEMPFAIL``) after a SIGTERM (pre-emption): the checkpoint
of the step it stopped at is saved, rerun the same command to resume; 2 with one ``error: ...`` line for a bad flag,
config field, config file, workdir or checkpoint; 1 with a traceback for anything else.

Logging: absl's ``--verbosity`` (default 0: INFO; -1: warnings only). Orbax's ~50 INFO lines per checkpoint save
are hidden unless ``--verbosity=1`` (which also shows every library's debug lines).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import json
import logging as std_logging
import os
import signal
import sys
import tempfile
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vidrd_jax import checkpoints, cli, data_interface, optimizers, parallel
from vidrd_jax import metric_writer as metrics_lib
from vidrd_jax import train_state as ts
from vidrd_jax.tasks import Task, get_task_class
from vidrd_jax.train_config import validate_config, validate_optimizer

SAMPLES_DIR = "samples"
EXIT_PREEMPTED = 75  # EX_TEMPFAIL (sysexits.h): stopped by SIGTERM after saving a checkpoint; rerun to resume
# Config fields that may differ between a checkpoint and the run resuming it without a warning.
_RESUMABLE_CHANGES = ("total_steps", "log_every_steps", "progress_bar", "compilation_cache_dir", "checkpoint", "sample",
                      "distributed")


@dataclasses.dataclass
class Trainer:
    """Mesh, task, optimizer and the shardings of the train state; builds the state and the jitted step."""

    config: ml_collections.ConfigDict
    mesh: Mesh
    rules: tuple
    task: Task
    labels: dict[str, str]
    tx: optax.GradientTransformation
    schedules: dict[str, optax.Schedule]
    abstract_params: Any  # ShapeDtypeStructs of all parameters
    param_shardings: Any
    state_shardings: ts.TrainState
    abstract_state: ts.TrainState  # ShapeDtypeStructs carrying the shardings (restore target)

    @property
    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())

    def batch_sharding(self, shape: tuple[int, ...]) -> NamedSharding:
        return parallel.batch_sharding(self.mesh, self.rules, shape)

    def data_shard(self) -> parallel.DataShard:
        """This process's rows of each global batch (which data shard it reads)."""
        return parallel.data_shard(self.batch_sharding((self.config.batch_size,)), self.config.batch_size)

    def global_batch(self, host: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """Per-process host arrays -> global arrays sharded over the batch axes."""
        b = self.config.batch_size
        shardings = {k: self.batch_sharding((b,) + np.shape(v)[1:]) for k, v in host.items()}
        return parallel.host_to_global(host, shardings, b)

    def init_state(self) -> ts.TrainState:
        """Step-0 state, created sharded: the task's pretrained checkpoint and/or a fresh init (only run when some
        parameter is not in the checkpoint), then optimizer state and EMA."""
        init_rng, state_rng = jax.random.split(jax.random.PRNGKey(self.config.seed))
        # On CPU, unoptimised code generation compiles the (run-once) init program several times faster.
        options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
        flat_shardings = ts.flatten(self.param_shardings)

        def fresh(paths: Sequence[str]) -> dict[str, jax.Array]:
            """The fresh init of ``paths`` only: XLA drops the rest of the init program (a third of the UNet stage's
            init compile time is the pretrained VAE's init)."""
            def init(rng: jax.Array) -> dict[str, jax.Array]:
                return {p: v for p, v in ts.flatten(self.task.init_params(rng)).items() if p in wanted}

            wanted = set(paths)
            return jax.jit(init, out_shardings={p: flat_shardings[p] for p in wanted},
                           compiler_options=options)(init_rng)

        pretrained = self.task.pretrained()
        if pretrained is None:
            params = ts.unflatten(fresh(list(flat_shardings)))
        else:
            directory, allow_missing = pretrained
            target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                  self.abstract_params, self.param_shardings)
            loaded, missing = checkpoints.load_pretrained_params(directory, target, allow_missing)
            logging.info("loaded %d tensors from %s; %d keep their fresh init (allow_missing=%r)",
                         len(loaded), directory, len(missing), allow_missing)
            params = ts.unflatten({**fresh(missing), **loaded} if missing else loaded)
        make = functools.partial(ts.state_from_params, labels=self.labels, tx=self.tx,
                                 keep_ema=self.config.ema.decay > 0)
        return jax.jit(make, out_shardings=self.state_shardings, donate_argnums=0)(params, rng=state_rng)

    def make_step(self, batch_shardings: Mapping[str, NamedSharding]
                  ) -> Callable[[ts.TrainState, dict[str, jax.Array]], tuple[ts.TrainState, dict[str, jax.Array]]]:
        """The jitted train step ``(state, batch) -> (state, metrics)``; the input state is donated."""
        return jax.jit(self._step, in_shardings=(self.state_shardings, dict(batch_shardings)),
                       out_shardings=(self.state_shardings, self.replicated), donate_argnums=0)

    def compile_step(self, batch: Mapping[str, jax.Array]
                     ) -> Callable[[ts.TrainState, dict[str, jax.Array]], tuple[ts.TrainState, dict[str, jax.Array]]]:
        """:meth:`make_step` compiled ahead of time for ``batch`` 's shapes and shardings (no state needed); safe to
        call from another thread."""
        with parallel.activation_rules_context(self.mesh, self.rules):
            step = self.make_step({k: v.sharding for k, v in batch.items()})
            return step.lower(self.abstract_state, batch).compile()

    def _micro_batches(self, batch: Mapping[str, jax.Array]) -> dict[str, jax.Array]:
        """``[B, ...] -> [A, B/A, ...]``: micro-batch ``i`` takes rows ``i::A`` so each one stays spread over all
        batch shards."""
        accum = self.config.grad_accum_steps

        def split(x: jax.Array) -> jax.Array:
            x = x.reshape((x.shape[0] // accum, accum) + x.shape[1:]).swapaxes(0, 1)
            names = (None, "batch") + (None,) * (x.ndim - 2)
            spec = parallel.logical_to_mesh_spec(names, x.shape, self.mesh, self.rules)
            return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

        return {k: split(v) for k, v in batch.items()}

    def _step(self, state: ts.TrainState, batch: dict[str, jax.Array]) -> tuple[ts.TrainState, dict[str, jax.Array]]:
        task, config = self.task, self.config
        rng = jax.random.fold_in(state.rng, state.step)

        def micro_grads(micro, index):
            pre_rng, loss_rng = jax.random.split(jax.random.fold_in(rng, index))
            inputs = task.preprocess(state.params(), micro, pre_rng)
            loss_fn = lambda trainable: task.loss(  # noqa: E731
                ts.merge(trainable, state.frozen), inputs, loss_rng, state.step)
            (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
            return grads, (loss, metrics)

        def accumulate(grad_sum, xs):
            grads, aux = micro_grads(*xs)
            return jax.tree.map(jnp.add, grad_sum, grads), aux

        accum = config.grad_accum_steps
        if accum == 1:  # no loop: XLA (CPU especially) runs a while-loop body markedly slower
            grads, (losses, task_metrics) = micro_grads(batch, 0)
        else:
            zeros = jax.tree.map(jnp.zeros_like, state.trainable)
            grads, (losses, task_metrics) = jax.lax.scan(accumulate, zeros, (self._micro_batches(batch),
                                                                               jnp.arange(accum)))
            grads = jax.tree.map(lambda g: g / accum, grads)
        loss = jnp.mean(losses)
        grad_norm = optax.global_norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        updates, opt_state = self.tx.update(grads, state.opt_state, state.trainable)
        trainable = optax.apply_updates(state.trainable, updates)
        applied = state.step - state.skipped  # optimizer updates so far (what optax's schedule count sees)
        ema = state.ema
        if state.ema:
            ema = ts.ema_update(state.ema, trainable, ts.ema_decay(config.ema.decay, config.ema.warmup, applied))
        keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)  # noqa: E731
        new_state = state.replace(
            step=state.step + 1, trainable=keep(trainable, state.trainable), opt_state=keep(opt_state, state.opt_state),
            ema=keep(ema, state.ema), skipped=state.skipped + (~finite).astype(jnp.int32))

        metrics = {"loss": loss, "grad_norm": grad_norm, "skipped_steps": new_state.skipped,
                   "nonfinite": (~finite).astype(jnp.float32),
                   **{k: jnp.mean(v) for k, v in task_metrics.items()}}
        for label, schedule in self.schedules.items():
            metrics["lr" if len(self.schedules) == 1 else f"lr/{label}"] = schedule(applied)
        return new_state, metrics


def build_trainer(config: ml_collections.ConfigDict, devices: list[jax.Device] | None = None) -> Trainer:
    """Mesh (over ``devices``, default all), task, optimizer and state shardings for ``config``."""
    mesh = parallel.create_mesh(config.mesh, devices)
    rules = parallel.validate_rules(config.sharding_rules)
    shards = parallel.batch_axis_size(mesh, rules)
    micro = config.batch_size // config.grad_accum_steps
    if micro % shards:
        raise ValueError(f"config.batch_size / config.grad_accum_steps = {micro} clips per micro-batch must be a "
                         f"multiple of the {shards} batch shards of config.mesh {dict(mesh.shape)}")
    task = get_task_class(config.task)(config)
    shapes, specs = task.abstract_params()
    param_shardings = parallel.tree_shardings(specs, shapes, mesh, rules)
    labels = task.param_labels(shapes)
    groups = task.optimizer_groups()
    unknown = sorted({label for label in labels.values() if label != ts.FROZEN} - set(groups))
    if unknown:
        raise ValueError(f"task {config.task!r} labels parameters {unknown} but has no optimizer group for them")
    for label, opt in groups.items():
        validate_optimizer(opt, field="optimizer" if opt is config.optimizer else f"optimizer ({label})")
    trainable_labels = ts.unflatten({p: label for p, label in labels.items() if label != ts.FROZEN})
    tx, schedules = optimizers.make_multi_optimizer(groups, trainable_labels, config.total_steps)

    keep_ema = config.ema.decay > 0
    abstract = jax.eval_shape(functools.partial(ts.state_from_params, labels=labels, tx=tx, keep_ema=keep_ema),
                              shapes, rng=jax.ShapeDtypeStruct((2,), jnp.uint32))
    replicated = NamedSharding(mesh, PartitionSpec())
    trainable_sh, frozen_sh = ts.partition(param_shardings, labels)
    state_shardings = ts.TrainState(
        step=replicated, trainable=trainable_sh, frozen=frozen_sh,
        opt_state=optimizers.opt_state_shardings(tx, abstract.opt_state, trainable_sh, replicated),
        ema=trainable_sh if keep_ema else {}, rng=replicated, skipped=replicated)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                            state_shardings)
    return Trainer(config=config, mesh=mesh, rules=rules, task=task, labels=labels, tx=tx, schedules=schedules,
                   abstract_params=shapes, param_shardings=param_shardings, state_shardings=state_shardings,
                   abstract_state=abstract)


class Preempted(Exception):
    """Training stopped at ``step`` on a pre-emption notice (SIGTERM), after the checkpoint of that step was saved."""

    def __init__(self, step: int):
        super().__init__(f"pre-empted at step {step}: its checkpoint is saved; rerun the same command to resume")
        self.step = step


class PreemptionWatcher:
    """Turns SIGTERM (pre-emption notice) into "save now and stop" at an agreed step.

    Multi-process runs use JAX's preemption sync point (every process stops at the same step); a single process
    installs its own SIGTERM handler for the duration of the run.
    """

    def __init__(self):
        self._synced = jax.process_count() > 1
        self._received = False
        self._previous = None if self._synced else signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        logging.warning("SIGTERM received: saving a checkpoint after this step and stopping")
        self._received = True

    def reached(self, step: int) -> bool:
        if self._synced:
            return multihost_utils.reached_preemption_sync_point(step)
        return self._received

    def close(self) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None


def _config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return json.loads(config.to_json())


def _config_changes(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Top-level config fields that differ from the checkpoint's, beyond those a resumed run may change."""
    return sorted(k for k in set(saved) | set(current)
                  if k not in _RESUMABLE_CHANGES and saved.get(k) != current.get(k))


def _mean_metrics(pending: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Mean of each metric over the logging interval (one device->host transfer)."""
    host = jax.device_get(pending)
    out = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
    out["skipped_steps"] = float(host[-1]["skipped_steps"])  # a running count, not a rate
    out["nonfinite"] = float(np.sum([m["nonfinite"] for m in host]))
    return out


def _data_scalars(iterator: Any) -> dict[str, float]:
    """Clips decoded / skipped (unreadable, too short, ...) so far per source, summed over processes.

    The per-reason breakdown is logged by the data pipeline as skips happen.
    """
    stats = iterator.stats()
    local = {f"data/decoded/{name}": n for name, n in stats["decoded"].items()}
    local.update({f"data/skipped/{name}": sum(r.values()) for name, r in stats["skipped"].items()})
    local["data/skipped_total"] = stats["total_skipped"]
    keys = sorted(local)  # the same on every process: one entry per configured source
    values = np.asarray([local[k] for k in keys], np.int64)
    if jax.process_count() > 1:
        values = np.asarray(multihost_utils.process_allgather(values)).reshape(-1, len(keys)).sum(0)
    return {k: float(v) for k, v in zip(keys, values)}


def _write_samples(workdir: str, step: int, videos: np.ndarray, fps: float, writer: metrics_lib.MetricWriter
                   ) -> None:
    """``WORKDIR/samples/step_<step>_<i>.gif`` (encoded locally, then copied: the workdir may be a bucket)."""
    from vidrd_jax import media  # deferred: PyAV is only needed when samples are on

    directory = epath.Path(workdir) / SAMPLES_DIR
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, video in enumerate(videos):
            name = f"step_{step:08d}_{i}.gif"
            media.write_video(os.path.join(tmp, name), video, fps=fps)
            (directory / name).write_bytes(epath.Path(tmp, name).read_bytes())
            writer.write_video_frames(step, f"samples/{i}", video)


def make_data_iterator(config: ml_collections.ConfigDict, shard: parallel.DataShard) -> Iterator[dict[str, Any]]:
    """This process's Grain iterator over its shard of the data (``config.data``)."""
    return data_interface.pipeline().make_iterator(config.data, batch_size=shard.local_batch,
                                                   process_index=shard.index, process_count=shard.count,
                                                   seed=config.seed)


def _check_workdir(workdir: str) -> None:
    if epath.Path(workdir).exists() and not epath.Path(workdir).is_dir():
        raise cli.UsageError(f"--workdir {workdir!r} is a file, not a directory")


def _restore(trainer: Trainer, ckpt: checkpoints.TrainCheckpointer, step: int, iterator: Iterator,
             config_json: dict[str, Any]) -> ts.TrainState:
    """Checkpoint ``step`` onto the trainer's shardings; a checkpoint that does not fit is a :class:`cli.UsageError`
    naming the differing arrays and the config fields changed since it was saved."""
    changed = _config_changes(ckpt.read_config(step), config_json)
    try:
        state, _ = ckpt.restore(step, trainer.abstract_state, iterator)
    except checkpoints.StateMismatchError as e:
        hint = f"config fields changed since: {', '.join(changed)}; " if changed else ""
        raise cli.UsageError(f"cannot resume: {e} ({hint}resume with the checkpoint's config, or start a new "
                             f"--workdir)") from None
    if changed:
        logging.warning("resuming with a config that differs from the checkpoint's in: %s", ", ".join(changed))
    return state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> ts.TrainState:
    """Trains until ``config.total_steps``, resuming from ``workdir`` 's latest checkpoint.

    Raises :class:`Preempted` after saving the checkpoint of the step a SIGTERM stopped it at.
    """
    validate_config(config)
    if config.compilation_cache_dir:
        jax.config.update("jax_compilation_cache_dir", config.compilation_cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    process_index, _ = parallel.initialize_distributed(config.distributed)
    workdir = checkpoints.absolute(workdir)
    _check_workdir(workdir)
    config_json = _config_json(config)
    with contextlib.ExitStack() as stack:
        ckpt = checkpoints.TrainCheckpointer(os.path.join(workdir, checkpoints.TRAIN_CHECKPOINT_DIR),
                                             keep=config.checkpoint.keep, async_save=config.checkpoint.async_save)
        stack.callback(ckpt.close)
        latest = ckpt.latest_step()
        if latest is not None and latest > config.total_steps:
            raise cli.UsageError(f"config.total_steps={config.total_steps} is below step {latest} of the latest "
                                 f"checkpoint in {ckpt.directory!r}: raise total_steps to train on, export that "
                                 f"checkpoint as it is, or start a new --workdir")
        trainer = build_trainer(config)
        task = trainer.task
        iterator = make_data_iterator(config, trainer.data_shard())
        stack.callback(iterator.close)
        watcher = PreemptionWatcher()
        stack.callback(watcher.close)
        with parallel.activation_rules_context(trainer.mesh, trainer.rules):
            first_batch, step_fn = None, None
            if latest is None:
                # The first batch fixes the step's input shapes, so the step compiles in a thread while the state is
                # initialised: both are mostly single-threaded XLA compiles (the UNet stage of the CPU demo starts
                # 8 s sooner).
                first_batch = trainer.global_batch(task.host_batch(next(iterator)))
                pool = concurrent.futures.ThreadPoolExecutor(1)
                try:
                    compiling = pool.submit(trainer.compile_step, first_batch)
                    state = trainer.init_state()
                    step_fn = compiling.result()
                finally:  # an error creating the state (e.g. a checkpoint that does not fit) surfaces at once
                    pool.shutdown(wait=False)
                logging.info("initialised a new run in %s", workdir)
            else:
                state = _restore(trainer, ckpt, latest, iterator, config_json)
                logging.info("resumed from %s at step %d", ckpt.directory, latest)
            # Opened once the state fits: drops the records of steps after the checkpoint (a killed run logged them).
            writer = metrics_lib.MetricWriter(workdir, enabled=process_index == 0, start_step=latest or 0)
            stack.callback(writer.close)
            state, preempted = _train_loop(trainer, state, iterator, ckpt, writer, watcher, workdir, config_json,
                                           first_batch, step_fn)
        ckpt.wait()
        if preempted:
            raise Preempted(int(jax.device_get(state.step)))
    return state


def _train_loop(trainer: Trainer, state: ts.TrainState, iterator: Iterator, ckpt: checkpoints.TrainCheckpointer,
                writer: metrics_lib.MetricWriter, watcher: PreemptionWatcher, workdir: str,
                config_json: dict[str, Any], first_batch: dict[str, jax.Array] | None = None,
                step_fn: Callable | None = None) -> tuple[ts.TrainState, bool]:
    """Steps until ``config.total_steps`` or a pre-emption; returns ``(state, preempted)``. ``first_batch``
    (already read from ``iterator``) and ``step_fn`` (compiled for it) come from a fresh start, otherwise the step is
    compiled for the first batch read here."""
    from tqdm import tqdm  # deferred: only the loop needs it

    config, task = trainer.config, trainer.task
    step = int(jax.device_get(state.step))
    progress = tqdm(total=config.total_steps, initial=step, disable=not (config.progress_bar and
                                                                           jax.process_index() == 0),
                    desc="train", dynamic_ncols=True)
    pending, interval_start, interval_steps, first = [], time.perf_counter(), 0, True
    sample_every = config.sample.every_steps if "sample" in config else 0
    preempted = False
    while step < config.total_steps:
        if first_batch is not None:
            batch, first_batch = first_batch, None
        else:
            batch = trainer.global_batch(task.host_batch(next(iterator)))
        if step_fn is None:
            step_fn = trainer.compile_step(batch)
        state, step_metrics = step_fn(state, batch)
        step += 1
        pending.append(step_metrics)
        interval_steps += 1
        progress.update(1)
        if first:  # exclude compilation from the throughput numbers
            jax.block_until_ready(step_metrics)
            first, interval_start, interval_steps = False, time.perf_counter(), 0
        if step % config.log_every_steps == 0 or step == config.total_steps:
            scalars = _mean_metrics(pending)
            if interval_steps:
                elapsed = time.perf_counter() - interval_start
                scalars.update(steps_per_sec=interval_steps / elapsed,
                               clips_per_sec=interval_steps * config.batch_size / elapsed)
            if scalars["nonfinite"]:
                logging.warning("step %d: %d non-finite step(s) skipped in this interval", step, scalars["nonfinite"])
            scalars.update(_data_scalars(iterator))
            writer.write_scalars(step, scalars)
            writer.flush()
            progress.set_postfix(loss=f"{scalars['loss']:.4f}")
            pending, interval_start, interval_steps = [], time.perf_counter(), 0
        preempted = watcher.reached(step)
        if step % config.checkpoint.every_steps == 0 or step == config.total_steps or preempted:
            ckpt.save(step, state, iterator, config_json)
        if sample_every and (step % sample_every == 0 or step == config.total_steps):
            params = state.params(use_ema=True)
            evaluation = task.evaluate(params)
            if evaluation:
                logging.info("step %d evaluation: %s", step, ", ".join(f"{k}={v:.4f}" for k, v in
                                                                     sorted(evaluation.items())))
                writer.write_scalars(step, {f"eval/{k}": v for k, v in evaluation.items()})
                writer.flush()
            videos = task.sample(params, jax.random.PRNGKey(config.seed + step))
            if videos is not None:
                videos = np.asarray(multihost_utils.process_allgather(videos, tiled=True))
                if jax.process_index() == 0:
                    _write_samples(workdir, step, videos, config.sample.fps, writer)
        if preempted:
            logging.warning("stopping at step %d after the pre-emption checkpoint", step)
            break
    progress.close()
    return state, preempted


_HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")


class _HideOrbaxInfo(std_logging.Filter):
    """Drops Orbax's INFO lines (about 50 per checkpoint save) unless absl's ``--verbosity`` is 1 or more."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return (record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname
                or logging.get_verbosity() >= 1)


_HIDE_ORBAX_INFO = _HideOrbaxInfo()


def _define_flags(argv: Sequence[str]) -> Any:
    """A fresh absl ``FlagValues`` with ``--config`` (+ its ``--config.a.b=v`` overrides) and ``--workdir``; absl's
    own flags (``--verbosity`` …) stay in ``absl.flags.FLAGS``. Fresh, so :func:`main` can run many times."""
    from absl import flags
    from ml_collections import config_flags

    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "Config file, configs/*.py[:arg]; override fields with "
                                    "--config.a.b=v.", flag_values=fv, lock_config=True, sys_argv=list(argv))
    flags.DEFINE_string("workdir", None, "Directory (or gs:// URL) for checkpoints, metrics and samples.",
                        flag_values=fv)
    return fv


def _last_line(error: BaseException) -> str:
    """The last line of an error's message (config-file errors carry a whole traceback or attempt list)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def parse_args(argv: Sequence[str]) -> tuple[ml_collections.ConfigDict, str]:
    """``(config, workdir)`` from ``argv`` (absl's flags, e.g. ``--verbosity``, are parsed into ``FLAGS``); raises
    :class:`cli.UsageError` naming the flag, config field or config file at fault."""
    from absl import flags

    fv = _define_flags(argv)
    try:
        rest = fv(list(argv), known_only=True)
    except (KeyError, AttributeError) as e:  # --config.a.b=v naming a field the config does not have
        key = e
        while isinstance(key, BaseException) and key.args:
            key = key.args[0]
        key = str(key).strip("'\"")
        named = [a.split("=", 1)[0] for a in argv if a.startswith("--config.") and
                 a.split("=", 1)[0].rsplit(".", 1)[-1] == key]
        raise cli.UsageError(f"{named[0] if named else '--config.' + key}: the config has no field {key!r} (it is "
                             f"locked: check the spelling)") from None
    except OSError as e:  # an override of a config file that failed to load
        raise cli.UsageError(f"--config: {_last_line(e)}") from None
    except flags.Error as e:  # a bad flag value; an error raised by get_config() ends its traceback
        first = str(e).splitlines()[0].rstrip(":")
        last = _last_line(e)
        raise cli.UsageError(first if first == last else f"{first}: {last}") from None
    if fv.config is None:
        raise cli.UsageError("--config is required: a config file, configs/*.py[:arg]")
    if not fv.workdir:
        raise cli.UsageError("--workdir is required: the run's directory (checkpoints, metrics, samples)")
    if not isinstance(fv.config, ml_collections.ConfigDict):
        try:
            fv.config.lock()  # a config file that failed to load raises its error on first use
        except OSError as e:
            raise cli.UsageError(f"--config: {_last_line(e)}") from None
        raise cli.UsageError(f"--config: get_config() must return an ml_collections.ConfigDict, got "
                             f"{type(fv.config).__name__}")
    try:
        rest = flags.FLAGS(rest)
    except flags.Error as e:
        raise cli.UsageError(str(e)) from None
    if len(rest) > 1:
        raise cli.UsageError(f"unexpected arguments {rest[1:]}")
    return fv.config, fv.workdir


def setup_logging() -> None:
    """What ``absl.app.run`` does for logging (absl's handler, INFO unless ``--verbosity`` says otherwise), minus
    Orbax's per-save INFO lines."""
    from absl import flags

    if flags.FLAGS["verbosity"].using_default_value:
        flags.FLAGS.verbosity = 0
    logging.use_absl_handler()
    logging.get_absl_logger().addFilter(_HIDE_ORBAX_INFO)


def _run(argv: Sequence[str]) -> int:
    config, workdir = parse_args(argv)
    if "stages" in config:
        raise cli.UsageError(f"--config is a staged config (it has 'stages'): run it with "
                             f"python -m vidrd_jax.recipes {' '.join(argv[1:])}")
    setup_logging()
    try:
        train_and_evaluate(config, workdir)
    except Preempted as e:
        logging.warning("%s (exit status %d)", e, EXIT_PREEMPTED)
        return EXIT_PREEMPTED
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the trainer on ``argv`` (``argv[0]`` is the program name; default ``sys.argv``); returns the exit status
    (module docstring)."""
    import data_pipelines  # noqa: F401  (the entry point wires the data in: vidrd_jax.data_interface)

    argv = list(sys.argv if argv is None else argv)
    if any(a in _HELP_FLAGS for a in argv[1:]):
        from absl import flags

        print(__doc__)
        print(_define_flags(argv).get_help())
        print(flags.FLAGS.get_help() if "--helpfull" in argv else "absl's flags (--verbosity, ...): --helpfull")
        return 0
    return cli.run_cli(_run, argv)


if __name__ == "__main__":
    sys.exit(main())
