"""Scoring a model through the contract, written once so every backend is scored alike.

* Test-set -ELBO with its reconstruction and KL split, on the same chunks and
  the same noise for every backend and every epoch.
* Importance-weighted log-likelihood (Burda, Grosse & Salakhutdinov, "Importance
  Weighted Autoencoders", 2015, arXiv:1509.00519, eq. 8):
  ``log p(x) ~= logsumexp_k [log p(x|z_k) + log p(z_k) - log q(z_k|x)] - log k``
  with ``z_k ~ q(z|x)``. A lower bound on ``log p(x)`` for every ``k``, equal in
  expectation to the ELBO at ``k = 1`` and tightening as ``k`` grows; reported
  as NLL (its negation) in nats. ``log p(x|z)`` comes from the backend
  (:meth:`~vaebench.plugin.contract.Model.recon_nll`); the Gaussian terms are analytic.
* Active units (Burda et al., section 5.2): ``A_u = Var_x(E_q[z_u | x])``, unit
  ``u`` active when ``A_u > 0.01``.
* KL per latent dimension, averaged over the test set.
* The latent grid of the source blog: the points every backend decodes.
* A VQ model's (``spec.bottleneck == "vq"``): its loss terms
  (:class:`~vaebench.model.ops.VQTerms`), the codebook's perplexity
  ``exp(-sum_k p_k log p_k)`` over the test set's codes and the fraction of
  codes used, and the bits an image costs, ``codes per image * log2 K``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm

from vaebench.errors import ConfigError
from vaebench.model.batches import eval_batches, to_float
from vaebench.model.layers import ModelSpec
from vaebench.plugin.contract import Model
from vaebench.run.progress import progress as progress_bar
from vaebench.seeding import rng

GRID_SIZE = 20


#: the names of a model's loss terms by its bottleneck, as :meth:`~vaebench.plugin.contract.Model.evaluate` returns them
TERMS = {"gaussian": ("neg_elbo", "recon", "kl"), "vq": ("loss", "recon", "vq")}
#: the test figure a run is judged by, per bottleneck: the -ELBO in nats, or a VQ model's reconstruction loss
HEADLINE = {"gaussian": "test_neg_elbo", "vq": "test_recon"}


def evaluate_split(model: Model, images: np.ndarray, batch_size: int, seed: int) -> dict[str, float]:
    """Mean -ELBO, reconstruction and KL (nats per image) over ``images`` (uint8); a VQ model's
    loss, reconstruction and VQ terms (:data:`TERMS`).

    Accumulated in float64 so a 10k-image mean does not lose float32 digits.
    """
    totals = np.zeros(3)
    for batch in eval_batches(images, batch_size, model.spec.noise_dim, seed):
        terms = model.evaluate(batch.x, batch.eps)
        totals += [np.sum(t, dtype=np.float64) for t in terms]
    mean = totals / len(images)
    return {name: float(value) for name, value in zip(TERMS[model.spec.bottleneck], mean, strict=True)}


def code_statistics(model: Model, images: np.ndarray, batch_size: int) -> dict[str, Any]:
    """A VQ model's use of its codebook over ``images`` (uint8): how often each code is chosen, the perplexity
    ``exp(H)`` of that distribution (``K`` when every code is used equally, 1 when one code is), the fraction of
    codes chosen at least once, and ``bits_per_image = codes per image * log2 K`` (what a code map costs to send).
    ``batch_size`` images go to the backend at a time (the run's ``eval_batch_size``: what bounds memory)."""
    spec = model.spec
    counts = np.zeros(spec.quantizer.codes, np.int64)  # type: ignore[union-attr]
    for start in range(0, len(images), batch_size):
        counts += np.bincount(model.codes(to_float(images[start : start + batch_size])).ravel(), minlength=len(counts))
    return {**code_usage(counts), "bits_per_image": spec.codes_per_image * spec.quantizer.bits}  # type: ignore[union-attr]


def code_usage(counts: np.ndarray) -> dict[str, Any]:
    """How a codebook was used, from how often each code was chosen: the counts, the perplexity ``exp(H(p))`` of
    their distribution ``p`` (natural log; codes never chosen add nothing) and the fraction of codes chosen."""
    counts = np.asarray(counts, np.int64)
    p = counts[counts > 0] / counts.sum()
    return {
        "code_counts": counts.tolist(),
        "perplexity": math.exp(-float(np.sum(p * np.log(p)))),
        "codes_used": float(np.mean(counts > 0)),
    }


def reconstruct(model: Model, x: np.ndarray) -> np.ndarray:
    """Images through the model and back, pixel space: the decoded posterior means, or a VQ model's decoded codes
    (its codebook rows at :meth:`~vaebench.plugin.contract.Model.codes`, read from the canonical weights)."""
    if model.spec.quantizer is None:
        return model.decode(model.encode(x)[0])
    return model.decode(model.export_weights()["quantizer/codebook"][model.codes(x)])


def decode_points(spec: ModelSpec, seed: int) -> np.ndarray:
    """Latents every backend decodes alike: the blog's grid (:func:`grid_points`), or for a VQ model 400 maps of
    standard-normal entries scaled to the codebook's initial range (any map is a valid input of its decoder)."""
    if spec.quantizer is None:
        return grid_points(spec.latent_dim, seed)
    return 0.05 * rng(seed, "grid").standard_normal((GRID_SIZE * GRID_SIZE, *spec.latent_shape), dtype=np.float32)


def grid_points(latent_dim: int, seed: int, n: int = GRID_SIZE) -> np.ndarray:
    """The ``n*n`` latent points to decode, row-major from the top-left cell, float32 ``(n*n, d)``.

    For a 2-D latent, the source blog's grid: both axes at
    ``norm.ppf(linspace(0.01, 0.99, n))`` (equal prior mass between lines), with
    ``z[0]`` growing to the right and ``z[1]`` growing upwards. For larger
    latents, ``n*n`` draws from the prior N(0, I) of stream ``"grid"``.
    """
    if latent_dim == 2:
        axis = norm.ppf(np.linspace(0.01, 0.99, n))
        z1, z0 = np.meshgrid(axis[::-1], axis, indexing="ij")
        return np.stack([z0.ravel(), z1.ravel()], axis=1).astype(np.float32)
    return rng(seed, "grid").standard_normal((n * n, latent_dim), dtype=np.float32)


LOG_2PI = math.log(2 * math.pi)
ACTIVE_THRESHOLD = 0.01
DEFAULT_ROWS = 4096  # samples per backend call: bounds memory (see iwae_nll)


def iwae_nll(
    model: Model,
    images: np.ndarray,
    k: int,
    seed: int,
    rows: int = DEFAULT_ROWS,
    progress: bool = False,
    tick: Callable[[], None] | None = None,
) -> np.ndarray:
    """Per-image importance-weighted NLL in nats (float64), ``k`` samples each.

    Memory is bounded by ``rows``: each backend call decodes at most ``rows``
    latent samples against as many copies of their images, so the host holds
    at most ``rows * 784 * 4`` bytes of images (12.8 MB at 4096) plus the
    backend's activations for one such batch, and ``k`` float64 log-weights per
    image of the chunk in flight. Every call has the same number of rows (the
    last one padded), so a compiling backend compiles once. ``tick`` is called
    between chunks and may raise to stop (the runner's signal check).
    """
    noise = rng(seed, "iwae", k)
    d = model.spec.latent_dim
    per_chunk = max(1, rows // k)  # images whose k samples fit one call
    # rows per call: whole images' samples when k <= rows, else k split into equal blocks (5000 -> 2 x 2500)
    call = per_chunk * k if k <= rows else -(-k // -(-k // rows))
    out = np.empty(len(images))
    bar = progress_bar(len(images), f"IWAE k={k}", "image", enabled=progress)
    for start in range(0, len(images), per_chunk):
        if tick:
            tick()
        x = to_float(images[start : start + per_chunk])
        mean, logvar = (a.astype(np.float64) for a in model.encode(x))
        std = np.exp(0.5 * logvar)
        eps = noise.standard_normal((len(x), k, d))
        z = mean[:, None] + std[:, None] * eps
        log_pz = -0.5 * np.sum(z**2 + LOG_2PI, axis=-1)
        log_qz = -0.5 * np.sum(eps**2 + logvar[:, None] + LOG_2PI, axis=-1)
        flat_z = z.reshape(-1, d).astype(np.float32)
        owners = np.repeat(np.arange(len(x)), k)
        nll = np.empty(len(flat_z))
        for lo in range(0, len(flat_z), call):
            idx = np.arange(lo, lo + call) % len(flat_z)  # pad the last chunk by wrapping: one call shape
            got = model.recon_nll(x[owners[idx]], flat_z[idx])
            n = min(call, len(flat_z) - lo)
            nll[lo : lo + n] = got[:n]
        log_w = -nll.reshape(len(x), k) + log_pz - log_qz
        out[start : start + len(x)] = -(logsumexp(log_w, axis=1) - math.log(k))
        bar.update(len(x))
    bar.close()
    return out


def latent_statistics(model: Model, images: np.ndarray, batch_size: int) -> dict[str, Any]:
    """Active units and KL per dimension over ``images`` (uint8), from the posterior means and variances, encoded
    ``batch_size`` images at a time."""
    means, logvars = [], []
    for start in range(0, len(images), batch_size):
        mean, logvar = model.encode(to_float(images[start : start + batch_size]))
        means.append(mean.astype(np.float64))
        logvars.append(logvar.astype(np.float64))
    mean, logvar = np.concatenate(means), np.concatenate(logvars)
    variances = mean.var(axis=0)
    kl = 0.5 * (mean**2 + np.exp(logvar) - 1.0 - logvar)
    return {
        "active_units": int(np.sum(variances > ACTIVE_THRESHOLD)),
        "active_threshold": ACTIVE_THRESHOLD,
        "au_variances": variances.tolist(),
        "kl_per_dim": kl.mean(axis=0).tolist(),
    }


def full_evaluation(
    model: Model,
    test_images: np.ndarray,
    k: int,
    seed: int,
    batch_size: int,
    progress: bool = False,
    log: Any = None,
    tick: Callable[[], None] | None = None,
    train_images: np.ndarray | None = None,
) -> dict[str, Any]:
    """Test -ELBO (with its split), IWAE NLL at ``k``, active units and KL per dimension.

    ``test_images`` are uint8, already binarised (:func:`vaebench.model.batches.binarize_fixed`) for a binarised run.
    A VQ model has no posterior and no likelihood (``k`` must be 0): its loss terms, its codebook's use
    (:func:`code_statistics`) and, given ``train_images``, its reconstruction loss on them, ``train_recon``: the
    figure keras.io's VQ-VAE reports (its last epoch's, on the training set).
    """
    t0 = time.perf_counter()
    result: dict[str, Any] = {f"test_{k}": v for k, v in evaluate_split(model, test_images, batch_size, seed).items()}
    if model.spec.quantizer is not None:  # no posterior, no likelihood: the codebook's use instead
        if k > 0:
            raise ConfigError(f"model {model.spec.name!r} has a vector-quantised bottleneck and no likelihood: use --eval-k 0")
        result.update(code_statistics(model, test_images, batch_size))
        if train_images is not None and len(train_images):
            if log:
                log(f"reconstruction loss on the {len(train_images)} training images")
            result["train_recon"] = evaluate_split(model, train_images, batch_size, seed)["recon"]
        result["seconds"] = time.perf_counter() - t0
        return result
    result.update(latent_statistics(model, test_images, batch_size))
    if k > 0:
        if log:
            log(f"importance-weighted NLL with k={k} on {len(test_images)} test images")
        nll = iwae_nll(model, test_images, k, seed, progress=progress, tick=tick)
        result.update(
            test_nll=float(nll.mean()), test_nll_sem=float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else 0.0
        )
        result["iwae_k"] = k
    result["seconds"] = time.perf_counter() - t0
    return result
