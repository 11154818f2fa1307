"""The VAE objectives, written once on the contract's :class:`~vaebench.model.ops.Ops`.

Every backend calls these inside its own compiled step with its own ``ops``, so
there is one definition of each loss in the suite. References: Kingma & Welling,
"Auto-Encoding Variational Bayes", 2013 (arXiv:1312.6114), Appendix B; Burda,
Grosse & Salakhutdinov, "Importance Weighted Autoencoders", 2015
(arXiv:1509.00519), eq. 8 (:func:`iwae_bound`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vaebench.errors import ConfigError
from vaebench.model.ops import LossTerms, Ops, VQTerms

if TYPE_CHECKING:
    from vaebench.model.layers import Quantizer

#: the training objectives the suite defines (``vaebench run --objective``)
OBJECTIVES = ("vae", "beta-vae", "iwae")
#: the most IWAE samples per image: the decoder runs on batch * K latents, past this no batch of images fits in memory
MAX_SAMPLES = 10_000
#: the backend's encoder as the objectives call it: ``encode(x) -> (mean, logvar)``
Encode = Callable[[Any], tuple[Any, Any]]
#: the backend's decoder as the objectives call it: ``decode(z) -> logits``
Decode = Callable[[Any], Any]


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
    return _bce_formula(ops, logits, targets)


def _bce_formula(ops: Ops, logits: Any, targets: Any) -> Any:
    """:func:`bce_with_logits` written out, never fused: ``targets`` may broadcast against ``logits``."""
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


def vae_terms(ops: Ops, encode: Encode, decode: Decode, x: Any, eps: Any) -> LossTerms:
    """The whole forward pass of a VAE on framework arrays: encode, sample, decode, loss.

    ``encode(x) -> (mean, logvar)`` and ``decode(z) -> logits`` are the
    backend's networks; the training objective is ``ops.mean(result.neg_elbo)``.
    """
    mean, logvar = encode(x)
    logits = decode(reparameterize(ops, mean, logvar, eps))
    return neg_elbo_terms(ops, logits, x, mean, logvar)


def iwae_bound(ops: Ops, encode: Encode, decode: Decode, x: Any, eps: Any) -> Any:
    """The importance-weighted bound per example, ``(batch,)`` nats, with ``K`` samples: ``eps`` is ``(batch, K, d)``.

    Burda et al. 2015, eq. 8: ``log (1/K) sum_k w_k`` with ``w_k = p(x, z_k) / q(z_k | x)`` and
    ``z_k = mean + exp(logvar / 2) * eps_k``. For a Gaussian ``q`` and the N(0, I) prior the
    ``d/2 log 2 pi`` terms cancel and ``(z_k - mean)^2 / var = eps_k^2``, so
    ``log w_k = -recon(x | z_k) - |z_k|^2 / 2 + |eps_k|^2 / 2 + sum(logvar) / 2``. The K
    latents go through the decoder as one ``(batch * K, d)`` batch; the sum over
    samples is a stable :meth:`~vaebench.model.ops.Ops.logsumexp`. The Bernoulli term is
    the formula of :func:`bce_with_logits`, never fused (:func:`_bce_formula`), since its
    targets broadcast over the sample axis (a fused kernel wants equal shapes). At ``K = 1`` this is the
    single-sample ELBO whose expectation is the analytic one of :func:`neg_elbo_terms`.
    """
    mean, logvar = encode(x)
    k, d = eps.shape[-2], eps.shape[-1]
    mean3, logvar3 = ops.expand_dims(mean, 1), ops.expand_dims(logvar, 1)  # (B, 1, d)
    z = mean3 + ops.exp(0.5 * logvar3) * eps  # (B, K, d)
    logits = ops.flatten(decode(ops.reshape(z, (-1, d))))  # (B * K, pixels)
    logits = ops.reshape(logits, (-1, k, logits.shape[-1]))  # (B, K, pixels)
    targets = ops.expand_dims(ops.flatten(x), 1)  # (B, 1, pixels)
    recon = ops.sum_per_example(_bce_formula(ops, logits, targets))
    log_w = 0.5 * ops.sum_per_example(eps * eps + logvar3 - z * z) - recon  # (B, K)
    return ops.logsumexp(log_w) - math.log(k)


#: a VQ model's codebook as the loss reads it: ``codebook(features) -> (K, D)``, the argument only placing the
#: weight in the framework's graph (a Keras functional model wires layers by their inputs)
Codebook = Callable[[Any], Any]
#: what a VQ model's encoder and decoder work in: pixels centred as keras.io's VQ-VAE scales them, ``x/255 - 0.5``
VQ_CENTRE = 0.5


def nearest_codes(ops: Ops, vectors: Any, codebook: Any) -> Any:
    """The index of each row's nearest code, ``(N, D), (K, D) -> (N,)``, by squared Euclidean distance.

    ``argmin_k |v - e_k|^2 = argmin_k (|e_k|^2 - 2 v.e_k)``: one matmul instead
    of an ``(N, K, D)`` difference, and without the ``|v|^2`` every code
    shares (keras.io adds it; it changes no index in exact arithmetic, only
    adds float32 rounding at ``|v|^2``'s scale). A tie goes to the lower index
    (every framework's ``argmin``).
    """
    return ops.argmin(ops.sum_per_example(codebook * codebook) - 2.0 * ops.matmul(vectors, ops.transpose(codebook)))


def vq_terms(
    ops: Ops, encode: Decode, codebook: Codebook, decode: Decode, x: Any, quantizer: Quantizer, dim: int
) -> tuple[VQTerms, Any]:
    """A VQ-VAE's forward pass and loss per example (van den Oord et al. 2017, eq. 3), and the codes it chose.

    ``encode(x - 0.5)`` gives the encoder's map flattened in ``(h, w, c)`` order,
    ``(B, N * dim)``; each of its ``N`` vectors ``v`` is replaced by its nearest
    code ``e`` (:func:`nearest_codes`, looked up as ``one_hot @ codebook``), and
    the decoder reads the straight-through value ``v + sg(e - v)``: ``e`` forward,
    the identity backward, so the reconstruction's gradient reaches the encoder.

    ``quantizer`` (:class:`~vaebench.model.layers.Quantizer`) gives the codes'
    count, ``beta`` and ``variance``; ``dim`` is the codes' length. Per example:

    * ``recon = mean_pixels (decode - (x - 0.5))^2 / variance``;
    * ``vq = mean (e - sg(v))^2 + beta * mean (v - sg(e))^2`` over the ``N * dim``
      entries: the codebook term moves codes to their vectors, the commitment
      term the encoder to its codes.

    Returns the terms and the codes ``(B * N,)``, for perplexity and usage.
    """
    centred = x - VQ_CENTRE
    features = encode(centred)
    vectors = ops.reshape(features, (-1, dim))  # (B * N, D)
    book = codebook(features)
    chosen = nearest_codes(ops, vectors, book)
    quantised = ops.matmul(ops.one_hot(chosen, quantizer.codes), book)
    straight = vectors + ops.stop_gradient(quantised - vectors)
    out = decode(ops.reshape(straight, (-1, features.shape[-1])))
    error = ops.flatten(out) - ops.flatten(centred)
    recon = ops.mean_per_example(error * error) / quantizer.variance
    per_image = (-1, features.shape[-1])
    to_codes = ops.reshape(quantised - ops.stop_gradient(vectors), per_image)
    commit = ops.reshape(vectors - ops.stop_gradient(quantised), per_image)
    vq = ops.mean_per_example(to_codes * to_codes) + quantizer.beta * ops.mean_per_example(commit * commit)
    return VQTerms(recon + vq, recon, vq), chosen


@dataclass(frozen=True)
class Objective:
    """What training minimises per example, as a weighting of the -ELBO's two terms: ``recon + beta * kl``.

    ``vae`` is the -ELBO itself (``beta`` must be 1); ``beta-vae`` weights the KL
    by ``beta`` (Higgins et al., "beta-VAE", ICLR 2017), and ``beta == 1`` is the
    plain VAE again. ``iwae`` is the negative importance-weighted bound with
    ``samples`` (K) latents per image (:func:`iwae_bound`); the core draws its
    noise ``(batch, K, d)`` (:meth:`noise_shape`). It travels on the :class:`~vaebench.model.layers.ModelSpec`
    because the contract's ``Backend.build(spec, adam)`` takes nothing else: so
    every plugin that trains on :meth:`vaebench.plugin.walk.Network.loss` gets it
    with no code of its own. Evaluation never uses it: a run's test -ELBO is
    always the plain bound (``LossTerms.neg_elbo``), so runs trained on different
    objectives stay comparable on one number.
    """

    name: str = "vae"
    beta: float = 1.0
    samples: int = 1

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(f"unknown objective {self.name!r}; choose one of {', '.join(OBJECTIVES)}")
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta) or beta < 0:
            raise ConfigError(f"--beta must be a finite number, 0 or more, got {beta}")
        if self.name != "beta-vae" and beta != 1.0:
            raise ConfigError(f"--beta {beta} is the KL weight of --objective beta-vae; --objective {self.name} has beta 1")
        k = self.samples
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_SAMPLES:
            raise ConfigError(f"--iw-samples must be a whole number from 1 to {MAX_SAMPLES}, got {k}")
        if self.name != "iwae" and k != 1:
            raise ConfigError(f"--iw-samples {k} is the sample count of --objective iwae; --objective {self.name} draws 1")

    @property
    def plain(self) -> bool:
        """Whether this is the -ELBO itself (the plain VAE, ``beta == 1``): what training and evaluation share."""
        return self.name != "iwae" and self.beta == 1.0

    def noise_shape(self, latent_dim: int) -> tuple[int, ...]:
        """One image's training noise: ``(latent_dim,)``, or ``(K, latent_dim)`` for the IWAE bound's K samples."""
        return (self.samples, latent_dim) if self.name == "iwae" else (latent_dim,)

    def describe(self) -> str:
        """The objective as a run's log line names it: ``beta-vae (beta 4)``, ``iwae (K=5)``."""
        return f"iwae (K={self.samples})" if self.name == "iwae" else f"{self.name} (beta {self.beta:g})"

    def loss_per_example(self, ops: Ops, encode: Encode, decode: Decode, x: Any, eps: Any) -> Any:
        """What a train step minimises per example, ``(batch,)``, from the networks and the step's noise.

        The one entry point every plugin's loss goes through
        (:meth:`vaebench.plugin.walk.Network.loss`): the weighted -ELBO of
        :meth:`per_example`, or the negative IWAE bound.
        """
        if self.name == "iwae":
            return -iwae_bound(ops, encode, decode, x, eps)
        return self.per_example(vae_terms(ops, encode, decode, x, eps))

    def per_example(self, terms: LossTerms) -> Any:
        """The objective per example, ``(batch,)``, from the -ELBO's terms.

        The plain VAE returns ``terms.neg_elbo`` itself, so its compiled step is
        the graph it always was (bit for bit, resumable from older checkpoints).
        The IWAE bound is not a weighting of these terms (:meth:`loss_per_example`).
        """
        if self.name == "iwae":
            raise ConfigError("the IWAE bound is not a weighting of the -ELBO's terms; use Objective.loss_per_example")
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
    def mean_per_example(x: np.ndarray) -> np.ndarray:
        return x.mean(axis=-1)

    matmul = staticmethod(np.matmul)

    @staticmethod
    def transpose(x: np.ndarray) -> np.ndarray:
        return x.T

    @staticmethod
    def argmin(x: np.ndarray) -> np.ndarray:
        return np.argmin(x, axis=-1)

    @staticmethod
    def one_hot(index: np.ndarray, n: int) -> np.ndarray:
        return np.eye(n)[index]

    @staticmethod
    def stop_gradient(x: np.ndarray) -> np.ndarray:
        return x

    @staticmethod
    def sigmoid(x: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-x))

    @staticmethod
    def mean(x: np.ndarray) -> np.ndarray:
        return np.mean(x)

    reshape = staticmethod(np.reshape)
    expand_dims = staticmethod(np.expand_dims)

    @staticmethod
    def logsumexp(x: np.ndarray) -> np.ndarray:
        top = np.max(x, axis=-1, keepdims=True)
        return (top + np.log(np.sum(np.exp(x - top), axis=-1, keepdims=True)))[..., 0]


numpy_ops = NumpyOps()
