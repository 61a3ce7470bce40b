"""Train state, parameter partitioning (trainable vs frozen) and the EMA (the optimizer: :mod:`vidrd_jax.optimizers`).

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


def ema_decay(decay: float, warmup: bool, step: jax.Array) -> jax.Array:
    """EMA decay at ``step``; with ``warmup`` it ramps as ``min(decay, (1 + step) / (10 + step))``."""
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    step = step.astype(jnp.float32)
    return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def ema_update(ema: Params, params: Params, decay: jax.Array) -> Params:
    """``ema <- decay * ema + (1 - decay) * params`` (float32)."""
    return jax.tree.map(lambda e, p: (decay * e + (1.0 - decay) * p.astype(jnp.float32)).astype(e.dtype), ema, params)


def state_from_params(params: Params, labels: Mapping[str, str], tx: optax.GradientTransformation, rng: jax.Array,
                      keep_ema: bool) -> TrainState:
    """A step-0 :class:`TrainState` (run under ``jax.jit`` with ``out_shardings`` to create it sharded)."""
    trainable, frozen = partition(params, labels)
    return TrainState(
        step=jnp.zeros((), jnp.int32), trainable=trainable, frozen=frozen, opt_state=tx.init(trainable),
        ema=jax.tree.map(jnp.copy, trainable) if keep_ema else {}, rng=rng, skipped=jnp.zeros((), jnp.int32))
