"""Keras 3 on JAX and on PyTorch, trained the way Keras' own guides write it: the yardstick for keras-jax and keras-torch.

The networks are ``keras_networks``' (keras.io's encoder and decoder, the
weighted layers named canonically), wrapped in one functional model
``[x, eps] -> per-image -ELBO`` built from ``keras.ops``. The loops are those of
Keras' guides "Writing a training loop from scratch in JAX" and "... in
PyTorch", with no vaebench code inside the step:

* JAX: ``model.stateless_call`` under ``jax.value_and_grad``, Keras' Adam through
  ``optimizer.stateless_apply``, the whole step in one ``jax.jit`` with its state
  donated, the variables written back only when asked (:func:`make_step`'s sync);
* PyTorch: the model called eagerly, ``loss.backward()``, and Keras' Adam
  applied to the variables' gradients under ``torch.no_grad()``.

Batches are converted to the engine's tensors once, up front (the loop's best
case). Keras' Adam puts epsilon on the uncorrected second moment (the plugin's
on the corrected one, as PyTorch and Optax do): the same work per step, a
slightly different update, and nothing the equivalence test compares
(tests/test_yardstick_loops.py compares the loss and every gradient).
"""

from __future__ import annotations

import itertools
from typing import Any

import keras
import numpy as np
from keras import ops
from keras_networks import VAE, build, canonical_grads, load_canonical

__all__ = ["build", "canonical_grads", "gradients", "load_canonical", "make_step", "trainer"]
ENGINES = ("jax", "torch")


def _engine() -> str:
    engine = keras.backend.backend()
    if engine not in ENGINES:
        raise ImportError(f"keras3_yardstick is Keras on {' or '.join(ENGINES)}; this process runs Keras on {engine}")
    return engine


def trainer(net: VAE) -> keras.Model:
    """``[x, eps] -> per-image -ELBO``: BCE with logits summed over pixels plus the Gaussian KL, in ``keras.ops``."""
    latent = net.encoder.outputs[0].shape[-1]
    x, eps = keras.Input((28, 28, 1)), keras.Input((latent,))
    mu, lv = net.encoder(x)
    logits = net.decoder(mu + ops.exp(0.5 * lv) * eps)
    bce = ops.binary_crossentropy(ops.reshape(x, (-1, 784)), ops.reshape(logits, (-1, 784)), from_logits=True)
    kl = -0.5 * ops.sum(1 + lv - mu**2 - ops.exp(lv), axis=-1)
    return keras.Model([x, eps], ops.sum(bce, axis=-1) + kl)


def gradients(net: VAE, x: np.ndarray, eps: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """The batch-mean -ELBO and its gradients under canonical names, computed as :func:`make_step`'s loop computes them."""
    model, engine = trainer(net), _engine()
    if engine == "jax":
        import jax

        def loss_fn(tv: list[Any], ntv: list[Any]) -> Any:
            out, _ = model.stateless_call(tv, ntv, [x, eps], training=True)
            return ops.mean(out)

        tv = [v.value for v in model.trainable_variables]
        value, grads = jax.value_and_grad(loss_fn)(tv, [v.value for v in model.non_trainable_variables])
    else:
        value = ops.mean(model([ops.convert_to_tensor(x), ops.convert_to_tensor(eps)], training=True))
        value.backward()
        grads = [v.value.grad for v in model.trainable_variables]
    by_variable = dict(zip([id(v) for v in model.trainable_variables], grads, strict=True))
    ordered = [by_variable[id(v)] for v in net.trainable_variables]
    return float(ops.convert_to_numpy(value)), canonical_grads(net, [ops.convert_to_numpy(g) for g in ordered])


def make_step(model_name: str, batches: list[tuple[Any, Any]], params: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """``(step, sync)`` cycling through ``batches`` (NumPy ``x, eps`` pairs): the guide's loop for this process's engine.
    ``params`` (canonical names and layouts) are the starting weights, so plugin and yardstick train from the same
    point; without them, Keras' initializers."""
    engine, net = _engine(), build(model_name)
    if params is not None:
        load_canonical(net, params)
    model = trainer(net)
    opt = keras.optimizers.Adam(1e-3, epsilon=1e-8)
    opt.build(model.trainable_variables)
    data = itertools.cycle([(ops.convert_to_tensor(x), ops.convert_to_tensor(eps)) for x, eps in batches])
    if engine == "jax":
        import jax

        def loss_fn(tv: list[Any], ntv: list[Any], x: Any, eps: Any) -> tuple[Any, list[Any]]:
            out, ntv = model.stateless_call(tv, ntv, [x, eps], training=True)
            return ops.mean(out), ntv

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

        def train(state: tuple[Any, Any, Any], x: Any, eps: Any) -> tuple[Any, tuple[Any, Any, Any]]:
            tv, ntv, ov = state
            (value, ntv), grads = grad_fn(tv, ntv, x, eps)
            tv, ov = opt.stateless_apply(ov, grads, tv)
            return value, (tv, ntv, ov)

        jitted = jax.jit(train, donate_argnums=0)
        state = [
            (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                [v.value for v in opt.variables],
            )
        ]

        def step() -> Any:
            value, state[0] = jitted(state[0], *next(data))
            return value

        sync = jax.block_until_ready
    else:
        import torch

        trainable = model.trainable_variables

        def step() -> Any:
            value = ops.mean(model(list(next(data)), training=True))
            model.zero_grad()
            value.backward()
            with torch.no_grad():
                opt.apply([v.value.grad for v in trainable], trainable)
            return value.detach()

        def sync(value: Any) -> Any:
            return value.item()

    step.num_params = model.count_params()  # type: ignore[attr-defined]
    return step, sync
