"""Evaluation through the contract: test-set -ELBO and the latent grid.

Written once here so every backend is evaluated on the same chunks, the same
noise and the same latent points.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from vaebench.contract import Model
from vaebench.data import eval_batches
from vaebench.seeding import rng

GRID_SIZE = 20


def evaluate_split(model: Model, images: np.ndarray, batch_size: int, seed: int) -> dict[str, float]:
    """Mean -ELBO, reconstruction and KL (nats per image) over ``images`` (uint8).

    Accumulated in float64 so a 10k-image mean does not lose float32 digits.
    """
    totals = np.zeros(3)
    for batch in eval_batches(images, batch_size, model.spec.latent_dim, seed):
        terms = model.evaluate(batch.x, batch.eps)
        totals += [np.sum(t, dtype=np.float64) for t in terms]
    mean = totals / len(images)
    return {"neg_elbo": float(mean[0]), "recon": float(mean[1]), "kl": float(mean[2])}


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
