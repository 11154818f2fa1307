"""The batch stream every backend receives: float32 images in [0, 1], binarised on request, and the noise.

Images stay uint8 in memory and each batch is converted on its own, so a run never holds the data set as
float32; the order and the noise come from the run's seed (:mod:`vaebench.seeding`), the same in every backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from vaebench.seeding import rng


class Batch(NamedTuple):
    """One step's inputs, exactly as every backend receives them."""

    x: np.ndarray  # (batch, 28, 28, 1) float32 in [0, 1]
    eps: np.ndarray  # (batch, latent_dim) float32 ~ N(0, I); (batch, K, latent_dim) for the IWAE bound's K samples


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 ``(n, 28, 28)`` -> float32 ``(n, 28, 28, 1)`` in [0, 1]."""
    return (images.astype(np.float32) * np.float32(1 / 255)).reshape(*images.shape, 1)


def binarize(x: np.ndarray, generator: np.random.Generator) -> np.ndarray:
    """A Bernoulli draw per pixel with the pixel's intensity as probability."""
    return (generator.random(x.shape, dtype=np.float32) < x).astype(np.float32)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch: the last partial batch is dropped, so every step has one shape."""
    return n // batch_size


def train_batches(
    images: np.ndarray,
    batch_size: int,
    latent_dim: int | tuple[int, ...],
    seed: int,
    epoch: int,
    dynamic_binarize: bool = False,
) -> Iterator[Batch]:
    """The batches of one epoch: a seeded shuffle, optional fresh binarisation, fresh noise.

    Every stream is keyed by ``(seed, epoch)``, so epoch ``e`` is the same
    whichever backend runs it and whether or not earlier epochs ran.
    ``latent_dim`` may be one image's noise shape
    (:meth:`~vaebench.model.loss.Objective.noise_shape`): ``(K, d)`` draws the
    IWAE bound's ``K`` samples per image, ``(batch, K, d)``, from the same
    stream, so ``K = 1`` draws the plain VAE's numbers.
    """
    shape = (latent_dim,) if isinstance(latent_dim, int) else tuple(latent_dim)
    order = rng(seed, "shuffle", epoch).permutation(len(images))
    noise = rng(seed, "eps", epoch)
    coins = rng(seed, "binarize", epoch)
    for step in range(steps_per_epoch(len(images), batch_size)):
        x = to_float(images[order[step * batch_size : (step + 1) * batch_size]])
        if dynamic_binarize:
            x = binarize(x, coins)
        yield Batch(x, noise.standard_normal((batch_size, *shape), dtype=np.float32))


def binarize_fixed(images: np.ndarray, seed: int, chunk: int = 1000) -> np.ndarray:
    """One fixed Bernoulli draw of uint8 ``images``, as uint8 0/255 (the test set under ``--binarize``).

    Done once per run, so every evaluation (-ELBO per epoch, IWAE, every
    backend) scores the same binary images.
    """
    coins = rng(seed, "eval-binarize")
    out = np.empty_like(images)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        out[start : start + chunk] = (coins.random(part.shape, dtype=np.float32) * 255 < part) * np.uint8(255)
    return out


def eval_batches(images: np.ndarray, batch_size: int, latent_dim: int, seed: int) -> Iterator[Batch]:
    """The test set in order, in chunks, with one fixed noise draw per run.

    Fixing the noise makes the per-epoch test -ELBO comparable across epochs
    and identical across backends for identical weights.
    """
    noise = rng(seed, "eval-eps")
    for start in range(0, len(images), batch_size):
        x = to_float(images[start : start + batch_size])
        yield Batch(x, noise.standard_normal((len(x), latent_dim), dtype=np.float32))
