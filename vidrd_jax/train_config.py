"""The trainer's config schema: defaults (:func:`base_config`) and start-up validation (:func:`validate_config`).

Config files (``configs/*.py``) start from ``base_config(task)`` and override fields; the config is then locked, so a
misspelt ``--config.a.b=v`` override is an error. Fields:

* ``task`` (str), ``seed`` (int), ``total_steps``, ``batch_size`` (global clips per optimizer step),
  ``grad_accum_steps`` (micro-batches per step, ``lax.scan``), ``log_every_steps``, ``progress_bar``,
  ``compilation_cache_dir`` (JAX persistent compilation cache, "" = off).
* ``mesh``: ``{data, fsdp, tensor}`` sizes, one may be -1; ``sharding_rules``: logical -> mesh axes
  (``vidrd_jax.parallel.rules``); ``distributed``: ``vidrd_jax.parallel.multihost.initialize_distributed``.
* ``optimizer``: AdamW + schedule (``optimizers.make_optimizer``); ``ema``: ``decay`` (0 = no EMA), ``warmup``.
* ``checkpoint``: ``every_steps``, ``keep``, ``async_save``.
* ``data``: the registered data pipeline's config (``data_pipelines.config.get_default_config()``; see
  :mod:`vidrd_jax.data_interface`).
* the task's fields (``Task.config_defaults``), e.g. ``model``, ``trainable_regex``, ``sample`` for ``denoising``.
"""
from __future__ import annotations

import ml_collections

from vidrd_jax import data_interface, parallel
from vidrd_jax.optimizers import SCHEDULES
from vidrd_jax.tasks import get_task_class


def base_config(task: str = "denoising") -> ml_collections.ConfigDict:
    """Defaults for every trainer field plus ``task`` 's fields (unlocked; config files lock nothing themselves)."""
    c = ml_collections.ConfigDict()
    c.task = task
    c.seed = 0
    c.total_steps = 10_000
    c.batch_size = 8
    c.grad_accum_steps = 1
    c.log_every_steps = 50
    c.progress_bar = True
    c.compilation_cache_dir = ""  # persistent XLA cache: restarts (pre-emption) skip compilation; "" = off
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    c.sharding_rules = parallel.DEFAULT_RULES
    c.distributed = ml_collections.ConfigDict(dict(
        mode="auto", coordinator_address="", num_processes=-1, process_id=-1, cpu_collectives="",
        initialization_timeout=300))
    c.optimizer = ml_collections.ConfigDict(dict(
        learning_rate=1e-4, schedule="cosine", warmup_steps=500, end_lr_factor=0.0, b1=0.9, b2=0.999, eps=1e-8,
        weight_decay=1e-2, max_grad_norm=1.0))
    c.ema = ml_collections.ConfigDict(dict(decay=0.9999, warmup=True))
    c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3, async_save=True))
    c.data = data_interface.pipeline().default_config()
    for key, value in get_task_class(task).config_defaults().items():
        c[key] = value
    return c


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ValueError(f"config.{field}: {message}")


def validate_optimizer(opt: ml_collections.ConfigDict, field: str = "optimizer") -> None:
    """Checks one optimizer config (``config.optimizer`` or a task's per-group copy)."""
    _check(opt.learning_rate > 0, f"{field}.learning_rate", f"must be > 0, got {opt.learning_rate}")
    _check(opt.schedule in SCHEDULES, f"{field}.schedule", f"must be one of {SCHEDULES}, got {opt.schedule!r}")
    _check(opt.warmup_steps >= 0, f"{field}.warmup_steps", f"must be >= 0, got {opt.warmup_steps}")
    _check(0 <= opt.end_lr_factor <= 1, f"{field}.end_lr_factor", f"must be in [0, 1], got {opt.end_lr_factor}")
    for name in ("b1", "b2"):
        _check(0 <= opt[name] < 1, f"{field}.{name}", f"must be in [0, 1), got {opt[name]}")
    _check(opt.eps > 0, f"{field}.eps", f"must be > 0, got {opt.eps}")
    _check(opt.weight_decay >= 0, f"{field}.weight_decay", f"must be >= 0, got {opt.weight_decay}")
    _check(opt.max_grad_norm >= 0, f"{field}.max_grad_norm", f"must be >= 0 (0 = no clipping), got {opt.max_grad_norm}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Start-up checks; every error names the config field. Mesh-dependent checks run in ``train.build_trainer``."""
    for name in ("total_steps", "batch_size", "grad_accum_steps", "log_every_steps"):
        value = config[name]
        _check(isinstance(value, int) and value > 0, name, f"must be a positive int, got {value!r}")
    _check(config.batch_size % config.grad_accum_steps == 0, "grad_accum_steps",
           f"must divide batch_size={config.batch_size}, got {config.grad_accum_steps}")
    parallel.validate_rules(config.sharding_rules)
    validate_optimizer(config.optimizer)
    _check(0 <= config.ema.decay < 1, "ema.decay", f"must be in [0, 1) (0 = no EMA), got {config.ema.decay}")
    _check(config.checkpoint.every_steps > 0, "checkpoint.every_steps",
           f"must be > 0, got {config.checkpoint.every_steps}")
    _check(config.checkpoint.keep > 0, "checkpoint.keep", f"must be > 0, got {config.checkpoint.keep}")
    try:
        data_interface.pipeline().validate_config(config.data)
    except ValueError as e:  # its messages start with the field name
        raise ValueError(f"config.data.{e}") from e
    get_task_class(config.task).validate_config(config)
