"""Helpers for testing vaebench and its plugins without the real data set.

``write_idx`` and ``make_tiny_dataset`` write small, valid IDX files so a test
can run the whole pipeline (loader, runner, CLI) in seconds.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from vaebench.io.datasets import FILES


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic ``0x0000 08 ndim``, big-endian dims, payload."""
    array = np.ascontiguousarray(array, np.uint8)
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed unless ``compress=False``)."""
    data = idx_bytes(array)
    Path(path).write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return Path(path)


def make_tiny_dataset(folder: Path, n_train: int = 256, n_test: int = 64, seed: int = 0) -> Path:
    """Write a small MNIST-shaped data set (bright bars on black, 10 classes) into ``folder``.

    Class ``k`` is a bar at a position set by ``k``, so a VAE can learn it in a
    few steps and tests can check that training lowers the loss.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        labels = gen.integers(0, 10, n).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, k in enumerate(labels):
            row = 3 + 2 * int(k)
            images[i, row : row + 3, 4:24] = 255
            images[i] = np.clip(images[i].astype(int) + gen.integers(0, 30, (28, 28)), 0, 255)
        write_idx(folder / f"{FILES[f'{split}_images']}.gz", images)
        write_idx(folder / f"{FILES[f'{split}_labels']}.gz", labels)
    return folder
