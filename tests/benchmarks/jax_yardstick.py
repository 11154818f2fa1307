"""Minimal hand-written Flax Linen + Optax training loops: the yardstick for the jax plugin.

What a JAX user would write: one jitted step, params and Adam state donated,
batches already on the device. No vaebench code inside the step.
"""

from __future__ import annotations

import itertools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class BlogVAE(nn.Module):
    """The blog's network ('SAME' padding is exact here: every conv has stride 1)."""

    @nn.compact
    def __call__(self, x: jax.Array, eps: jax.Array) -> jax.Array:
        h = x
        for f in (32, 64, 64, 64):
            h = nn.Conv(f, (3, 3), padding="SAME")(h)
        h = nn.relu(nn.Dense(32)(h.reshape(h.shape[0], -1)))
        mu, lv = nn.Dense(2)(h), nn.Dense(2)(h)
        h = nn.Dense(28 * 28 * 64)(mu + jnp.exp(0.5 * lv) * eps).reshape(-1, 28, 28, 64)
        for f in (64, 64, 64, 32):
            h = nn.Conv(f, (3, 3), padding="SAME")(h)
        logits = nn.Conv(1, (3, 3), padding="SAME")(h)
        return _loss(logits, x, mu, lv)


class ConvVAE(nn.Module):
    """keras.io's VAE in Flax: stride-2 convolutions and transposed convolutions, 'SAME' padding."""

    @nn.compact
    def __call__(self, x: jax.Array, eps: jax.Array) -> jax.Array:
        h = nn.relu(nn.Conv(32, (3, 3), strides=(2, 2), padding="SAME")(x))
        h = nn.relu(nn.Conv(64, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = nn.relu(nn.Dense(16)(h.reshape(h.shape[0], -1)))
        mu, lv = nn.Dense(2)(h), nn.Dense(2)(h)
        h = nn.relu(nn.Dense(7 * 7 * 64)(mu + jnp.exp(0.5 * lv) * eps)).reshape(-1, 7, 7, 64)
        h = nn.relu(nn.ConvTranspose(64, (3, 3), strides=(2, 2), padding="SAME")(h))
        h = nn.relu(nn.ConvTranspose(32, (3, 3), strides=(2, 2), padding="SAME")(h))
        logits = nn.ConvTranspose(1, (3, 3), padding="SAME")(h)
        return _loss(logits, x, mu, lv)


class MlpVAE(nn.Module):
    """pytorch/examples' VAE in Flax."""

    @nn.compact
    def __call__(self, x: jax.Array, eps: jax.Array) -> jax.Array:
        flat = x.reshape(x.shape[0], -1)
        h = nn.relu(nn.Dense(400)(flat))
        mu, lv = nn.Dense(20)(h), nn.Dense(20)(h)
        logits = nn.Dense(784)(nn.relu(nn.Dense(400)(mu + jnp.exp(0.5 * lv) * eps)))
        return _loss(logits, flat, mu, lv)


def _loss(logits: jax.Array, x: jax.Array, mu: jax.Array, lv: jax.Array) -> jax.Array:
    bce = optax.sigmoid_binary_cross_entropy(logits, x).reshape(x.shape[0], -1).sum(-1)
    kl = -0.5 * jnp.sum(1 + lv - mu**2 - jnp.exp(lv), axis=-1)
    return jnp.mean(bce + kl)


def make_step(model_name: str, batches: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """``(step, sync)`` for :func:`vaebench.measure.timing.measure`, cycling through ``batches`` (NumPy ``x, eps`` pairs)
    put on the device once, up front: the loop's best case, with a new buffer every step as in training."""
    model = {"blog": BlogVAE, "conv": ConvVAE, "mlp": MlpVAE}[model_name]()
    on_device = [(jnp.asarray(x), jnp.asarray(eps)) for x, eps in batches]
    data = itertools.cycle(on_device)
    params = model.init(jax.random.key(0), *on_device[0])
    tx = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8)
    state = [params, tx.init(params)]

    @jax.jit
    def _inner(params, opt_state, x, eps):
        loss, grads = jax.value_and_grad(model.apply)(params, x, eps)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    jitted = jax.jit(_inner, donate_argnums=(0, 1))

    def step() -> jax.Array:
        state[0], state[1], loss = jitted(state[0], state[1], *next(data))
        return loss

    step.num_params = sum(leaf.size for leaf in jax.tree.leaves(params))  # type: ignore[attr-defined]
    return step, jax.block_until_ready
