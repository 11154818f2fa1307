"""The walk over a spec, written once: a plugin supplies layer constructors, the core wires the VAE.

Every plugin used to write its own loop over :meth:`ModelSpec.layers` (Flatten,
Reshape, a layer with weights, its activation) and its own encoder, heads and
decoder. Here is the one copy. A plugin gives :func:`network` an object with one
constructor per layer kind (:class:`Layers`), each returning a callable
``x -> y`` in the framework, and its activation functions; it gets back a
:class:`Network` whose ``encode``, ``decode``, ``terms`` and ``loss`` run those
callables in the spec's order. What the constructors return for layers with
weights (a ``torch.nn.Module``, a Keras layer) is kept by canonical layer name,
so the canonical parameter names are mapped here too (:meth:`Network.parameters`).

The walk itself is plain Python: called inside ``jax.jit``, ``torch.compile``
or a Keras functional model it leaves only the framework's ops in the graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vaebench.model.layers import Dense, Flatten, LayerInfo, ModelSpec, Quantizer, Reshape
from vaebench.model.loss import PLAIN, VQ_CENTRE, Objective, nearest_codes, vae_terms, vq_terms
from vaebench.model.ops import LossTerms, Ops, VQTerms

Fn = Callable[[Any], Any]
#: the canonical parameter names of a layer with weights, in this order
PARAMETERS = ("kernel", "bias")


class Layers(Protocol):
    """What a plugin supplies: a constructor per layer kind and an activation per name.

    Each constructor gets the layer in place (:class:`LayerInfo`: shapes, padding,
    crop, its ``key`` for framework names) and returns a callable ``x -> y``
    *without* the activation, which the walk applies with the method named
    after it (``relu``, ``tanh``: :data:`~vaebench.model.layers.ACTIVATIONS`). Paddings are the spec's: a constructor applies
    ``info.padding`` / ``info.crop`` as given and decides none.
    """

    def dense(self, info: LayerInfo) -> Fn: ...

    def conv(self, info: LayerInfo) -> Fn: ...

    def conv_transpose(self, info: LayerInfo) -> Fn: ...

    def flatten(self, info: LayerInfo) -> Fn: ...

    def reshape(self, info: LayerInfo) -> Fn: ...

    def codebook(self, info: LayerInfo) -> Fn:
        """A VQ model's codebook: a callable ``features -> (K, D)`` array (the argument only wires it into the
        graph), whose object holds the weight under the framework's name for a kernel (torch ``weight``)."""
        ...

    def relu(self, x: Any) -> Any: ...

    def tanh(self, x: Any) -> Any: ...


def _chain(fns: Sequence[Fn], x: Any) -> Any:
    for fn in fns:
        x = fn(x)
    return x


@dataclass
class Network:
    """The model as the plugin's callables: trunk, bottleneck, decoder.

    A Gaussian model's bottleneck is its ``mean`` and ``logvar`` heads; a VQ
    model's is its ``codebook`` (``quantizer`` set), its trunk ending in the
    map flattened in ``(h, w, c)`` order and its decoder starting by
    reshaping that back, so the core's :func:`~vaebench.model.loss.vq_terms`
    sees flat vectors in every framework's layout.
    """

    trunk: tuple[Fn, ...]
    mean: Fn | None
    logvar: Fn | None
    decoder: tuple[Fn, ...]
    #: canonical layer name -> what the plugin's constructor returned, for every layer with weights, in spec order
    built: dict[str, Any] = field(default_factory=dict)
    #: what training minimises (the spec's): :meth:`loss` and :meth:`objective_per_example` apply it
    objective: Objective = PLAIN
    codebook: Fn | None = None
    quantizer: Quantizer | None = None
    #: a VQ model's code length (the spec's ``latent_dim``)
    dim: int = 0

    def features(self, x: Any) -> Any:
        """The trunk's output: flat features (a VQ model's map flattened)."""
        return _chain(self.trunk, x)

    def encode(self, x: Any) -> tuple[Any, Any]:
        """Posterior ``(mean, logvar)`` of images ``x``."""
        h = self.features(x)
        return self.mean(h), self.logvar(h)  # type: ignore[misc]

    def decode(self, z: Any) -> Any:
        """Logits of latent points ``z`` (a VQ model's: centred pixels of its flat quantised maps)."""
        return _chain(self.decoder, z)

    def pixels(self, ops: Ops, z: Any) -> Any:
        """Images in ``[0, 1]`` pixel space from latents: a Bernoulli decoder's probabilities, or a VQ decoder's
        centred output moved back (not clipped: the contract's ``decode`` returns the function as computed)."""
        if self.quantizer is not None:
            return self.decode(z) + VQ_CENTRE
        return ops.sigmoid(self.decode(z))

    def vq(self, ops: Ops, x: Any) -> tuple[VQTerms, Any]:
        """A VQ model's loss terms and codes, by the core's one loss."""
        return vq_terms(ops, self.features, self.codebook, self.decode, x, self.quantizer, self.dim)  # type: ignore[arg-type]

    def codes(self, ops: Ops, x: Any) -> Any:
        """The nearest code of every vector of a VQ model's map, ``(B * N,)``, without decoding."""
        features = self.features(x - VQ_CENTRE)
        return nearest_codes(ops, ops.reshape(features, (-1, self.dim)), self.codebook(features))  # type: ignore[misc]

    def terms(self, ops: Ops, x: Any, eps: Any) -> LossTerms | VQTerms:
        """Per-example -ELBO, reconstruction and KL by the core's one loss; a VQ model's :class:`VQTerms`."""
        if self.quantizer is not None:
            return self.vq(ops, x)[0]
        return vae_terms(ops, self.encode, self.decode, x, eps)

    def objective_per_example(self, terms: LossTerms) -> Any:
        """The spec's training objective per example from the loss terms (the -ELBO for the plain VAE)."""
        return self.objective.per_example(terms)

    def loss_per_example(self, ops: Ops, x: Any, eps: Any) -> Any:
        """What a train step minimises per example: the spec's objective, or a VQ model's loss."""
        if self.quantizer is not None:
            return self.vq(ops, x)[0].loss
        return self.objective.loss_per_example(ops, self.encode, self.decode, x, eps)

    def loss(self, ops: Ops, x: Any, eps: Any) -> Any:
        """The training objective: the batch mean of :meth:`loss_per_example` (the -ELBO for the plain VAE)."""
        return ops.mean(self.loss_per_example(ops, x, eps))

    def parameters(self, attributes: tuple[str, str] = PARAMETERS) -> list[tuple[str, Any]]:
        """``(canonical name, parameter)`` for every weight, in spec order: the ``kernel`` and ``bias``
        of each built layer, read as the framework names them (torch: ``("weight", "bias")``); a codebook
        is held as a kernel is (``quantizer/codebook``)."""
        out = []
        for name, layer in self.built.items():
            if name == QUANTIZER:
                out.append((f"{name}/codebook", getattr(layer, attributes[0])))
                continue
            out += [(f"{name}/{c}", getattr(layer, a)) for c, a in zip(PARAMETERS, attributes, strict=True)]
        return out


#: the canonical name of a VQ model's quantizer (:meth:`~vaebench.model.layers.ModelSpec.head_layers`)
QUANTIZER = "quantizer"


def layer(layers: Layers, info: LayerInfo, built: dict[str, Any] | None = None) -> Fn:
    """The callable of one spec layer, activation included; what has weights is recorded in ``built``."""
    spec_layer = info.layer
    if isinstance(spec_layer, Flatten):
        return layers.flatten(info)
    if isinstance(spec_layer, Reshape):
        return layers.reshape(info)
    if isinstance(spec_layer, Dense):
        made = layers.dense(info)
    else:
        made = layers.conv_transpose(info) if spec_layer.transpose else layers.conv(info)
    if built is not None:
        built[info.name] = made
    if spec_layer.activation is None:
        return made
    activation = getattr(layers, spec_layer.activation)
    return lambda x: activation(made(x))


def network(spec: ModelSpec, layers: Layers) -> Network:
    """``spec`` built from the plugin's constructors, in the spec's order (trunk, bottleneck, decoder)."""
    built: dict[str, Any] = {}
    trunk = tuple(layer(layers, i, built) for i in spec.encoder_layers())
    if spec.quantizer is None:
        mean, logvar = (layer(layers, i, built) for i in spec.head_layers())
        decoder = tuple(layer(layers, i, built) for i in spec.decoder_layers())
        return Network(trunk, mean, logvar, decoder, built, spec.objective)
    (info,) = spec.head_layers()
    shape, flat = info.in_shape, (math.prod(info.in_shape),)
    codebook = built[QUANTIZER] = layers.codebook(info)
    to_flat = layers.flatten(LayerInfo(f"{QUANTIZER}/flatten", Flatten(), shape, flat))
    to_map = layers.reshape(LayerInfo(f"{QUANTIZER}/reshape", Reshape(shape), flat, shape))
    decoder = tuple(layer(layers, i, built) for i in spec.decoder_layers())
    return Network(
        (*trunk, to_flat), None, None, (to_map, *decoder), built, spec.objective, codebook, spec.quantizer, spec.latent_dim
    )
