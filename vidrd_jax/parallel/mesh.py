"""Device mesh from config: named axes ``data`` (pure data parallel), ``fsdp`` (data parallel with parameters and
optimizer state sharded over it, ZeRO-3 style) and ``tensor`` (model parallel inside layers).

The config gives one size per axis; one axis may be ``-1`` and takes whatever devices are left
(``{"data": -1, "fsdp": 4, "tensor": 1}`` on 32 devices is an 8 x 4 x 1 mesh).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "tensor")


def resolve_mesh_shape(axes: Mapping[str, int], num_devices: int, field: str = "mesh") -> dict[str, int]:
    """Validates the axis sizes in ``axes`` (config field ``field``) and fills a single ``-1`` entry."""
    unknown = sorted(set(axes) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"config.{field}: unknown mesh axes {unknown}; allowed: {list(MESH_AXES)}")
    sizes = {name: int(axes.get(name, 1)) for name in MESH_AXES}
    auto = [name for name, size in sizes.items() if size == -1]
    bad = [f"{name}={size}" for name, size in sizes.items() if size == 0 or size < -1]
    if bad:
        raise ValueError(f"config.{field}: axis sizes must be positive or -1, got {', '.join(bad)}")
    if len(auto) > 1:
        raise ValueError(f"config.{field}: at most one axis may be -1, got {auto}")
    fixed = math.prod(size for size in sizes.values() if size != -1)
    if auto:
        if num_devices % fixed:
            raise ValueError(f"config.{field}: {num_devices} devices are not divisible by the fixed axes "
                             f"{ {k: v for k, v in sizes.items() if v != -1} } (product {fixed})")
        sizes[auto[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"config.{field}: mesh {sizes} has {fixed} devices but {num_devices} are available; "
                         "set one axis to -1 to fill")
    return sizes


def create_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ``Mesh`` with axes ``("data", "fsdp", "tensor")`` over ``devices`` (default: all global devices).

    Uses ``mesh_utils.create_device_mesh`` so that, on TPU, the fastest (innermost) axes map to physical torus links;
    on multi-process CPU/GPU it keeps each process's devices contiguous, which is what
    ``jax.make_array_from_process_local_data`` needs for the batch axis.
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = resolve_mesh_shape(axes, len(devices))
    shape = tuple(sizes[name] for name in MESH_AXES)
    try:
        device_array = mesh_utils.create_device_mesh(shape, devices=devices, allow_split_physical_axes=True)
    except (ValueError, NotImplementedError, AssertionError):
        # Device kinds without a known topology (or sub-sets of them): keep the given order.
        device_array = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(device_array, MESH_AXES)
