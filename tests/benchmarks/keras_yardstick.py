"""Minimal hand-written Keras 3 loops on TensorFlow: the yardstick for the keras plugin.

keras.io's VAE structure (a functional encoder ``x -> [mean, logvar]`` and a
functional decoder ``z -> logits``) and the loop from Keras' guide "Writing a
training loop from scratch in TensorFlow": ``tf.GradientTape`` inside
``tf.function``, with or without XLA. No vaebench code inside the step. Each
network computes exactly the plugin's function, which
tests/test_yardstick_loops.py checks with shared weights (:func:`load_canonical`,
:func:`canonical_grads`).

The networks are ``keras_networks``' (engine-agnostic Keras, re-exported here).

The optimizer is Keras' own Adam (epsilon on the uncorrected second moment;
the plugin's puts it on the corrected one, as PyTorch and Optax do): the same
work per step, a slightly different update, and no part of the gradients the
equivalence test compares.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import numpy as np
import tensorflow as tf
from keras_networks import BUILDERS, VAE, build, canonical_grads, load_canonical

__all__ = ["BUILDERS", "VAE", "build", "canonical_grads", "load_canonical", "loss", "make_step"]

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"the keras yardstick is Keras on TensorFlow, but Keras runs on {keras.backend.backend()} in this "
        "process; run it with KERAS_BACKEND=tensorflow"
    )


def loss(net: VAE, x: Any, eps: Any) -> Any:
    """The batch-mean -ELBO: BCE with logits summed over pixels, plus the Gaussian KL."""
    mu, lv = net.encoder(x, training=True)
    logits = net.decoder(mu + tf.exp(0.5 * lv) * eps, training=True)
    pixels = int(np.prod(x.shape[1:]))
    bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.reshape(x, (-1, pixels)), logits=tf.reshape(logits, (-1, pixels)))
    kl = -0.5 * tf.reduce_sum(1 + lv - mu**2 - tf.exp(lv), axis=-1)
    return tf.reduce_mean(tf.reduce_sum(bce, axis=-1) + kl)


def make_step(
    model_name: str, batches: list[tuple[Any, Any]], xla: bool = False, params: dict[str, Any] | None = None
) -> tuple[Any, Any]:
    """``(step, sync)`` cycling through ``batches`` (NumPy ``x, eps`` pairs), each converted to a tensor once,
    up front: the loop's best case, with a new buffer every step as in training. ``params`` (canonical names
    and layouts) are the starting weights, so plugin and yardstick train from the same point; without them,
    Keras' initializers."""
    net = build(model_name)
    if params is not None:
        load_canonical(net, params)
    variables = net.trainable_variables
    opt = keras.optimizers.Adam(1e-3, epsilon=1e-8)
    data = itertools.cycle([(tf.constant(x), tf.constant(eps)) for x, eps in batches])

    @tf.function(jit_compile=xla)
    def train(x: Any, eps: Any) -> Any:
        with tf.GradientTape() as tape:
            value = loss(net, x, eps)
        opt.apply(tape.gradient(value, variables), variables)
        return value

    def step() -> Any:
        return train(*next(data))

    step.num_params = net.count_params()  # type: ignore[attr-defined]
    return step, (lambda value: value.numpy())
