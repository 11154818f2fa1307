"""The backend contract: what a plugin translates, documented once, here.

A plugin provides a :class:`Backend` subclass (registered under the entry-point
group ``vaebench.backends``) whose :meth:`Backend.build` returns a
:class:`Model`. Everything crosses the boundary as NumPy:

* images ``x``: ``(batch, 28, 28, 1)`` float32 in ``[0, 1]`` (channels-last);
* noise ``eps``: ``(batch, latent_dim)`` float32 standard normal, drawn by the
  core so every backend sees the same reparameterisation noise;
* latent points ``z``: ``(n, latent_dim)`` float32;
* parameters: the canonical dict of :mod:`vaebench.model.weights`.

The public methods of :class:`Model` check shapes and dtypes (so a wrong input
is the core's :class:`~vaebench.errors.ShapeError`, never a framework
traceback) and call the ``_``-prefixed hooks a plugin implements. The maths a
plugin runs (reparameterisation, the loss) comes from :mod:`vaebench.model.loss`,
written once on the tiny :class:`Ops` namespace each plugin supplies.
"""

from __future__ import annotations

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
