"""Device mesh, logical-axis sharding rules and multi-process helpers."""
from vidrd_jax.parallel.mesh import MESH_AXES, create_mesh, resolve_mesh_shape
from vidrd_jax.parallel.multihost import DataShard, data_shard, host_to_global, initialize_distributed
from vidrd_jax.parallel.rules import (DEFAULT_RULES, activation_rules_context, batch_axis_size, batch_sharding,
                                      logical_to_mesh_spec, tree_shardings, validate_rules)

__all__ = [
    "MESH_AXES", "create_mesh", "resolve_mesh_shape", "DataShard", "data_shard", "host_to_global",
    "initialize_distributed", "DEFAULT_RULES", "activation_rules_context", "batch_axis_size", "batch_sharding",
    "logical_to_mesh_spec", "tree_shardings", "validate_rules",
]
