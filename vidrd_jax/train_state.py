"""Train state, parameter partitioning (trainable vs frozen), the optimizer and the EMA.

Parameters are split once, by label (``Task.param_labels``), into two nested dicts with the original paths:
``trainable`` (fp32 master weights, the only leaves with gradients, optimizer state and EMA) and ``frozen`` (never
differentiated, never updated: they pass through every step unchanged, bit for bit). ``merge`` puts them back together
for ``apply``.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

import flax
import jax
import jax.numpy as jnp
import optax

Params = dict[str, Any]
FROZEN = "frozen"
SCHEDULES = ("constant", "cosine", "linear")


@flax.struct.dataclass
class TrainState:
    """Everything a step reads and writes; a pytree saved whole in checkpoints.

    ``rng`` is the run's base key (each step uses ``fold_in(rng, step)``, so a resumed run draws the same noise);
    ``skipped`` counts steps whose update was dropped by the non-finite guard.
    """
    step: jax.Array
    trainable: Params
    frozen: Params
    opt_state: optax.OptState
    ema: Params
    rng: jax.Array
    skipped: jax.Array

    def params(self, use_ema: bool = False) -> Params:
        """The full parameter tree (EMA weights for the trainable part when ``use_ema`` and an EMA is kept)."""
        return merge(self.ema if use_ema and self.ema else self.trainable, self.frozen)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": x}}`` -> ``{"a/b": x}``."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def unflatten(flat: Mapping[str, Any]) -> Params:
    """Inverse of :func:`flatten`."""
    out: Params = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return out


def regex_labels(params: Mapping[str, Any], patterns: Mapping[str, str]) -> dict[str, str]:
    """Labels every leaf path with the first label whose regex ``re.search`` es the path, else :data:`FROZEN`."""
    compiled = [(label, re.compile(pattern)) for label, pattern in patterns.items()]
    labels = {}
    for path in flatten(params):
        labels[path] = next((label for label, rx in compiled if rx.search(path)), FROZEN)
    return labels


def partition(params: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[Params, Params]:
    """Splits ``params`` into ``(trainable, frozen)`` nested dicts using flat-path ``labels``."""
    flat = flatten(params)
    trainable = {p: v for p, v in flat.items() if labels[p] != FROZEN}
    frozen = {p: v for p, v in flat.items() if labels[p] == FROZEN}
    return unflatten(trainable), unflatten(frozen)


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> Params:
    """Deep union of two nested dicts with disjoint leaves."""
    flat = flatten(a)
    overlap = flat.keys() & flatten(b).keys()
    if overlap:
        raise ValueError(f"merge: {len(overlap)} paths in both trees, e.g. {sorted(overlap)[0]}")
    flat.update(flatten(b))
    return unflatten(flat)


def make_schedule(opt: Mapping[str, Any], total_steps: int) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``, then ``schedule`` until ``total_steps``
    (cosine/linear decay to ``end_lr_factor * learning_rate``, or constant)."""
    lr, warmup = opt["learning_rate"], opt["warmup_steps"]
    decay_steps = max(total_steps - warmup, 1)
    end = lr * opt["end_lr_factor"]
    if opt["schedule"] == "constant":
        after = optax.constant_schedule(lr)
    elif opt["schedule"] == "cosine":
        after = optax.cosine_decay_schedule(lr, decay_steps, alpha=opt["end_lr_factor"])
    elif opt["schedule"] == "linear":
        after = optax.linear_schedule(lr, end, decay_steps)
    else:
        raise ValueError(f"config.optimizer.schedule must be one of {SCHEDULES}, got {opt['schedule']!r}")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def _decay_mask(params: Params) -> Any:
    """Weight decay on matrices/kernels only (not on biases, norm scales or other vectors)."""
    return jax.tree.map(lambda x: x.ndim >= 2, params)


def make_optimizer(opt: Mapping[str, Any], total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """``clip_by_global_norm`` (if ``max_grad_norm > 0``) then AdamW with :func:`make_schedule`."""
    schedule = make_schedule(opt, total_steps)
    adamw = optax.adamw(schedule, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"],
                        weight_decay=opt["weight_decay"], mask=_decay_mask)
    if opt["max_grad_norm"] > 0:
        return optax.chain(optax.clip_by_global_norm(opt["max_grad_norm"]), adamw), schedule
    return adamw, schedule


def make_multi_optimizer(groups: Mapping[str, Mapping[str, Any]], trainable_labels: Params, total_steps: int
                         ) -> tuple[optax.GradientTransformation, dict[str, optax.Schedule]]:
    """One :func:`make_optimizer` per label (e.g. ``{"unet": cfg}`` or ``{"generator": …, "discriminator": …}``),
    combined with ``optax.multi_transform`` over the trainable tree's labels."""
    built = {label: make_optimizer(cfg, total_steps) for label, cfg in groups.items()}
    schedules = {label: schedule for label, (_, schedule) in built.items()}
    if len(built) == 1:
        return next(iter(built.values()))[0], schedules
    return optax.multi_transform({label: tx for label, (tx, _) in built.items()}, trainable_labels), schedules


def ema_decay(decay: float, warmup: bool, step: jax.Array) -> jax.Array:
    """EMA decay at ``step``; with ``warmup`` it ramps as ``min(decay, (1 + step) / (10 + step))``."""
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Params, params: Params, decay: jax.Array) -> Params:
    """``ema <- decay * ema + (1 - decay) * params`` (float32)."""
    return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p.astype(jnp.float32)).astype(e.dtype), ema, params)


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt_state: Any, param_shardings: Any,
                        replicated: Any) -> Any:
    """Sharding tree for an optimizer state: parameter-shaped parts follow the parameters; the rest is replicated.

    Parameters outside a label's group appear as ``optax.MaskedNode`` (no state) in ``multi_transform`` states.
    """
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    return optax.tree_map_params(tx, lambda leaf, sharding: leaf if masked(leaf) else sharding, abstract_opt_state,
                                 param_shardings, transform_non_params=lambda _: replicated, is_leaf=masked)


def state_from_params(params: Params, labels: Mapping[str, str], tx: optax.GradientTransformation, rng: jax.Array,
                      keep_ema: bool) -> TrainState:
    """A step-0 :class:`TrainState` (run under ``jax.jit`` with ``out_shardings`` to create it sharded)."""
    trainable, frozen = partition(params, labels)
    return TrainState(
        step=jnp.zeros((), jnp.int32), trainable=trainable, frozen=frozen, opt_state=tx.init(trainable),
        ema=jax.tree.map(jnp.copy, trainable) if keep_ema else {}, rng=rng, skipped=jnp.zeros((), jnp.int32))
