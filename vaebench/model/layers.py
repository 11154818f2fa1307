"""Declarative model specs and run settings: the one place a network is defined.

A backend never decides a layer size, a padding or a flattening order: it walks
:meth:`ModelSpec.layers`, which gives every layer with its static input and
output shapes (always channels-last, ``(height, width, channels)`` or
``(features,)``) and, for convolutions, the exact padding in pixels: the
input padding of a convolution, the crop of a transposed one. A convolution's
``padding`` mode says which rule the spec follows: ``"same"`` is TensorFlow's
(an even-sized stride-2 input is padded asymmetrically, nothing before and one
pixel after, so PyTorch's ``padding=1`` would shift the sampling grid by a
pixel); ``"symmetric"`` is what PyTorch and most hand-written networks compute
natively (``(k-1)//2`` on both sides, and ``ConvTranspose2d(padding=1,
output_padding=1)`` for a stride-2 transposed 3x3). Spelling the numbers out
here keeps every backend on one grid, whichever rule a model uses.

Flattening is in ``(h, w, c)`` order and reshaping fills ``(h, w, c)``, the
Keras convention of the source blog; backends whose tensors are ``NCHW`` must
permute before flattening (a free view on channels-last memory).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from vaebench.errors import ConfigError
from vaebench.model.loss import PLAIN, Objective

Activation = Literal["relu", "tanh"] | None
#: the activations a spec may name; a plugin's ``Layers`` has a function of each name (:mod:`vaebench.plugin.walk`)
ACTIVATIONS: tuple[str, ...] = ("relu", "tanh")
Padding = Literal["same", "symmetric"]
PADDINGS: tuple[Padding, ...] = ("same", "symmetric")
Shape = tuple[int, ...]


@dataclass(frozen=True)
class Dense:
    """Fully connected layer; kernel ``(in, out)``, bias ``(out,)``."""

    units: int
    activation: Activation = None


@dataclass(frozen=True)
class Conv2D:
    """Square convolution that keeps ``ceil(size / stride)`` pixels a side (or multiplies by ``stride``, transposed).

    Kernel ``(kh, kw, in, out)``. With ``transpose=True`` it is the transposed
    convolution (the gradient of a convolution of the same stride and padding
    rule), its kernel still stored ``(kh, kw, in, out)`` where ``in`` is the
    channels it reads, so that all convolution kernels share one canonical layout.
    ``padding`` is the rule the pixels come from (:data:`PADDINGS`, see the module
    docstring); :class:`LayerInfo` carries the resulting numbers.
    """

    filters: int
    kernel: int = 3
    stride: int = 1
    activation: Activation = None
    transpose: bool = False
    padding: Padding = "same"


@dataclass(frozen=True)
class Flatten:
    """``(h, w, c) -> (h*w*c,)`` in row-major ``(h, w, c)`` order."""


@dataclass(frozen=True)
class Reshape:
    """``(n,) -> shape`` filled in ``(h, w, c)`` order."""

    shape: Shape


Layer = Dense | Conv2D | Flatten | Reshape


@dataclass(frozen=True)
class Quantizer:
    """A vector-quantised bottleneck (van den Oord, Vinyals & Kavukcuoglu, "Neural Discrete Representation
    Learning", 2017, arXiv:1711.00937): every ``D``-vector of the encoder's last feature map is replaced by its
    nearest of ``codes`` learned vectors, the codebook ``(codes, D)``.

    ``beta`` weighs the commitment term (the paper's 0.25); ``variance`` divides the reconstruction MSE, as
    keras.io's VQ-VAE divides by the training set's pixel variance (:func:`vaebench.model.loss.vq_terms`).
    Not a layer of the encoder or decoder lists: it sits where a Gaussian VAE's two heads are
    (:meth:`ModelSpec.head_layers`), so a spec says which bottleneck it has by carrying one or not.
    """

    codes: int
    beta: float = 0.25
    variance: float = 1.0

    @property
    def bits(self) -> float:
        """Bits one code carries, ``log2 codes``: an image of ``n`` codes is ``n * bits`` bits."""
        return math.log2(self.codes)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding ``(before, after)`` for one spatial axis.

    ``out = ceil(size / stride)``; ``total = max((out-1)*stride + kernel - size, 0)``;
    ``before = total // 2``. For 28 pixels, kernel 3, stride 2: ``(0, 1)``.
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def symmetric_padding(kernel: int) -> tuple[int, int]:
    """``(k-1)//2`` on both sides: PyTorch's ``Conv2d(padding=1)`` for a 3x3 kernel."""
    return (kernel - 1) // 2, (kernel - 1) // 2


@dataclass(frozen=True)
class LayerInfo:
    """A layer in place: its canonical name, shapes, and the paddings a backend applies.

    Both are ``(before, after)`` per spatial axis (both axes are equal in every
    model here), and a backend uses them as given:

    * ``padding``: a convolution pads its input by it. For a transposed
      convolution it is the padding of the forward convolution it transposes.
    * ``crop``: a transposed convolution computes the full output
      ``(in-1)*stride + kernel`` a side and drops ``crop`` pixels from it,
      keeping ``[before : full - after]`` (``out`` pixels). ``(0, 0)`` otherwise.

    :attr:`dilated_padding` and :attr:`output_padding` are the same crop in the
    two conventions frameworks take.
    """

    name: str
    layer: Layer | Quantizer
    in_shape: Shape
    out_shape: Shape
    padding: tuple[int, int] = (0, 0)
    crop: tuple[int, int] = (0, 0)

    @property
    def dilated_padding(self) -> tuple[int, int]:
        """A transposed convolution as a forward one: the padding of its stride-dilated input
        before a stride-1 convolution with the flipped kernel, ``kernel - 1 - crop`` (XLA's ``conv_transpose``)."""
        k = self.layer.kernel  # type: ignore[union-attr]
        return k - 1 - self.crop[0], k - 1 - self.crop[1]

    @property
    def output_padding(self) -> int | None:
        """PyTorch's and Keras' ``ConvTranspose(padding=crop[0], output_padding=...)`` for this crop, or
        ``None`` when that convention cannot say it (``crop[0] < crop[1]``, or the difference reaches the stride)."""
        extra = self.crop[0] - self.crop[1]
        return extra if 0 <= extra < self.layer.stride else None  # type: ignore[union-attr]

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
        if isinstance(layer, Quantizer):
            return {f"{self.name}/codebook": (layer.codes, self.in_shape[-1])}
        return {}


def _conv_padding(layer: Conv2D, size: int, out: int) -> tuple[int, int]:
    """The input padding of a forward convolution from ``size`` to ``out`` pixels under the layer's rule."""
    if layer.padding == "same":
        return same_padding(size, layer.kernel, layer.stride)
    if layer.padding != "symmetric":
        raise ConfigError(f"Conv2D padding must be one of {', '.join(PADDINGS)}, got {layer.padding!r}")
    pad = symmetric_padding(layer.kernel)
    if (size + sum(pad) - layer.kernel) // layer.stride + 1 != out:
        k, s = layer.kernel, layer.stride
        raise ConfigError(f"symmetric padding of a {k}x{k} stride-{s} conv cannot map {size} to {out}")
    return pad


def _infer(layer: Layer, shape: Shape) -> tuple[Shape, tuple[int, int], tuple[int, int]]:
    """Output shape, padding and crop of ``layer`` on an input of ``shape``."""
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise ConfigError(f"Dense needs a flat input, got {shape}: put a Flatten before it")
        return (layer.units,), (0, 0), (0, 0)
    if isinstance(layer, Flatten):
        n = 1
        for s in shape:
            n *= s
        return (n,), (0, 0), (0, 0)
    if isinstance(layer, Reshape):
        n = 1
        for s in layer.shape:
            n *= s
        if (n,) != tuple(shape):
            raise ConfigError(f"Reshape to {layer.shape} needs {n} features, got {shape}")
        return tuple(layer.shape), (0, 0), (0, 0)
    h, w, _ = shape
    if h != w:
        raise ConfigError("only square feature maps are supported")
    if layer.transpose:
        out = h * layer.stride
        pad = _conv_padding(layer, out, h)
        full = (h - 1) * layer.stride + layer.kernel
        if full - pad[0] < out:
            raise ConfigError(f"a transposed {layer.kernel}x{layer.kernel} stride-{layer.stride} conv cannot make {out} pixels")
        return (out, out, layer.filters), pad, (pad[0], full - pad[0] - out)
    out = -(-h // layer.stride)
    return (out, out, layer.filters), _conv_padding(layer, h, out), (0, 0)


@dataclass(frozen=True)
class ModelSpec:
    """A VAE: encoder trunk, its bottleneck, decoder, and the objective it trains on.

    The bottleneck is what the model says it has (:attr:`bottleneck`), so no
    consumer tests a model's name:

    * ``gaussian`` (``quantizer`` is ``None``): the trunk maps the image
      ``input_shape`` to flat features; two Dense heads ``encoder/mean`` and
      ``encoder/logvar`` map those to ``latent_dim``; the decoder maps
      ``(latent_dim,)`` back to logits of ``input_shape``.
    * ``vq`` (a :class:`Quantizer`): the trunk ends in a feature map of
      ``latent_dim`` channels, each of its vectors is replaced by its nearest
      code (``quantizer/codebook``), and the decoder maps that map
      (:attr:`latent_shape`) back to the image, in the centred pixel space
      ``x - 0.5`` (:func:`vaebench.model.loss.vq_terms`).

    ``objective`` (:class:`~vaebench.model.loss.Objective`, the plain -ELBO by
    default) is what a Gaussian model's train step minimises; it changes no
    layer or parameter. A VQ model trains on its own loss and takes only the plain one.
    """

    name: str
    encoder: tuple[Layer, ...]
    decoder: tuple[Layer, ...]
    latent_dim: int
    input_shape: Shape = (28, 28, 1)
    source: str = ""
    objective: Objective = PLAIN
    quantizer: Quantizer | None = None

    def __post_init__(self) -> None:
        for layer in (*self.encoder, *self.decoder):
            activation = getattr(layer, "activation", None)
            if activation is not None and activation not in ACTIVATIONS:
                raise ConfigError(f"unknown activation {activation!r}; a spec may use {', '.join(ACTIVATIONS)}")
        if self.quantizer is not None and self.objective != PLAIN:
            raise ConfigError(f"model {self.name!r} has a vector-quantised bottleneck: it trains on its own loss, no --objective")

    @property
    def bottleneck(self) -> Literal["gaussian", "vq"]:
        """What sits between encoder and decoder: a Gaussian posterior (``gaussian``) or a codebook (``vq``)."""
        return "gaussian" if self.quantizer is None else "vq"

    @property
    def latent_shape(self) -> Shape:
        """One image's latent as the decoder reads it (channels-last): ``(latent_dim,)``, or the quantised map."""
        if self.quantizer is None:
            return (self.latent_dim,)
        return self._trunk_map()

    @property
    def noise_shape(self) -> Shape:
        """One training image's noise: the objective's (:meth:`~vaebench.model.loss.Objective.noise_shape`), or
        ``(0,)`` for a VQ model, which draws none (its arrays stay in the contract, empty)."""
        return (0,) if self.quantizer is not None else self.objective.noise_shape(self.latent_dim)

    @property
    def noise_dim(self) -> int:
        """One image's evaluation noise: ``latent_dim`` numbers, or none for a VQ model."""
        return 0 if self.quantizer is not None else self.latent_dim

    @property
    def codes_per_image(self) -> int:
        """How many codes a VQ model spends on one image (the quantised map's positions); 0 for a Gaussian one."""
        return 0 if self.quantizer is None else self._trunk_map()[0] * self._trunk_map()[1]

    def _trunk_map(self) -> Shape:
        shape = tuple(self.encoder_layers()[-1].out_shape) if self.encoder else tuple(self.input_shape)
        if len(shape) != 3 or shape[-1] != self.latent_dim:
            raise ConfigError(
                f"model {self.name!r}: a vector-quantised encoder must end in a feature map of latent_dim = "
                f"{self.latent_dim} channels, got {shape}"
            )
        return shape

    def with_latent(self, latent_dim: int | None) -> ModelSpec:
        """The same network with another latent size (``None`` keeps it)."""
        if latent_dim is None:
            return self
        return dataclasses.replace(self, latent_dim=latent_dim)

    def with_objective(self, objective: Objective) -> ModelSpec:
        """The same network trained on another objective."""
        return dataclasses.replace(self, objective=objective)

    def _walk(self, prefix: str, layers: tuple[Layer, ...], shape: Shape) -> Iterator[LayerInfo]:
        for i, layer in enumerate(layers):
            out, pad, crop = _infer(layer, shape)
            yield LayerInfo(f"{prefix}/{i}", layer, shape, out, pad, crop)
            shape = out

    def encoder_layers(self) -> list[LayerInfo]:
        """The encoder trunk, in order, ending in a flat feature vector."""
        return list(self._walk("encoder", self.encoder, self.input_shape))

    def head_layers(self) -> list[LayerInfo]:
        """The mean and log-variance heads (both read the trunk's features), or the VQ model's quantizer."""
        if self.quantizer is not None:
            shape = self._trunk_map()
            return [LayerInfo("quantizer", self.quantizer, shape, shape)]
        trunk = self.encoder_layers()
        features = trunk[-1].out_shape if trunk else self.input_shape
        head = Dense(self.latent_dim)
        return [LayerInfo(f"encoder/{n}", head, features, (self.latent_dim,)) for n in ("mean", "logvar")]

    def decoder_layers(self) -> list[LayerInfo]:
        """The decoder, in order, ending in logits of ``input_shape`` (a VQ model's: centred pixels)."""
        layers = list(self._walk("decoder", self.decoder, self.latent_shape))
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
