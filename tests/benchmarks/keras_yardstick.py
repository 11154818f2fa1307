"""Minimal hand-written Keras 3 loops on TensorFlow: the yardstick for the keras plugin.

A functional Keras model and the loop from Keras' guide "Writing a training
loop from scratch in TensorFlow": ``tf.GradientTape`` inside ``tf.function``,
with or without XLA. No vaebench code inside the step.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras
import tensorflow as tf
from keras import layers, ops


def _blog(latent: int = 2) -> tuple[Any, Any]:
    x = keras.Input((28, 28, 1))
    eps = keras.Input((latent,))
    h = x
    for f in (32, 64, 64, 64):
        h = layers.Conv2D(f, 3, padding="same")(h)
    h = layers.Dense(32, activation="relu")(layers.Flatten()(h))
    mu, lv = layers.Dense(latent)(h), layers.Dense(latent)(h)
    d = layers.Reshape((28, 28, 64))(layers.Dense(28 * 28 * 64)(mu + ops.exp(0.5 * lv) * eps))
    for f in (64, 64, 64, 32):
        d = layers.Conv2D(f, 3, padding="same")(d)
    logits = layers.Conv2D(1, 3, padding="same")(d)
    return keras.Model([x, eps], [logits, mu, lv]), 784


def _conv(latent: int = 2) -> tuple[Any, Any]:
    x = keras.Input((28, 28, 1))
    eps = keras.Input((latent,))
    h = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    h = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(h)
    h = layers.Dense(16, activation="relu")(layers.Flatten()(h))
    mu, lv = layers.Dense(latent)(h), layers.Dense(latent)(h)
    d = layers.Reshape((7, 7, 64))(layers.Dense(7 * 7 * 64, activation="relu")(mu + ops.exp(0.5 * lv) * eps))
    d = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(d)
    d = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(d)
    logits = layers.Conv2DTranspose(1, 3, padding="same")(d)
    return keras.Model([x, eps], [logits, mu, lv]), 784


def _mlp(latent: int = 20) -> tuple[Any, Any]:
    x = keras.Input((28, 28, 1))
    eps = keras.Input((latent,))
    h = layers.Dense(400, activation="relu")(layers.Flatten()(x))
    mu, lv = layers.Dense(latent)(h), layers.Dense(latent)(h)
    logits = layers.Dense(784)(layers.Dense(400, activation="relu")(mu + ops.exp(0.5 * lv) * eps))
    return keras.Model([x, eps], [logits, mu, lv]), 784


def make_step(model_name: str, batches: list[tuple[Any, Any]], xla: bool = False) -> tuple[Any, Any]:
    """``(step, sync)`` for :func:`vaebench.measure.timing.measure`, cycling through ``batches`` (NumPy ``x, eps`` pairs),
    each converted to a tensor once, up front: the loop's best case, with a new buffer every step as in training."""
    model, pixels = {"blog": _blog, "conv": _conv, "mlp": _mlp}[model_name]()
    opt = keras.optimizers.Adam(1e-3, epsilon=1e-8)
    data = itertools.cycle([(tf.constant(x), tf.constant(eps)) for x, eps in batches])

    @tf.function(jit_compile=xla)
    def train(x: Any, eps: Any) -> Any:
        with tf.GradientTape() as tape:
            logits, mu, lv = model([x, eps], training=True)
            flat = tf.reshape(x, (-1, pixels))
            bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=flat, logits=tf.reshape(logits, (-1, pixels)))
            kl = -0.5 * tf.reduce_sum(1 + lv - mu**2 - tf.exp(lv), axis=-1)
            loss = tf.reduce_mean(tf.reduce_sum(bce, axis=-1) + kl)
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        return loss

    def step() -> Any:
        return train(*next(data))

    step.num_params = model.count_params()  # type: ignore[attr-defined]
    return step, (lambda loss: loss.numpy())
