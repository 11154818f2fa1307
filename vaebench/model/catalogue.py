"""The model catalogue: every network the suite trains, as a spec plus its source's training defaults.

Each model names its source. ``conv`` is the keras.io example as written (TensorFlow's
``'same'`` padding); ``conv-sym`` is the same network with the symmetric padding
every framework computes natively, so a reader can see what the padding rule
costs or changes (the same FLOPs and parameter shapes; canonical weights are made
per parameter name, so for a seed both models start from the same numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from vaebench.errors import ConfigError
from vaebench.model.layers import Conv2D, Dense, Flatten, ModelSpec, Padding, Reshape


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


def _conv(name: str = "conv", padding: Padding = "same", src: str = "keras.io examples/generative/vae.py") -> ModelDefaults:
    conv = partial(Conv2D, padding=padding)
    enc = (conv(32, stride=2, activation="relu"), conv(64, stride=2, activation="relu"), Flatten(), Dense(16, "relu"))
    dec = (
        Dense(7 * 7 * 64, "relu"),
        Reshape((7, 7, 64)),
        conv(64, stride=2, activation="relu", transpose=True),
        conv(32, stride=2, activation="relu", transpose=True),
        conv(1, transpose=True),
    )
    return ModelDefaults(ModelSpec(name, enc, dec, latent_dim=2, source=src), batch_size=128, epochs=30)


def _conv_sym() -> ModelDefaults:
    src = (
        "keras.io examples/generative/vae.py, symmetric padding (Conv2d(padding=1), ConvTranspose2d(padding=1, output_padding=1))"
    )
    return _conv("conv-sym", "symmetric", src)


def _mlp() -> ModelDefaults:
    enc = (Flatten(), Dense(400, "relu"))
    dec = (Dense(400, "relu"), Dense(784), Reshape((28, 28, 1)))
    src = "pytorch/examples vae/main.py"
    return ModelDefaults(ModelSpec("mlp", enc, dec, latent_dim=20, source=src), batch_size=128, epochs=10)


def _iwae_mlp() -> ModelDefaults:
    """Burda, Grosse & Salakhutdinov 2015 (arXiv:1509.00519), section 5, one stochastic layer: two deterministic
    hidden layers of 200 tanh units each side of a 50-dimensional Gaussian latent, a Bernoulli decoder.

    The paper trains for 3,280 passes (sum over i of 3^i, i = 0..7) at batch 20 with a decaying learning rate;
    the defaults here are its batch size and a short schedule that runs on one machine.
    """
    enc = (Flatten(), Dense(200, "tanh"), Dense(200, "tanh"))
    dec = (Dense(200, "tanh"), Dense(200, "tanh"), Dense(784), Reshape((28, 28, 1)))
    src = "Burda et al. 2015, Importance Weighted Autoencoders (arXiv:1509.00519), 1 stochastic layer: 784-200-200-50, tanh"
    return ModelDefaults(ModelSpec("iwae-mlp", enc, dec, latent_dim=50, source=src), batch_size=20, epochs=10)


MODELS: dict[str, ModelDefaults] = {m.spec.name: m for m in (_blog(), _conv(), _conv_sym(), _mlp(), _iwae_mlp())}
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
