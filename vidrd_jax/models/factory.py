"""Builds the three models from their configs and creates (or shapes) their parameters.

One place knows each model's init inputs, so converters, trainers and the generator share it::

    unet = build("unet", UNet3DConfig.tiny())
    params = init_params("unet", cfg, jax.random.key(0))      # real arrays, unboxed
    shapes = abstract_params("unet", cfg)                       # ShapeDtypeStructs, no allocation
    specs = logical_specs("unet", cfg)                          # PartitionSpecs of logical axis names
"""
from __future__ import annotations

import functools
from typing import Any, Literal

import flax.linen as nn
import jax
import jax.numpy as jnp

from vidrd_jax.models.text_encoder import CLIPTextConfig, CLIPTextModel
from vidrd_jax.models.unet3d import UNet3D, UNet3DConfig
from vidrd_jax.models.vae import AutoencoderKL, VAEConfig

Kind = Literal["unet", "vae", "text_encoder"]
CONFIG_CLASSES = {"unet": UNet3DConfig, "vae": VAEConfig, "text_encoder": CLIPTextConfig}
_MODEL_CLASSES = {"unet": UNet3D, "vae": AutoencoderKL, "text_encoder": CLIPTextModel}


def config_from_dict(kind: Kind, config: dict[str, Any]):
    return CONFIG_CLASSES[kind].from_dict(config)


def downsampling_factor(config: VAEConfig | UNet3DConfig) -> int:
    """Input positions per output position along height and width of a VAE encoder (pixels per latent) or a UNet
    (latents per lowest-resolution position): every level but the last halves the size."""
    return 2 ** (len(config.block_out_channels) - 1)


def build(kind: Kind, config) -> nn.Module:
    return _MODEL_CLASSES[kind](config)


def init_fn(kind: Kind, config):
    """A traceable ``rng -> variables`` function (use it inside your own ``jit``, e.g. with ``out_shardings``)."""
    model = build(kind, config)
    if kind == "unet":
        cin = config.in_channels
        # Parameter shapes do not depend on the input size: the smallest valid input is enough.
        size = downsampling_factor(config)
        sample = jnp.zeros((1, 2, size, size, cin), jnp.float32)
        text = jnp.zeros((1, 1, config.cross_attention_dim), jnp.float32)
        return lambda rng: model.init(rng, sample, jnp.zeros((1,), jnp.int32), text)
    if kind == "vae":
        size = downsampling_factor(config)
        pixels = jnp.zeros((2, size, size, config.in_channels), jnp.float32)
        return lambda rng: model.init(rng, pixels, num_frames=2)
    ids = jnp.zeros((1, config.max_position_embeddings), jnp.int32)
    return lambda rng: model.init(rng, ids)


@functools.lru_cache(maxsize=16)
def _jitted_init(kind: Kind, config):
    # Init runs the forward once on a minimal input; unoptimised code generation halves its compile time on CPU
    # and costs nothing that matters at run time.
    return jax.jit(init_fn(kind, config), compiler_options={"xla_backend_optimization_level": 0})


def init_params(kind: Kind, config, rng: jax.Array) -> dict[str, Any]:
    """Freshly initialised parameters (unboxed); compiled once per (kind, config)."""
    return nn.meta.unbox(_jitted_init(kind, config)(rng)["params"])


def abstract_params(kind: Kind, config) -> dict[str, Any]:
    """Parameter shapes and dtypes (``jax.ShapeDtypeStruct`` leaves) without allocating anything."""
    return nn.meta.unbox(jax.eval_shape(init_fn(kind, config), jax.random.key(0))["params"])


def logical_specs(kind: Kind, config) -> dict[str, Any]:
    """``PartitionSpec`` of logical axis names for every parameter (None where unannotated)."""
    boxed = jax.eval_shape(init_fn(kind, config), jax.random.key(0))["params"]
    return nn.get_partition_spec(boxed)


def count_params(tree: Any) -> int:
    return int(sum(x.size for x in jax.tree.leaves(tree)))
