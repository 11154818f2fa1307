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
from collections.abc import Iterator
from dataclasses import dataclass
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
