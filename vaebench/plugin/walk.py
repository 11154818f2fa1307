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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from vaebench.model.layers import Dense, Flatten, LayerInfo, ModelSpec, Reshape
from vaebench.model.loss import PLAIN, Objective, vae_terms
from vaebench.model.ops import LossTerms, Ops

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

    def relu(self, x: Any) -> Any: ...

    def tanh(self, x: Any) -> Any: ...


def _chain(fns: Sequence[Fn], x: Any) -> Any:
    for fn in fns:
        x = fn(x)
    return x


@dataclass
class Network:
    """The VAE as the plugin's callables: trunk, mean and log-variance heads, decoder."""

    trunk: tuple[Fn, ...]
    mean: Fn
    logvar: Fn
    decoder: tuple[Fn, ...]
    #: canonical layer name -> what the plugin's constructor returned, for every layer with weights, in spec order
    built: dict[str, Any] = field(default_factory=dict)
    #: what training minimises (the spec's): :meth:`loss` and :meth:`objective_per_example` apply it
    objective: Objective = PLAIN

    def encode(self, x: Any) -> tuple[Any, Any]:
        """Posterior ``(mean, logvar)`` of images ``x``."""
        h = _chain(self.trunk, x)
        return self.mean(h), self.logvar(h)

    def decode(self, z: Any) -> Any:
        """Logits of latent points ``z``."""
        return _chain(self.decoder, z)

    def terms(self, ops: Ops, x: Any, eps: Any) -> LossTerms:
        """Per-example -ELBO, reconstruction and KL, by the core's one loss."""
        return vae_terms(ops, self.encode, self.decode, x, eps)

    def objective_per_example(self, terms: LossTerms) -> Any:
        """The spec's training objective per example from the loss terms (the -ELBO for the plain VAE)."""
        return self.objective.per_example(terms)

    def loss(self, ops: Ops, x: Any, eps: Any) -> Any:
        """The training objective: the batch mean of the spec's objective (the -ELBO for the plain VAE)."""
        return ops.mean(self.objective.loss_per_example(ops, self.encode, self.decode, x, eps))

    def parameters(self, attributes: tuple[str, str] = PARAMETERS) -> list[tuple[str, Any]]:
        """``(canonical name, parameter)`` for every weight, in spec order: the ``kernel`` and ``bias``
        of each built layer, read as the framework names them (torch: ``("weight", "bias")``)."""
        return [
            (f"{name}/{canonical}", getattr(layer, attribute))
            for name, layer in self.built.items()
            for canonical, attribute in zip(PARAMETERS, attributes, strict=True)
        ]


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
    """``spec`` built from the plugin's constructors, in the spec's order (trunk, heads, decoder)."""
    built: dict[str, Any] = {}
    trunk = tuple(layer(layers, i, built) for i in spec.encoder_layers())
    mean, logvar = (layer(layers, i, built) for i in spec.head_layers())
    decoder = tuple(layer(layers, i, built) for i in spec.decoder_layers())
    return Network(trunk, mean, logvar, decoder, built, spec.objective)
