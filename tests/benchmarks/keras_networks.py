"""keras.io's VAE networks in Keras 3, on any engine: what the keras yardsticks train.

keras.io's structure: a functional encoder ``x -> [mean, logvar]`` and a
functional decoder ``z -> logits``, the weighted layers named after the
suite's canonical layers (``encoder/0`` is ``encoder_0``), so
:func:`load_canonical` and :func:`canonical_grads` translate weights and
gradients by name. Nothing here depends on the engine Keras runs on:
``keras_yardstick`` trains them with TensorFlow's ``GradientTape``,
``keras3_yardstick`` with the JAX and PyTorch loops of Keras' own guides.

Keras' ``padding="same"`` is TensorFlow's rule, so ``conv`` is written with it
as keras.io writes it. ``conv-sym`` (the symmetric padding PyTorch computes
natively) has no ``padding=`` spelling in Keras: a stride-2 ``'same'`` pads
(0, 1), and ``output_padding`` changes a transposed convolution's size, not where
its crop falls. So it is the Keras idiom for explicit padding:
``ZeroPadding2D(1)`` before a ``'valid'`` convolution, and ``Cropping2D(((1, 0), (1, 0)))``
of a ``'valid'`` transposed one (15 pixels a side from 7, keep ``[1:15]``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
from keras import layers


@dataclass
class VAE:
    """keras.io's pair of functional models; the weighted layers are named after the suite's canonical
    layers (``encoder/0`` is ``encoder_0``)."""

    encoder: keras.Model
    decoder: keras.Model

    @property
    def trainable_variables(self) -> list[Any]:
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    def weighted_layers(self) -> list[Any]:
        return [la for m in (self.encoder, self.decoder) for la in m.layers if la.weights]

    def count_params(self) -> int:
        return self.encoder.count_params() + self.decoder.count_params()


def _heads(h: Any, latent: int) -> list[Any]:
    return [layers.Dense(latent, name="encoder_mean")(h), layers.Dense(latent, name="encoder_logvar")(h)]


def _blog(latent: int = 2) -> VAE:
    x = keras.Input((28, 28, 1))
    h = x
    for i, f in enumerate((32, 64, 64, 64)):
        h = layers.Conv2D(f, 3, padding="same", name=f"encoder_{i}")(h)
    h = layers.Dense(32, activation="relu", name="encoder_5")(layers.Flatten()(h))
    z = keras.Input((latent,))
    d = layers.Reshape((28, 28, 64))(layers.Dense(28 * 28 * 64, name="decoder_0")(z))
    for i, f in enumerate((64, 64, 64, 32, 1), start=2):
        d = layers.Conv2D(f, 3, padding="same", name=f"decoder_{i}")(d)
    return VAE(keras.Model(x, _heads(h, latent)), keras.Model(z, d))


def _conv(latent: int = 2, symmetric: bool = False) -> VAE:
    def down(f: int, name: str) -> Any:
        if not symmetric:
            return layers.Conv2D(f, 3, strides=2, padding="same", activation="relu", name=name)
        conv = layers.Conv2D(f, 3, strides=2, padding="valid", activation="relu", name=name)
        return lambda h: conv(layers.ZeroPadding2D(1)(h))

    def up(f: int, name: str) -> Any:
        if not symmetric:
            return layers.Conv2DTranspose(f, 3, strides=2, padding="same", activation="relu", name=name)
        conv = layers.Conv2DTranspose(f, 3, strides=2, padding="valid", name=name)
        return lambda h: layers.ReLU()(layers.Cropping2D(((1, 0), (1, 0)))(conv(h)))

    x = keras.Input((28, 28, 1))
    h = down(64, "encoder_1")(down(32, "encoder_0")(x))
    h = layers.Dense(16, activation="relu", name="encoder_3")(layers.Flatten()(h))
    z = keras.Input((latent,))
    d = layers.Reshape((7, 7, 64))(layers.Dense(7 * 7 * 64, activation="relu", name="decoder_0")(z))
    d = up(32, "decoder_3")(up(64, "decoder_2")(d))
    logits = layers.Conv2DTranspose(1, 3, padding="same", name="decoder_4")(d)  # stride 1: (1, 1) under both rules
    return VAE(keras.Model(x, _heads(h, latent)), keras.Model(z, logits))


def _mlp(latent: int = 20) -> VAE:
    x = keras.Input((28, 28, 1))
    h = layers.Dense(400, activation="relu", name="encoder_1")(layers.Flatten()(x))
    z = keras.Input((latent,))
    logits = layers.Dense(784, name="decoder_1")(layers.Dense(400, activation="relu", name="decoder_0")(z))
    return VAE(keras.Model(x, _heads(h, latent)), keras.Model(z, logits))


def _iwae_mlp(latent: int = 50) -> VAE:
    x = keras.Input((28, 28, 1))
    h = layers.Dense(200, activation="tanh", name="encoder_1")(layers.Flatten()(x))
    h = layers.Dense(200, activation="tanh", name="encoder_2")(h)
    z = keras.Input((latent,))
    d = layers.Dense(200, activation="tanh", name="decoder_1")(layers.Dense(200, activation="tanh", name="decoder_0")(z))
    return VAE(keras.Model(x, _heads(h, latent)), keras.Model(z, layers.Dense(784, name="decoder_2")(d)))


BUILDERS = {"blog": _blog, "conv": _conv, "conv-sym": lambda: _conv(symmetric=True), "mlp": _mlp, "iwae-mlp": _iwae_mlp}


def build(model_name: str) -> VAE:
    """The named network (``conv`` with TF 'same' padding, ``conv-sym`` with the symmetric one)."""
    return BUILDERS[model_name]()


def _canonical_name(layer: Any) -> str:
    return layer.name.replace("_", "/")


def _kernel_perm(layer: Any) -> tuple[int, ...] | None:
    """Keras' ``Conv2DTranspose`` stores ``(h, w, out, in)``; the canonical (and every other Keras) layout is Keras' own."""
    return (0, 1, 3, 2) if isinstance(layer, layers.Conv2DTranspose) else None


def load_canonical(net: VAE, params: dict[str, Any]) -> None:
    """Copy the suite's canonical weights (kernels ``(in, out)`` / ``(kh, kw, in, out)``) into ``net``."""
    for layer in net.weighted_layers():
        name, perm = _canonical_name(layer), _kernel_perm(layer)
        kernel = np.asarray(params[f"{name}/kernel"])
        layer.kernel.assign(kernel if perm is None else np.transpose(kernel, perm))
        layer.bias.assign(np.asarray(params[f"{name}/bias"]))


def canonical_grads(net: VAE, grads: list[Any]) -> dict[str, np.ndarray]:
    """Gradients in the order of ``net.trainable_variables`` under canonical names and layouts (NumPy)."""
    by_variable = {id(v): np.asarray(g) for v, g in zip(net.trainable_variables, grads, strict=True)}
    out = {}
    for layer in net.weighted_layers():
        name, perm = _canonical_name(layer), _kernel_perm(layer)
        g = by_variable[id(layer.kernel)]
        out[f"{name}/kernel"] = g if perm is None else np.ascontiguousarray(np.transpose(g, perm))
        out[f"{name}/bias"] = by_variable[id(layer.bias)]
    return out
