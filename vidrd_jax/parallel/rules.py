"""Logical axis names -> mesh axes (MaxText-style rules) -> ``NamedSharding`` trees.

Model code names the dimensions of its parameters and activations (``("embed", "mlp")``, ``("batch", "frames",
"height", "width", "embed")``, see the common brief); the config maps those names onto the mesh axes
``data``/``fsdp``/``tensor`` with an ordered list of rules ``(logical_name, mesh_axes)`` where ``mesh_axes`` is a mesh
axis name, a tuple of them, or ``None`` (replicated).

Resolution of one parameter (:func:`logical_to_mesh_spec`), following Flax's priority semantics:

1. Rules are visited in order; a rule applies to the dimension carrying its logical name if that dimension is still
   unassigned and none of the rule's mesh axes is already used by another dimension of the same array.
2. Mesh axes of size 1 are left out (they shard nothing).
3. **Divisibility**: a mesh axis is dropped from a dimension when the dimension's size is not divisible by the product
   of the axes kept so far times that axis (e.g. the 4 input channels of ``conv_in`` on ``fsdp=8`` are replicated;
   a kernel dim of 1280 on ``("data", "fsdp") = (3, 8)`` keeps only ``fsdp``). The array is then simply less
   sharded, never an error. If every axis of a rule is dropped, later rules for the same name may still apply.
4. Dimensions that no rule assigns are replicated.

Activations use Flax's own resolution (``nn.with_logical_constraint`` inside :func:`activation_rules_context`); put
``batch`` first in the rules so activations' ``embed`` does not take the ``fsdp`` axis that the batch uses.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vidrd_jax.parallel.mesh import MESH_AXES

Rule = tuple[str, "str | tuple[str, ...] | None"]

DEFAULT_RULES: tuple[Rule, ...] = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("conv_in", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("conv_out", "tensor"),
    ("vocab", "tensor"),
    ("norm", None),
    ("frames", None),
    ("height", None),
    ("width", None),
    ("length", None),
    ("conv_t", None),
    ("conv_h", None),
    ("conv_w", None),
)


def _axes_tuple(mesh_axes: Any) -> tuple[str, ...]:
    if mesh_axes is None:
        return ()
    if isinstance(mesh_axes, str):
        return (mesh_axes,)
    return tuple(mesh_axes)


def validate_rules(rules: Sequence[Any], field: str = "sharding_rules") -> tuple[Rule, ...]:
    """Checks that ``rules`` is a sequence of ``(logical_name, mesh_axes)`` over known mesh axes; returns a tuple."""
    out = []
    for i, rule in enumerate(rules):
        if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
            raise ValueError(f"config.{field}[{i}]: expected (logical_name, mesh_axes), got {rule!r}")
        axes = _axes_tuple(rule[1])
        unknown = [a for a in axes if a not in MESH_AXES]
        if unknown:
            raise ValueError(f"config.{field}[{i}] ({rule[0]!r}): unknown mesh axes {unknown}; allowed {MESH_AXES}")
        out.append((rule[0], None if not axes else (axes[0] if len(axes) == 1 else axes)))
    return tuple(out)


def logical_to_mesh_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                         rules: Sequence[Rule]) -> PartitionSpec:
    """Resolves one array's logical axis names to a ``PartitionSpec`` (see the module docstring)."""
    if len(logical_axes) != len(shape):
        raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {tuple(shape)}")
    result: list[Any] = [None] * len(shape)
    assigned = [name is None for name in logical_axes]
    used: set[str] = set()
    for name, mesh_axes in rules:
        if name not in logical_axes:
            continue
        pos = list(logical_axes).index(name)
        if assigned[pos]:
            continue
        axes = _axes_tuple(mesh_axes)
        if not axes:
            assigned[pos] = True
            continue
        if any(a in used for a in axes):
            continue
        kept: list[str] = []
        for axis in axes:
            size = mesh.shape[axis]
            if size > 1 and shape[pos] % (math.prod(mesh.shape[a] for a in kept) * size) == 0:
                kept.append(axis)
        if kept:
            assigned[pos] = True
            used.update(kept)
            result[pos] = kept[0] if len(kept) == 1 else tuple(kept)
    return PartitionSpec(*result)


def tree_shardings(specs: Any, shapes: Any, mesh: Mesh, rules: Sequence[Rule]) -> Any:
    """``NamedSharding`` tree for parameters with logical ``specs`` (``PartitionSpec`` of logical names, e.g. from
    ``nn.get_partition_spec(jax.eval_shape(init))``) and ``shapes`` (same structure; anything with ``.shape``).

    Leaves whose spec is ``None`` or empty (unannotated) are replicated.
    """
    def one(spec: PartitionSpec | None, x: Any) -> NamedSharding:
        names = tuple(spec) if spec else (None,) * len(x.shape)
        return NamedSharding(mesh, logical_to_mesh_spec(names, x.shape, mesh, rules))

    return jax.tree.map(one, specs, shapes, is_leaf=lambda x: x is None or isinstance(x, PartitionSpec))


def batch_sharding(mesh: Mesh, rules: Sequence[Rule], shape: Sequence[int]) -> NamedSharding:
    """Sharding of a batch array: leading dim ``batch``, the others replicated."""
    return NamedSharding(mesh, logical_to_mesh_spec(("batch",) + (None,) * (len(shape) - 1), shape, mesh, rules))


def batch_axis_size(mesh: Mesh, rules: Sequence[Rule]) -> int:
    """Number of batch shards (product of the mesh axes the ``batch`` rule names)."""
    for name, mesh_axes in rules:
        if name == "batch":
            return math.prod(mesh.shape[a] for a in _axes_tuple(mesh_axes))
    return 1


@contextlib.contextmanager
def activation_rules_context(mesh: Mesh, rules: Sequence[Rule]) -> Iterator[None]:
    """Mesh + logical rules in scope while tracing, so the models' ``nn.with_logical_constraint`` takes effect."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(tuple(rules)):
        yield
