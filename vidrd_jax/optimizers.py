"""The optimizer: AdamW with warm-up and a decay schedule, one per parameter group, and its state's shardings.

Each group (``Task.optimizer_groups``: ``{"unet": cfg}``, or ``{"generator": …, "discriminator": …}``) gets its own
fields of ``config.optimizer`` (``train_config.validate_optimizer``).
"""
from __future__ import annotations

from typing import Any, Mapping

import jax
import optax

Params = dict[str, Any]
SCHEDULES = ("constant", "cosine", "linear")


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


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt_state: Any, param_shardings: Any,
                        replicated: Any) -> Any:
    """Sharding tree for an optimizer state: parameter-shaped parts follow the parameters; the rest is replicated.

    Parameters outside a label's group appear as ``optax.MaskedNode`` (no state) in ``multi_transform`` states.
    """
    masked = lambda x: isinstance(x, optax.MaskedNode)  # noqa: E731
    return optax.tree_map_params(tx, lambda leaf, sharding: leaf if masked(leaf) else sharding, abstract_opt_state,
                                 param_shardings, transform_non_params=lambda _: replicated, is_leaf=masked)
