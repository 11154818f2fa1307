"""The array primitives the core's maths is written in (:class:`Ops`), and the loss terms it returns.

:mod:`vaebench.model.loss` computes the VAE objective on an :class:`Ops` a plugin
supplies, so the loss is defined once in the suite. :class:`ArrayOps` builds one
from any array module that uses NumPy's names (``torch``, ``jax.numpy``,
``keras.ops``), so a plugin states only what its framework does differently.

Why not the Python array API (``array-api-compat``): it would replace three
short tables with a dependency, and not even those: it has no ``relu`` (the
frameworks' own ``relu`` kernels are what the compiled steps fuse today; a
``maximum(x, 0)`` is another op, with another gradient at 0 in JAX), no fused
BCE, and ``keras.ops`` is outside it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol


class Ops(Protocol):
    """The array primitives :mod:`vaebench.model.loss` is written in.

    Arithmetic operators (``+ - * /``, unary ``-``, scalars on either side)
    must work on the framework's arrays; everything else the core needs is here.
    """

    def exp(self, x: Any) -> Any:
        """Elementwise ``e**x``."""

    def log1p(self, x: Any) -> Any:
        """Elementwise ``log(1 + x)``, accurate for small ``x``."""

    def abs(self, x: Any) -> Any:
        """Elementwise ``|x|``."""

    def relu(self, x: Any) -> Any:
        """Elementwise ``max(x, 0)``."""

    def flatten(self, x: Any) -> Any:
        """``(B, ...) -> (B, D)`` in the array's own element order (a view where possible)."""

    def sum_per_example(self, x: Any) -> Any:
        """Sum over the last axis: ``(B, D) -> (B,)``."""

    def mean(self, x: Any) -> Any:
        """Mean of all entries, a scalar."""

    # Optional: ``bce_with_logits(logits, targets)``, a fused kernel of exactly
    # :func:`vaebench.model.loss.bce_with_logits` (elementwise, no clipping).


class LossTerms(NamedTuple):
    """Per-example loss terms in nats, each of shape ``(batch,)``.

    ``neg_elbo = recon + kl``; ``recon`` is ``-log p(x|z)`` summed over pixels.
    """

    neg_elbo: Any
    recon: Any
    kl: Any


class ArrayOps:
    """:class:`Ops` from an array module with NumPy's names (``exp``, ``log1p``, ``abs``, ``mean``, ``sum``).

    ``relu`` is the framework's own (a fused kernel, the gradient it defines at 0);
    ``overrides`` replace any other primitive, e.g. torch's ``flatten`` view or a
    fused ``bce_with_logits``.
    """

    def __init__(self, xp: Any, relu: Callable[[Any], Any], **overrides: Callable[..., Any]) -> None:
        self.exp, self.log1p, self.abs, self.mean, self.relu = xp.exp, xp.log1p, xp.abs, xp.mean, relu
        self._sum = xp.sum
        vars(self).update(overrides)

    def flatten(self, x: Any) -> Any:
        """``(B, ...) -> (B, D)`` by ``reshape``."""
        return x.reshape(x.shape[0], -1)

    def sum_per_example(self, x: Any) -> Any:
        """``sum(x, axis=-1)``."""
        return self._sum(x, axis=-1)
