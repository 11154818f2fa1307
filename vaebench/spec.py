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

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from vaebench.errors import ConfigError

Activation = Literal["relu"] | None
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Dense:
    """Fully connected layer; kernel ``(in, out)``, bias ``(out,)``."""

    units: int
    activation: Activation = None


@dataclass(frozen=True)
class Conv2D:
    """3x3-style convolution with 'same' padding.

    Kernel ``(kh, kw, in, out)``. With ``transpose=True`` it is the transposed
    convolution (the gradient of a 'same' convolution of the same stride), its
    kernel still stored ``(kh, kw, in, out)`` where ``in`` is the channels it
    reads, so that all convolution kernels share one canonical layout.
    """

    filters: int
    kernel: int = 3
    stride: int = 1
    activation: Activation = None
    transpose: bool = False


@dataclass(frozen=True)
class Flatten:
    """``(h, w, c) -> (h*w*c,)`` in row-major ``(h, w, c)`` order."""


@dataclass(frozen=True)
class Reshape:
    """``(n,) -> shape`` filled in ``(h, w, c)`` order."""

    shape: Shape


Layer = Dense | Conv2D | Flatten | Reshape


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding ``(before, after)`` for one spatial axis.

    ``out = ceil(size / stride)``; ``total = max((out-1)*stride + kernel - size, 0)``;
    ``before = total // 2``. For 28 pixels, kernel 3, stride 2: ``(0, 1)``.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


@dataclass(frozen=True)
class LayerInfo:
    """A layer in place: its canonical name, shapes and padding.

    ``padding`` is ``(before, after)`` per spatial axis (both axes are equal in
    every model here). For a transposed convolution it is the padding of the
    forward convolution it transposes: the backend computes the full transposed
    output ``(in-1)*stride + kernel`` and keeps ``[before : before + out]``.
    """

    name: str
    layer: Layer
    in_shape: Shape
    out_shape: Shape
    padding: tuple[int, int] = (0, 0)

    @property
    def key(self) -> str:
        """The name with ``/`` replaced by ``_``: what frameworks accept as a module or parameter name."""
        return self.name.replace("/", "_")

    @property
    def param_shapes(self) -> dict[str, Shape]:
        """Canonical parameter shapes of this layer, keyed ``<name>/kernel`` etc."""
        layer = self.layer
        if isinstance(layer, Dense):
            return {f"{self.name}/kernel": (self.in_shape[0], layer.units), f"{self.name}/bias": (layer.units,)}
        if isinstance(layer, Conv2D):
            k = layer.kernel
            return {f"{self.name}/kernel": (k, k, self.in_shape[-1], layer.filters), f"{self.name}/bias": (layer.filters,)}
        return {}


def _infer(layer: Layer, shape: Shape) -> tuple[Shape, tuple[int, int]]:
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise ConfigError(f"Dense needs a flat input, got {shape}: put a Flatten before it")
        return (layer.units,), (0, 0)
    if isinstance(layer, Flatten):
        n = 1
        for s in shape:
            n *= s
        return (n,), (0, 0)
    if isinstance(layer, Reshape):
        n = 1
        for s in layer.shape:
            n *= s
        if (n,) != tuple(shape):
            raise ConfigError(f"Reshape to {layer.shape} needs {n} features, got {shape}")
        return tuple(layer.shape), (0, 0)
    h, w, _ = shape
    if h != w:
        raise ConfigError("only square feature maps are supported")
    if layer.transpose:
        out = h * layer.stride
        return (out, out, layer.filters), same_padding(out, layer.kernel, layer.stride)
    out = -(-h // layer.stride)
    return (out, out, layer.filters), same_padding(h, layer.kernel, layer.stride)


@dataclass(frozen=True)
class ModelSpec:
    """A VAE: encoder trunk, two Dense heads (mean, log-variance), decoder.

    The encoder trunk maps the image ``input_shape`` to features; the heads
    ``encoder/mean`` and ``encoder/logvar`` map those to ``latent_dim``; the
    decoder maps ``(latent_dim,)`` back to logits of ``input_shape``.
    """

    name: str
    encoder: tuple[Layer, ...]
    decoder: tuple[Layer, ...]
    latent_dim: int
    input_shape: Shape = (28, 28, 1)
    source: str = ""

    def with_latent(self, latent_dim: int | None) -> ModelSpec:
        """The same network with another latent size (``None`` keeps it)."""
        if latent_dim is None:
            return self
        return dataclasses.replace(self, latent_dim=latent_dim)

    def _walk(self, prefix: str, layers: tuple[Layer, ...], shape: Shape) -> Iterator[LayerInfo]:
        for i, layer in enumerate(layers):
            out, pad = _infer(layer, shape)
            yield LayerInfo(f"{prefix}/{i}", layer, shape, out, pad)
            shape = out

    def encoder_layers(self) -> list[LayerInfo]:
        """The encoder trunk, in order, ending in a flat feature vector."""
        return list(self._walk("encoder", self.encoder, self.input_shape))

    def head_layers(self) -> list[LayerInfo]:
        """The mean and log-variance heads (both read the trunk's features)."""
        trunk = self.encoder_layers()
        features = trunk[-1].out_shape if trunk else self.input_shape
        head = Dense(self.latent_dim)
        return [LayerInfo(f"encoder/{n}", head, features, (self.latent_dim,)) for n in ("mean", "logvar")]

    def decoder_layers(self) -> list[LayerInfo]:
        """The decoder, in order, ending in logits of ``input_shape``."""
        layers = list(self._walk("decoder", self.decoder, (self.latent_dim,)))
        if layers[-1].out_shape != tuple(self.input_shape):
            raise ConfigError(f"decoder of {self.name!r} ends in {layers[-1].out_shape}, not {self.input_shape}")
        return layers

    def layers(self) -> list[LayerInfo]:
        """Every layer: trunk, heads, decoder."""
        return self.encoder_layers() + self.head_layers() + self.decoder_layers()

    def param_shapes(self) -> dict[str, Shape]:
        """Canonical parameter names and shapes, in a fixed order."""
        shapes: dict[str, Shape] = {}
        for info in self.layers():
            shapes.update(info.param_shapes)
        return shapes

    def num_params(self) -> int:
        """Total number of scalar parameters."""
        total = 0
        for shape in self.param_shapes().values():
            n = 1
            for s in shape:
                n *= s
            total += n
        return total


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


@dataclass(frozen=True)
class AdamConfig:
    """Adam as PyTorch and Optax define it: ``p -= lr * m_hat / (sqrt(v_hat) + eps)``.

    Keras' Adam defaults to ``epsilon=1e-7`` and applies it to the
    uncorrected ``v``; a backend translating this must set both right.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; ``None`` fields take the model's defaults."""

    backend: str = "torch"
    model: str = DEFAULT_MODEL
    dataset: str = "mnist"
    epochs: int | None = None
    batch_size: int | None = None
    latent_dim: int | None = None
    lr: float = 1e-3
    seed: int = 0
    binarize: bool = False
    device: str = "auto"
    limit_train: int | None = None
    eval_batch_size: int = 1000
    eval_k: int = 0
    threads: int | None = None
    compile: bool = False
    options: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"

    def resolved(self) -> TrainConfig:
        """A copy with model defaults filled in and every setting checked."""
        defaults = get_model(self.model)
        cfg = dataclasses.replace(
            self,
            model=canonical_model(self.model),
            epochs=defaults.epochs if self.epochs is None else self.epochs,
            batch_size=defaults.batch_size if self.batch_size is None else self.batch_size,
            latent_dim=defaults.spec.latent_dim if self.latent_dim is None else self.latent_dim,
        )
        if cfg.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
        checks = [
            (cfg.epochs >= 0, f"--epochs must be 0 or more, got {cfg.epochs}"),
            (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
            (cfg.latent_dim >= 1, f"--latent-dim must be at least 1, got {cfg.latent_dim}"),
            (math.isfinite(cfg.lr) and cfg.lr > 0, f"--lr must be a positive number, got {cfg.lr}"),
            (cfg.limit_train is None or cfg.limit_train >= 1, "--limit-train must be at least 1"),
            (cfg.eval_batch_size >= 1, "--eval-batch-size must be at least 1"),
            (cfg.eval_k >= 0, "--eval-k must be 0 (no IWAE) or more"),
            (cfg.threads is None or cfg.threads >= 1, "--threads must be at least 1"),
            (cfg.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {cfg.device!r}"),
            (cfg.precision in ("fp32", "tf32"), f"--precision must be fp32 or tf32, got {cfg.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return cfg

    @property
    def spec(self) -> ModelSpec:
        """The model spec at this config's latent size."""
        return get_model(self.model).spec.with_latent(self.latent_dim)

    @property
    def adam(self) -> AdamConfig:
        """The optimiser settings of this run."""
        return AdamConfig(lr=self.lr)

    def to_dict(self) -> dict:
        """JSON-ready form, as stored in ``metrics.json``."""
        return dataclasses.asdict(self)
