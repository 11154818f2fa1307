"""Canonical initial weights, made in NumPy so every backend starts identical.

Scheme: Glorot-uniform kernels (Keras' default), zero biases, and a VQ model's
codebook ``U(-0.05, 0.05)`` (:data:`CODEBOOK_LIMIT`, TensorFlow's
``random_uniform_initializer`` default, which keras.io's VQ-VAE uses). For a kernel of
shape ``(..., in, out)`` with receptive field ``r`` (the product of the leading
dimensions), ``limit = sqrt(6 / (r*in + r*out))`` and entries are
``U(-limit, limit)``. PyTorch's own default (Kaiming-uniform with a=sqrt(5)
and non-zero biases) differs; loading these weights neutralises that.

Each parameter has its own random stream keyed by its canonical name, so the
weights of one layer do not depend on which other layers exist.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from vaebench.errors import ShapeError, VaebenchError
from vaebench.io.fileio import atomic_write_bytes, read_npz
from vaebench.model.layers import ModelSpec
from vaebench.seeding import rng

Params = dict[str, np.ndarray]
CANONICAL_DTYPE = np.dtype(np.float32)  # what weights.npz holds, whichever backend trained
CODEBOOK_LIMIT = 0.05  # a VQ codebook's entries start U(-limit, limit): keras.io's VQ-VAE, by TF's default initializer


def glorot_uniform(shape: tuple[int, ...], generator: np.random.Generator) -> np.ndarray:
    """Glorot/Xavier-uniform sample of ``shape`` (last two axes are in, out)."""
    receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
    fan_in, fan_out = receptive * shape[-2], receptive * shape[-1]
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return generator.uniform(-limit, limit, size=shape).astype(np.float32)


def init_params(spec: ModelSpec, seed: int) -> Params:
    """Canonical float32 parameters of ``spec`` for run ``seed``."""
    params: Params = {}
    for name, shape in spec.param_shapes().items():
        if name.endswith("/kernel"):
            params[name] = glorot_uniform(shape, rng(seed, "init", name))
        elif name.endswith("/codebook"):
            params[name] = rng(seed, "init", name).uniform(-CODEBOOK_LIMIT, CODEBOOK_LIMIT, size=shape).astype(np.float32)
        else:
            params[name] = np.zeros(shape, np.float32)
    return params


def check_params(spec: ModelSpec, params: Mapping[str, np.ndarray], source: object = None, fix: str = "") -> None:
    """Raise :class:`ShapeError` unless ``params`` has exactly the spec's names and shapes.

    ``source`` (the file they came from) and ``fix`` go into the message, so a
    user learns which file does not fit, not only which array.
    """
    where = f"{source}: " if source is not None else ""
    tail = f"; {fix}" if fix else ""
    expected = spec.param_shapes()
    missing = sorted(set(expected) - set(params))
    extra = sorted(set(params) - set(expected))
    if missing or extra:
        raise ShapeError(f"{where}weights do not fit model {spec.name!r}: missing {missing[:3]}, unexpected {extra[:3]}{tail}")
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise ShapeError(
                f"{where}weight {name!r} has shape {tuple(params[name].shape)}, model {spec.name!r} needs {shape}{tail}"
            )


def save_params(params: Mapping[str, np.ndarray], path: Path) -> None:
    """Write ``params`` as ``.npz`` atomically (temporary file, fsync, rename)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.asarray(v) for k, v in params.items()})
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_params(path: Path) -> Params:
    """Read canonical parameters written by :func:`save_params`: float32 arrays, every value finite.

    Only the canonical dtype is accepted: float16 weights would be scored as if
    they were the run's, after a silent loss of precision. Non-finite weights
    come from a run that diverged; scoring them would print ``nan`` tables, so
    they are refused here with the file's name.
    """
    fix = "it is not a trained vaebench model; train the run again"
    params = read_npz(Path(path), fix)
    for name, value in params.items():
        if value.dtype != CANONICAL_DTYPE:
            raise VaebenchError(f"{path}: weight {name!r} is {value.dtype}, not {CANONICAL_DTYPE} (vaebench's canonical); {fix}")
        if not np.isfinite(value).all():
            raise VaebenchError(f"{path}: weight {name!r} holds NaN or infinite values (a diverged run?); {fix}")
    return params
