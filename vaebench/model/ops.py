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

    def mean_per_example(self, x: Any) -> Any:
        """Mean over the last axis: ``(B, D) -> (B,)`` (the VQ loss's means over pixels and latent entries)."""

    def reshape(self, x: Any, shape: tuple[int, ...]) -> Any:
        """``x`` in ``shape`` (one entry may be ``-1``), the array's element order kept: the IWAE bound's sample axis."""

    def expand_dims(self, x: Any, axis: int) -> Any:
        """``x`` with a new axis of size 1 at ``axis``, to broadcast over the IWAE samples."""

    def logsumexp(self, x: Any) -> Any:
        """``log(sum(exp(x)))`` over the last axis, ``(B, K) -> (B,)``, without overflow: the IWAE bound's sum."""

    def matmul(self, a: Any, b: Any) -> Any:
        """``a @ b`` of two 2-D arrays: the VQ bottleneck's distances to every code, and its one-hot lookup."""

    def transpose(self, x: Any) -> Any:
        """A 2-D array's transpose (the codebook's, for the distances)."""

    def argmin(self, x: Any) -> Any:
        """The index of the smallest entry over the last axis, ``(N, K) -> (N,)`` integers: the nearest code."""

    def one_hot(self, index: Any, n: int) -> Any:
        """``(N,)`` integers as ``(N, n)`` float rows of one 1: the codes' lookup as a matmul, so the codebook's
        gradient is the one every framework's matmul defines (a scatter-add of the rows that chose each code)."""

    def stop_gradient(self, x: Any) -> Any:
        """``x``, with no gradient through it: the straight-through estimator and the VQ loss's two terms."""

    def sigmoid(self, x: Any) -> Any:
        """Elementwise ``1 / (1 + exp(-x))``: the Bernoulli decoder's pixel probabilities."""

    # Optional: ``bce_with_logits(logits, targets)``, a fused kernel of exactly
    # :func:`vaebench.model.loss.bce_with_logits` (elementwise, no clipping).


class LossTerms(NamedTuple):
    """Per-example loss terms in nats, each of shape ``(batch,)``.

    ``neg_elbo = recon + kl``; ``recon`` is ``-log p(x|z)`` summed over pixels.
    """

    neg_elbo: Any
    recon: Any
    kl: Any


class VQTerms(NamedTuple):
    """A VQ-VAE's per-example loss terms, each ``(batch,)``; not nats: it has no likelihood.

    ``loss = recon + vq``. ``recon`` is the reconstruction's mean squared error
    over pixels divided by the quantizer's ``variance`` (keras.io's
    "reconstruction loss"); ``vq`` is the codebook term plus ``beta`` times the
    commitment term, each a mean over the latent map's entries (equal in value,
    apart in gradient: :func:`~vaebench.model.loss.vq_terms`).
    """

    loss: Any
    recon: Any
    vq: Any


class ArrayOps:
    """:class:`Ops` from an array module with NumPy's names (``exp``, ``log1p``, ``abs``, ``mean``, ``sum``, ``amax``,
    ``log``, ``reshape``, ``expand_dims`` or torch's ``unsqueeze``).

    ``relu`` is the framework's own (a fused kernel, the gradient it defines at 0);
    ``sigmoid``, ``one_hot`` and ``stop_gradient`` are the module's where it has
    them; ``overrides`` give the others and replace any primitive, e.g. torch's
    ``flatten`` view or a fused ``bce_with_logits``.
    """

    def __init__(self, xp: Any, relu: Callable[[Any], Any], **overrides: Callable[..., Any]) -> None:
        self.exp, self.log1p, self.abs, self.mean, self.relu = xp.exp, xp.log1p, xp.abs, xp.mean, relu
        self._sum, self._amax, self._log, self.reshape = xp.sum, xp.amax, xp.log, xp.reshape
        self.expand_dims = getattr(xp, "expand_dims", None) or xp.unsqueeze  # torch's name for it
        self.matmul, self._argmin = xp.matmul, xp.argmin
        # where the module has them (keras.ops has all three, torch a sigmoid); a plugin names the rest
        for name in ("sigmoid", "one_hot", "stop_gradient"):
            if hasattr(xp, name):
                setattr(self, name, getattr(xp, name))
        vars(self).update(overrides)

    def argmin(self, x: Any) -> Any:
        """``argmin(x, axis=-1)`` (torch takes NumPy's ``axis`` too)."""
        return self._argmin(x, axis=-1)

    def transpose(self, x: Any) -> Any:
        """``x.T`` (a 2-D array)."""
        return x.T

    def sigmoid(self, x: Any) -> Any:
        """``1 / (1 + exp(-x))``, where the module has no ``sigmoid`` of its own and the plugin gives none."""
        return 1 / (1 + self.exp(-x))

    def logsumexp(self, x: Any) -> Any:
        """``max + log(sum(exp(x - max)))`` over the last axis; summing the kept size-1 axis drops it.

        Written from ``amax``, ``exp``, ``log`` and ``sum``, which every array
        module here has, so no plugin needs a kernel of its own; the shift's
        gradient cancels exactly (``1 - sum(softmax)``), so ``amax`` needs no
        ``stop_gradient``.
        """
        top = self._amax(x, axis=-1, keepdims=True)
        return self._sum(top + self._log(self._sum(self.exp(x - top), axis=-1, keepdims=True)), axis=-1)

    def flatten(self, x: Any) -> Any:
        """``(B, ...) -> (B, D)`` by ``reshape``."""
        return x.reshape(x.shape[0], -1)

    def sum_per_example(self, x: Any) -> Any:
        """``sum(x, axis=-1)``."""
        return self._sum(x, axis=-1)

    def mean_per_example(self, x: Any) -> Any:
        """``mean(x, axis=-1)``."""
        return self.mean(x, axis=-1)
