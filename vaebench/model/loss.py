"""The VAE objective, written once on the contract's :class:`~vaebench.model.ops.Ops`.

Every backend calls these inside its own compiled step with its own ``ops``, so
there is one definition of the loss in the suite. References: Kingma & Welling,
"Auto-Encoding Variational Bayes", 2013 (arXiv:1312.6114), Appendix B.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaebench.errors import ConfigError
from vaebench.model.ops import LossTerms, Ops

#: the training objectives the suite defines (``vaebench run --objective``)
OBJECTIVES = ("vae", "beta-vae")


def bce_with_logits(ops: Ops, logits: Any, targets: Any) -> Any:
    """Elementwise ``-log Bernoulli(targets | sigmoid(logits))``, same shape as ``logits``.

    ``max(l, 0) - l * t + log1p(exp(-|l|))``: exact for any target in [0, 1]
    (intensities as well as binary pixels) and overflow-free for any logit.
    Frameworks that clip probabilities (Keras' ``binary_crossentropy`` clips to
    ``[1e-7, 1 - 1e-7]``) differ from this by up to ~16 nats per pixel on
    confident wrong pixels, which is why no backend uses its framework's
    clipping BCE. An ``ops`` may supply ``bce_with_logits`` as one fused kernel
    of this same formula (PyTorch's ``binary_cross_entropy_with_logits`` with
    ``reduction="none"`` is one); the conformance kit holds it to the reference.
    """
    fused = getattr(ops, "bce_with_logits", None)
    if fused is not None:
        return fused(logits, targets)
    return ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))


def gaussian_kl(ops: Ops, mean: Any, logvar: Any) -> Any:
    """``KL(N(mean, exp(logvar)) || N(0, I))`` per example, ``(batch, d) -> (batch,)``.

    ``-0.5 * sum_j (1 + logvar_j - mean_j**2 - exp(logvar_j))``.
    """
    return -0.5 * ops.sum_per_example(1.0 + logvar - mean * mean - ops.exp(logvar))


def reparameterize(ops: Ops, mean: Any, logvar: Any, eps: Any) -> Any:
    """``z = mean + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` given; all ``(batch, d)``."""
    return mean + ops.exp(0.5 * logvar) * eps


def neg_elbo_terms(ops: Ops, logits: Any, targets: Any, mean: Any, logvar: Any) -> LossTerms:
    """Per-example -ELBO in nats and its two parts, each ``(batch,)``.

    ``recon = sum_pixels bce_with_logits(logits, targets)`` (a single-sample
    estimate of ``-E_q[log p(x|z)]``), ``kl = gaussian_kl(mean, logvar)``,
    ``neg_elbo = recon + kl``. ``logits`` and ``targets`` share a shape, in
    whatever layout the backend keeps images.
    """
    recon = recon_nll(ops, logits, targets)
    kl = gaussian_kl(ops, mean, logvar)
    return LossTerms(recon + kl, recon, kl)


def recon_nll(ops: Ops, logits: Any, targets: Any) -> Any:
    """``-log p(x | z)`` in nats per example, ``(batch,)``: the BCE summed over pixels.

    ``logits`` and ``targets`` share a shape; both are flattened to
    ``(batch, pixels)`` first, since XLA's CPU code for a reduction over
    ``(28, 28, 1)`` trailing axes made a whole ``mlp`` train step 30% slower.
    """
    return ops.sum_per_example(bce_with_logits(ops, ops.flatten(logits), ops.flatten(targets)))


def vae_terms(
    ops: Ops,
    encode: Callable[[Any], tuple[Any, Any]],
    decode: Callable[[Any], Any],
    x: Any,
    eps: Any,
) -> LossTerms:
    """The whole forward pass of a VAE on framework arrays: encode, sample, decode, loss.

    ``encode(x) -> (mean, logvar)`` and ``decode(z) -> logits`` are the
    backend's networks; the training objective is ``ops.mean(result.neg_elbo)``.
    """
    mean, logvar = encode(x)
    logits = decode(reparameterize(ops, mean, logvar, eps))
    return neg_elbo_terms(ops, logits, x, mean, logvar)


@dataclass(frozen=True)
class Objective:
    """What training minimises per example, as a weighting of the -ELBO's two terms: ``recon + beta * kl``.

    ``vae`` is the -ELBO itself (``beta`` must be 1); ``beta-vae`` weights the KL
    by ``beta`` (Higgins et al., "beta-VAE", ICLR 2017), and ``beta == 1`` is the
    plain VAE again. It travels on the :class:`~vaebench.model.layers.ModelSpec`
    because the contract's ``Backend.build(spec, adam)`` takes nothing else: so
    every plugin that trains on :meth:`vaebench.plugin.walk.Network.loss` gets it
    with no code of its own. Evaluation never uses it: a run's test -ELBO is
    always the plain bound (``LossTerms.neg_elbo``), so runs trained on different
    objectives stay comparable on one number.
    """

    name: str = "vae"
    beta: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.name!r}; choose one of {', '.join(OBJECTIVES)}")
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
            raise ConfigError(f"--beta must be a finite number, 0 or more, got {beta}")
        if self.name == "vae" and beta != 1.0:
            raise ConfigError(f"--beta {beta} is the KL weight of --objective beta-vae; --objective vae has beta 1")

    @property
    def plain(self) -> bool:
        """Whether this is the -ELBO itself (the plain VAE, ``beta == 1``): what training and evaluation share."""
        return self.beta == 1.0

    def per_example(self, terms: LossTerms) -> Any:
        """The objective per example, ``(batch,)``, from the -ELBO's terms.

        The plain VAE returns ``terms.neg_elbo`` itself, so its compiled step is
        the graph it always was (bit for bit, resumable from older checkpoints).
        """
        return terms.neg_elbo if self.plain else terms.recon + self.beta * terms.kl


PLAIN = Objective()
"""The plain VAE's objective, the -ELBO: every spec's default."""


class NumpyOps:
    """:class:`~vaebench.model.ops.Ops` for NumPy: the reference implementation."""

    exp = staticmethod(np.exp)
    log1p = staticmethod(np.log1p)
    abs = staticmethod(np.abs)

    @staticmethod
    def relu(x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0)

    @staticmethod
    def flatten(x: np.ndarray) -> np.ndarray:
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def sum_per_example(x: np.ndarray) -> np.ndarray:
        return x.sum(axis=-1)

    @staticmethod
    def mean(x: np.ndarray) -> np.ndarray:
        return np.mean(x)


numpy_ops = NumpyOps()
