"""Declarative model specs and run settings: the one place a network is defined.

A backend never decides a layer size, a padding or a flattening order: it walks
:meth:`ModelSpec.layers`, which gives every layer with its static input and
output shapes (always channels-last, ``(height, width, channels)`` or
``(features,)``) and, for convolutions, the exact TensorFlow-style ``'same'``
padding. TensorFlow pads an even-sized stride-2 input asymmetrically (nothing
before, one pixel after); PyTorch's ``padding=1`` would shift the sampling grid
by a pixel. Spelling the padding out here keeps every backend on one grid.

Flattening is in ``(h, w, c)`` order and reshaping fills ``(h, w, c)``, the
Keras convention of the source blog; backends whose tensors are ``NCHW`` must
permute before flattening (a free view on channels-last memory).
"""

from __future__ import annotations

from dataclasses import dataclass

from vaebench.errors import ConfigError
from vaebench.model.layers import Conv2D, Dense, Flatten, ModelSpec, Reshape


@dataclass(frozen=True)
class ModelDefaults:
    """A spec plus the training defaults of the source it comes from."""

    spec: ModelSpec
    batch_size: int
    epochs: int


def _blog() -> ModelDefaults:
    enc = (*(Conv2D(f) for f in (32, 64, 64, 64)), Flatten(), Dense(32, "relu"))
    dec = (Dense(28 * 28 * 64), Reshape((28, 28, 64)), *(Conv2D(f) for f in (64, 64, 64, 32)), Conv2D(1))
    src = "the source blog's Keras VAE, as written (linear convolutions, no stride)"
    return ModelDefaults(ModelSpec("blog", enc, dec, latent_dim=2, source=src), batch_size=512, epochs=100)


def _conv() -> ModelDefaults:
    enc = (Conv2D(32, stride=2, activation="relu"), Conv2D(64, stride=2, activation="relu"), Flatten(), Dense(16, "relu"))
    dec = (
        Dense(7 * 7 * 64, "relu"),
        Reshape((7, 7, 64)),
        Conv2D(64, stride=2, activation="relu", transpose=True),
        Conv2D(32, stride=2, activation="relu", transpose=True),
        Conv2D(1, transpose=True),
    )
    src = "keras.io examples/generative/vae.py"
    return ModelDefaults(ModelSpec("conv", enc, dec, latent_dim=2, source=src), batch_size=128, epochs=30)


def _mlp() -> ModelDefaults:
    enc = (Flatten(), Dense(400, "relu"))
    dec = (Dense(400, "relu"), Dense(784), Reshape((28, 28, 1)))
    src = "pytorch/examples vae/main.py"
    return ModelDefaults(ModelSpec("mlp", enc, dec, latent_dim=20, source=src), batch_size=128, epochs=10)


MODELS: dict[str, ModelDefaults] = {m.spec.name: m for m in (_blog(), _conv(), _mlp())}
DEFAULT_MODEL = "conv"
DATASETS = ("mnist", "fashion-mnist")
# old model names still read: files written before a rename keep working; the command line warns
MODEL_ALIASES = {"seed": "blog"}  # "seed" sat beside --seed and read as a random seed


def canonical_model(name: str) -> str:
    """A model's current name (an old alias becomes the name it stands for); unknown names pass through."""
    return MODEL_ALIASES.get(name, name)


def get_model(name: str) -> ModelDefaults:
    """The named model with its source defaults, or a clear error."""
    try:
        return MODELS[canonical_model(name)]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
