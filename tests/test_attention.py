"""Attention implementations (``layers.dot_product_attention``): every impl equals ``plain`` on the shapes the models
use (8-frame Temp-Attn, 1024-token spatial, 77-token cross-attention, odd lengths, masks), chunked attention never
materialises more than its block of scores, and ``auto`` picks per backend."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numerics import assert_close
from vidrd_jax.models.layers import ATTENTION_BLOCK_ELEMENTS, dot_product_attention, resolve_attention_impl
from vidrd_jax.models.text_encoder import CLIPTextConfig
from vidrd_jax.models.unet3d import UNet3DConfig
from vidrd_jax.models.vae import VAEConfig


def _qkv(seed, q_shape, kv_shape, dtype=np.float32):
    rs = np.random.RandomState(seed)
    return tuple(rs.randn(*shape).astype(dtype) for shape in (q_shape, kv_shape, kv_shape))


def _ops(q, k):
    """Roundings of an attention output in units of max|v|: a logit error of ``D`` roundings at the scale of
    ``|q||k|/sqrt(D)`` moves softmax weights by as much relatively, plus the ``Lk``-term ``·V`` sum and the softmax."""
    dim = q.shape[-1]
    return dim * np.abs(q).max() * np.abs(k).max() * dim ** -0.5 + k.shape[-3] + 8


@functools.partial(jax.jit, static_argnames=("impl", "block"))
def _attend(q, k, v, mask=None, *, impl, block=ATTENTION_BLOCK_ELEMENTS):
    return dot_product_attention(q, k, v, impl, mask=mask, block=block)


CASES = {  # name: (q shape [..., Lq, H, D], k/v shape [..., Lk, H, D])
    "temporal_8_frames": ((2 * 64, 8, 2, 16), (2 * 64, 8, 2, 16)),
    "spatial_1024": ((2, 1024, 1, 32), (2, 1024, 1, 32)),
    "cross_77_broadcast_over_frames": ((2, 3, 256, 2, 16), (2, 1, 77, 2, 16)),
    "odd_lengths": ((3, 37, 3, 8), (3, 29, 3, 8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("impl,block", [("chunked", ATTENTION_BLOCK_ELEMENTS), ("chunked", 600), ("chunked", 7),
                                        ("dot_product", 0), ("auto", ATTENTION_BLOCK_ELEMENTS)])
def test_impl_matches_plain(case, impl, block):
    # block 600: several (batch, head) items per step for short sequences, query chunks of one item for long ones;
    # block 7: one query row per step (chunks that never divide the lengths).
    q, k, v = _qkv(0, *CASES[case])
    ref = np.asarray(_attend(q, k, v, impl="plain"))
    out = np.asarray(_attend(q, k, v, impl=impl, block=block))
    assert out.shape == q.shape
    assert_close(out, ref, ops=_ops(q, k), scale=np.abs(v).max(), err_msg=f"{impl} block={block}")


@pytest.mark.parametrize("impl,block", [("chunked", ATTENTION_BLOCK_ELEMENTS), ("chunked", 50), ("dot_product", 0)])
def test_masked_impls_match_plain_including_fully_masked_rows(impl, block):
    q, k, v = _qkv(1, (3, 11, 2, 8), (3, 11, 2, 8))
    causal = np.tril(np.ones((11, 11), bool))[None, None]
    padding = np.ones((3, 11), bool)
    padding[1, 6:] = False
    padding[2, :] = False  # every key masked: plain's softmax gives uniform weights, so must the others
    mask = causal & padding[:, None, None, :]
    ref = np.asarray(_attend(q, k, v, mask, impl="plain"))
    out = np.asarray(_attend(q, k, v, mask, impl=impl, block=block))
    assert_close(out, ref, ops=_ops(q, k), scale=np.abs(v).max())
    assert_close(out[2], np.broadcast_to(v[2].mean(axis=0), out[2].shape), ops=11 + 8, scale=np.abs(v).max())


def test_chunked_bfloat16_matches_plain():
    q, k, v = (jnp.asarray(t, jnp.bfloat16) for t in _qkv(2, (2, 300, 2, 16), (2, 300, 2, 16)))
    ref = np.asarray(_attend(q, k, v, impl="plain"), np.float32)
    out = _attend(q, k, v, impl="chunked", block=4096)
    assert out.dtype == jnp.bfloat16
    # both round logits-weights products to bfloat16 once before ·V, then the output once
    assert_close(np.asarray(out, np.float32), ref, ops=8, dtype=jnp.bfloat16,
                 scale=np.abs(np.asarray(v, np.float32)).max())


def _largest_intermediate(jaxpr) -> int:
    """Elements of the largest value any equation (also inside loops) produces."""
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            largest = max(largest, int(np.prod(var.aval.shape)))
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    largest = max(largest, _largest_intermediate(sub.jaxpr))
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    largest = max(largest, _largest_intermediate(sub))
    return largest


@pytest.mark.parametrize("q_shape,block", [((4, 1024, 2, 16), 1 << 16), ((64, 64, 2, 4), 1 << 14)])
def test_chunked_never_holds_more_than_a_block_of_scores(q_shape, block):
    q, k, v = _qkv(3, q_shape, q_shape)
    inputs = q.size
    chunked = jax.make_jaxpr(lambda *a: dot_product_attention(*a, "chunked", block=block))(q, k, v).jaxpr
    plain = jax.make_jaxpr(lambda *a: dot_product_attention(*a, "plain"))(q, k, v).jaxpr
    scores = q_shape[0] * q_shape[2] * q_shape[1] ** 2
    assert _largest_intermediate(plain) == scores
    assert _largest_intermediate(chunked) <= max(block, inputs) < scores


def test_auto_resolves_per_backend_and_bad_names_are_rejected():
    assert resolve_attention_impl("auto", "cpu") == "chunked"
    assert resolve_attention_impl("auto", "gpu") == "dot_product"
    assert resolve_attention_impl("auto", "tpu") == "dot_product"
    assert resolve_attention_impl("plain", "gpu") == "plain"
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        resolve_attention_impl("flash")
    q, k, v = _qkv(4, (1, 4, 1, 8), (1, 4, 1, 8))
    with pytest.raises(ValueError, match="attention_impl must be one of"):
        dot_product_attention(q, k, v, "flash")


@pytest.mark.parametrize("make", [lambda impl: UNet3DConfig.tiny(attention_impl=impl),
                                  lambda impl: VAEConfig.tiny(attention_impl=impl),
                                  lambda impl: CLIPTextConfig.tiny(attention_impl=impl)])
def test_model_configs_default_to_auto_and_name_the_field(make):
    assert make("auto").attention_impl == "auto"
    with pytest.raises(ValueError, match="attention_impl"):
        make("flash")


@pytest.mark.parametrize("block", [ATTENTION_BLOCK_ELEMENTS, 600, 7])
def test_chunked_gradients_match_plain(block):
    # training on CPU differentiates through chunked attention ("auto"), loops and padding included
    q, k, v = _qkv(5, (2, 37, 2, 8), (2, 29, 2, 8))
    weights = np.random.RandomState(6).randn(*q.shape).astype(np.float32)

    def loss(impl, *qkv):
        return jnp.sum(dot_product_attention(*qkv, impl, block=block) * weights)

    ref = jax.jit(jax.grad(functools.partial(loss, "plain"), argnums=(0, 1, 2)))(q, k, v)
    out = jax.jit(jax.grad(functools.partial(loss, "chunked"), argnums=(0, 1, 2)))(q, k, v)
    for name, a, b in zip("qkv", out, ref):
        # the backward pass chains the forward's roundings with sums over Lq (dk, dv) or Lk (dq) weighted terms
        assert_close(a, b, ops=2 * _ops(q, k) + q.shape[-3], scale=np.abs(b).max(), err_msg=f"d{name}")
