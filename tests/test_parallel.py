"""Mesh construction, logical-axis rules and host -> global batches on the 8 fake CPU devices (no models)."""
import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from vidrd_jax import parallel


def test_mesh_fills_the_auto_axis_and_names_the_field_on_errors():
    assert parallel.resolve_mesh_shape({"data": -1, "fsdp": 4}, 8) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert parallel.resolve_mesh_shape({"data": 1, "fsdp": -1, "tensor": 2}, 8) == {"data": 1, "fsdp": 4, "tensor": 2}
    mesh = parallel.create_mesh({"data": 2, "fsdp": -1, "tensor": 1})
    assert mesh.axis_names == ("data", "fsdp", "tensor") and dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))
    for axes, match in [({"data": -1, "fsdp": -1}, "at most one"), ({"data": 3, "fsdp": -1}, "not divisible"),
                        ({"data": 2, "fsdp": 2}, "4 devices but 8"), ({"data": 0}, "positive or -1"),
                        ({"pipeline": 2}, "unknown mesh axes")]:
        with pytest.raises(ValueError, match=match) as error:
            parallel.resolve_mesh_shape(axes, 8)
        assert str(error.value).startswith("config.mesh: ")


def test_rules_shard_follow_priority_and_drop_indivisible_axes():
    mesh = parallel.create_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    rules = parallel.DEFAULT_RULES
    spec = parallel.logical_to_mesh_spec
    # Up-projection: embed on fsdp, mlp on tensor (size 1 -> left out).
    assert spec(("embed", "mlp"), (64, 256), mesh, rules) == P("fsdp", None)
    # Divisibility: 4 input channels split over fsdp=4, 6 cannot and stay replicated.
    assert spec(("conv_h", "conv_w", "conv_in", "conv_out"), (3, 3, 4, 32), mesh, rules) == P(None, None, "fsdp", None)
    assert spec(("conv_h", "conv_w", "conv_in", "conv_out"), (3, 3, 6, 32), mesh, rules) == P(None, None, None, None)
    # The batch takes data and fsdp; a following "embed" dim cannot reuse fsdp.
    assert spec(("batch", "length", "embed"), (8, 77, 64), mesh, rules) == P(("data", "fsdp"), None, None)
    # Partial divisibility: batch 2 keeps data (2) but not data*fsdp (8).
    assert spec(("batch", None), (2, 5), mesh, rules) == P("data", None)
    # A later rule for the same name applies when the first one's axes are all dropped.
    fallback = rules + (("embed", "data"),)
    assert spec(("embed",), (6,), mesh, fallback) == P("data")
    assert spec(("norm",), (64,), mesh, rules) == P(None)
    with pytest.raises(ValueError, match=r"config.sharding_rules\[1\].*unknown mesh axes"):
        parallel.validate_rules([("batch", "data"), ("embed", "model")])


def test_tree_shardings_replicate_unannotated_leaves():
    mesh = parallel.create_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    specs = {"dense": {"kernel": P("embed", "mlp"), "bias": P("mlp")}, "plain": P(), "none": None}
    shapes = {"dense": {"kernel": jax.ShapeDtypeStruct((32, 16), np.float32),
                        "bias": jax.ShapeDtypeStruct((16,), np.float32)},
              "plain": jax.ShapeDtypeStruct((5,), np.float32), "none": jax.ShapeDtypeStruct((3, 3), np.float32)}
    out = parallel.tree_shardings(specs, shapes, mesh, parallel.DEFAULT_RULES)
    assert out["dense"]["kernel"] == NamedSharding(mesh, P("fsdp", None))
    assert out["dense"]["bias"].spec == P(None)
    assert out["plain"].spec == P(None) and out["none"].spec == P(None, None)


def test_host_batches_become_global_arrays_split_over_the_batch_axes():
    mesh = parallel.create_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = parallel.DEFAULT_RULES
    assert parallel.batch_axis_size(mesh, rules) == 4
    sharding = parallel.batch_sharding(mesh, rules, (8, 3))
    shard = parallel.data_shard(sharding, 8)
    # One process holds every row here; with N processes each would read shard `index` of `count`.
    assert (shard.index, shard.count, shard.local_batch, shard.start) == (0, 1, 8, 0)
    host = {"x": np.arange(24, dtype=np.float32).reshape(8, 3)}
    out = parallel.host_to_global(host, {"x": sharding}, 8)
    assert out["x"].sharding == sharding and out["x"].shape == (8, 3)
    np.testing.assert_array_equal(np.asarray(out["x"]), host["x"])
    # Each device holds 2 rows; the tensor axis replicates them.
    rows = {s.device.id: np.asarray(s.data)[:, 0].tolist() for s in out["x"].addressable_shards}
    assert all(len(r) == 2 for r in rows.values())
    assert sorted(map(tuple, {tuple(r) for r in rows.values()})) == [(0, 3), (6, 9), (12, 15), (18, 21)]


def test_distributed_stays_single_process_without_a_cluster():
    dist = {"mode": "auto", "coordinator_address": "", "num_processes": -1, "process_id": -1,
            "cpu_collectives": "", "initialization_timeout": 10}
    assert parallel.initialize_distributed(dist) == (0, 1)
    with pytest.raises(ValueError, match="config.distributed.mode"):
        parallel.initialize_distributed({**dist, "mode": "maybe"})
