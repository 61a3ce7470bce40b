"""LDM's autoencoder loss maths (paper eq. 9, as LDM computes it): the KL regulariser, the adaptive weight λ of the
adversarial term, and the kernel gradients of the decoder's last layer that λ is measured on.

Pure functions of arrays; :class:`vidrd_jax.tasks.kl_autoencoder.KLAutoencoderTask` puts them together.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def kl_divergence(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) summed over all but the first axis: ``[N]`` (LDM ``kl()``)."""
    kl = 0.5 * (jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar)
    return jnp.sum(kl.reshape(kl.shape[0], -1), axis=1)


def adaptive_weight(grad_nll: jax.Array, grad_g: jax.Array, max_weight: float) -> jax.Array:
    """LDM's ``calculate_adaptive_weight``: ``clip(‖∇L_nll‖ / (‖∇L_g‖ + 1e-4), 0, max_weight)``."""
    return jnp.clip(jnp.linalg.norm(grad_nll) / (jnp.linalg.norm(grad_g) + 1e-4), 0.0, max_weight)


def conv_kernel_grads(inputs: jax.Array, kernel: jax.Array, *cotangents: jax.Array) -> tuple[jax.Array, ...]:
    """Gradients w.r.t. the kernel of a stride-1 'SAME' conv ``y = conv(inputs, kernel)`` for each cotangent of y.

    ``inputs``: ``[N, H, W, Cin]``; ``kernel``: ``[kh, kw, Cin, Cout]``; cotangents ``[N, H, W, Cout]``.
    """
    def conv(k):
        return jax.lax.conv_general_dilated(inputs.astype(jnp.float32), k, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC"))

    _, pullback = jax.vjp(conv, kernel.astype(jnp.float32))
    return tuple(pullback(c.astype(jnp.float32))[0] for c in cotangents)
