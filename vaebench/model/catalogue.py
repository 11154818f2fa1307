"""The model catalogue: every network the suite trains, as a spec plus its source's training defaults.

Each model names its source. ``conv`` is the keras.io example as written (TensorFlow's
``'same'`` padding, which Keras has built in); ``conv-sym`` is the same network with
the symmetric padding torch's convolutions take as arguments (Keras emulates it), so a
reader can see what the padding rule costs or changes (the same FLOPs and parameter shapes; canonical weights are made
per parameter name, so for a seed both models start from the same numbers).

A user's own model needs no edit here: ``--model package.module:factory``, or an
entry point in the ``vaebench.models`` group, names a callable returning a
:class:`~vaebench.model.layers.ModelSpec` (or :class:`ModelDefaults`) built from
the core's layers. :func:`get_model` resolves either form from the name string
alone, so every consumer (a run, parity's and bench's worker processes, the
conformance kit, a resumed checkpoint) finds the same model by the name it recorded.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from dataclasses import dataclass
from functools import partial
from importlib import metadata

from vaebench.errors import ConfigError
from vaebench.model.layers import Conv2D, Dense, Flatten, ModelSpec, Padding, Quantizer, Reshape


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


#: the pixel variance of MNIST's 60,000 training images at [0, 1] scale, ``np.var(x_train / 255)``: what keras.io's
#: VQ-VAE divides its reconstruction MSE by (tests/test_vqvae.py recomputes it from the files)
MNIST_TRAIN_VARIANCE = 0.09493041879725246


def _vqvae() -> ModelDefaults:
    """keras.io examples/generative/vq_vae.py (Paul, 2021): two stride-2 'same' convolutions of 32 and 64 filters and a
    1x1 one to a 7x7 map of 16-vectors, a codebook of 128 codes (beta 0.25), the mirrored transposed convolutions
    and a linear 3x3 one back to the centred image; Adam, batch 128, 30 epochs. Its reconstruction loss is the MSE
    over MNIST's training variance, on Fashion-MNIST too (the recipe's constant)."""
    same = partial(Conv2D, padding="same")
    enc = (same(32, stride=2, activation="relu"), same(64, stride=2, activation="relu"), same(16, kernel=1))
    dec = (
        same(64, stride=2, activation="relu", transpose=True),
        same(32, stride=2, activation="relu", transpose=True),
        same(1, transpose=True),
    )
    src = "keras.io examples/generative/vq_vae.py: 7x7x16 latent map, 128 codes, beta 0.25, MSE / train variance"
    spec = ModelSpec("vqvae", enc, dec, latent_dim=16, source=src, quantizer=Quantizer(128, 0.25, MNIST_TRAIN_VARIANCE))
    return ModelDefaults(spec, batch_size=128, epochs=30)


MODELS: dict[str, ModelDefaults] = {m.spec.name: m for m in (_blog(), _conv(), _conv_sym(), _mlp(), _iwae_mlp(), _vqvae())}
#: a model computed exactly as its source wrote it -> its twin with the padding torch's and lax's convolutions take
#: as arguments (the same layers, FLOPs and parameter shapes, pixels shifted): ``vaebench exactness`` times the
#: pair. Keras has only 'valid' and 'same', so there the twin is the emulated one (padding and cropping layers)
NATIVE_TWINS: dict[str, str] = {"conv": "conv-sym"}
DEFAULT_MODEL = "conv"
DATASETS = ("mnist", "fashion-mnist")
# old model names still read: files written before a rename keep working; the command line warns
MODEL_ALIASES = {"seed": "blog"}  # "seed" sat beside --seed and read as a random seed


def canonical_model(name: str) -> str:
    """A model's current name (an old alias becomes the name it stands for); unknown names pass through."""
    return MODEL_ALIASES.get(name, name)


#: the entry-point group a distribution registers its models in: ``name = "package.module:factory"``
GROUP = "vaebench.models"
#: the training defaults of a factory that returns a bare ModelSpec (the ``mlp``/``conv`` sources' batch size)
USER_BATCH_SIZE, USER_EPOCHS = 128, 10
#: the images every model here reads and writes (MNIST and Fashion-MNIST)
IMAGE_SHAPE = (28, 28, 1)


def get_model(name: str) -> ModelDefaults:
    """The named model with its source defaults, or a clear error.

    ``name`` is a catalogue name (or an old alias), ``package.module:factory``,
    or the name of an entry point in :data:`GROUP`; built-in names come first.
    """
    name = canonical_model(name)
    if name in MODELS:
        return MODELS[name]
    return _user_model(name)


def model_names() -> list[str]:
    """Every model name ``--model`` takes by name: the catalogue's, then installed entry points' (metadata only)."""
    return [*sorted(MODELS), *sorted({ep.name for ep in _entry_points()} - set(MODELS))]


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=GROUP))


@functools.cache
def _user_model(name: str) -> ModelDefaults:
    """A model from outside the catalogue, imported and checked once per process (only successes are cached)."""
    if ":" in name:
        return _checked(_import_factory(name), f"--model {name}")
    found = {ep.value: ep for ep in _entry_points() if ep.name == name}
    if not found:
        raise ConfigError(
            f"unknown model {name!r}: that is not a model of the catalogue nor of the {GROUP} entry points; "
            f"choose one of {', '.join(model_names())}, or name your own as package.module:factory (docs/models.md)"
        )
    if len(found) > 1:
        raise ConfigError(f"model {name!r} is registered twice in {GROUP} ({' and '.join(sorted(found))}); uninstall one")
    ep = next(iter(found.values()))
    where = f"model {name!r} (entry point {ep.value}{f' of {ep.dist.name}' if ep.dist else ''})"
    try:
        factory = ep.load()
    except Exception as exc:  # a user's module may fail in any way; the run stops with one line naming it
        raise ConfigError(f"{where} failed to import: {type(exc).__name__}: {exc}") from None
    return _checked(factory, where)


def _import_factory(ref: str) -> object:
    """``package.module:factory`` imported, as ``python -m`` would find it from the working directory.

    The console script ``vaebench`` does not put the working directory on
    ``sys.path`` (``python -m vaebench.cli`` does); it is appended here, after
    the installed packages, so a module beside the user resolves either way and
    in every worker process started from there.
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr or ":" in attr:
        raise ConfigError(f"--model {ref!r}: write a model of your own as package.module:factory")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while it runs
        raise ConfigError(f"--model {ref}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    obj: object = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"--model {ref}: module {module_name} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def _checked(factory: object, where: str) -> ModelDefaults:
    """Call a user's factory and hold what it returns to what the catalogue's own models are, in one line if not."""
    if not callable(factory):
        raise ConfigError(f"{where}: {type(factory).__name__} object is not callable; name a function returning a ModelSpec")
    try:
        made = factory()
    except Exception as exc:
        raise ConfigError(f"{where}: the factory raised {type(exc).__name__}: {exc}") from None
    defaults = made if isinstance(made, ModelDefaults) else ModelDefaults(made, USER_BATCH_SIZE, USER_EPOCHS)  # type: ignore[arg-type]
    spec = defaults.spec
    if not isinstance(spec, ModelSpec):
        raise ConfigError(
            f"{where}: the factory returned {type(made).__name__}, not a vaebench.model.layers.ModelSpec "
            "(or vaebench.model.catalogue.ModelDefaults)"
        )
    for field, value, least in (("batch_size", defaults.batch_size, 1), ("epochs", defaults.epochs, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: ModelDefaults.{field} must be an integer, {least} or more, got {value!r}")
    if isinstance(spec.latent_dim, bool) or not isinstance(spec.latent_dim, int) or spec.latent_dim < 1:
        raise ConfigError(f"{where}: latent_dim must be an integer, 1 or more, got {spec.latent_dim!r}")
    if tuple(spec.input_shape) != IMAGE_SHAPE:
        raise ConfigError(f"{where}: input_shape is {tuple(spec.input_shape)}; the data sets here are {IMAGE_SHAPE}")
    for layer in (*spec.encoder, *spec.decoder):
        if not isinstance(layer, Dense | Conv2D | Flatten | Reshape):
            raise ConfigError(
                f"{where}: {type(layer).__name__} is not a layer of vaebench.model.layers (Dense, Conv2D, Flatten, Reshape)"
            )
    try:
        spec.param_shapes()  # every layer's shapes and paddings, and the decoder ending in the image
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except Exception as exc:  # a layer field of the wrong type (Dense("ten")) fails in the shape arithmetic
        raise ConfigError(f"{where}: the spec does not build: {type(exc).__name__}: {exc}") from None
    return defaults
