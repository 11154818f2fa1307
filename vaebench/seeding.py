"""Named, independent random streams derived from one run seed.

Every random draw of a run (initial weights, shuffling, binarisation,
reparameterisation noise, evaluation noise) comes from its own stream keyed by
a name, so adding a draw somewhere never shifts the numbers drawn elsewhere,
and every backend receives bit-identical inputs.
"""

from __future__ import annotations

import hashlib

import numpy as np


def _key(part: object) -> int:
    if isinstance(part, int) and part >= 0:
        return part
    digest = hashlib.sha256(str(part).encode()).digest()
    return int.from_bytes(digest[:8], "little")


def rng(seed: int, *stream: object) -> np.random.Generator:
    """A NumPy generator for the stream ``stream`` of run ``seed``.

    ``rng(0, "shuffle", 3)`` and ``rng(0, "shuffle", 4)`` are independent, and
    both are the same on every machine and NumPy version that keeps PCG64.
    """
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([_key(seed), *map(_key, stream)])))
