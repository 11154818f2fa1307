"""A plain NumPy forward pass of any :class:`ModelSpec`: the suite's ground truth.

Computed in float64 from the canonical weights, with the core's loss on
:data:`~vaebench.loss.numpy_ops`. Backends are checked against it to 1e-4
relative in float32. Slow by design: clarity over speed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vaebench.contract import LossTerms
from vaebench.loss import numpy_ops, reparameterize, vae_terms
from vaebench.loss import recon_nll as loss_recon_nll
from vaebench.spec import Conv2D, Dense, Flatten, LayerInfo, ModelSpec, Reshape


def conv2d(x: np.ndarray, kernel: np.ndarray, stride: int, padding: tuple[int, int]) -> np.ndarray:
    """Cross-correlation of NHWC ``x`` with ``(kh, kw, in, out)`` ``kernel``, padded ``(before, after)``."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), padding, padding, (0, 0)))
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("bhwcij,ijco->bhwo", windows, kernel, optimize=True)


def conv2d_transpose(x: np.ndarray, kernel: np.ndarray, stride: int, padding: tuple[int, int], out: int) -> np.ndarray:
    """The adjoint of :func:`conv2d` (TensorFlow's ``conv2d_transpose``), ``out`` pixels a side.

    ``kernel`` is ``(kh, kw, in, out)`` with ``in`` the channels of ``x``.
    """
    b, h, w, _ = x.shape
    k = kernel.shape[0]
    full = (h - 1) * stride + k
    y = np.zeros((b, full, full, kernel.shape[-1]), dtype=np.result_type(x, kernel))
    for di in range(k):
        for dj in range(k):
            y[:, di : di + (h - 1) * stride + 1 : stride, dj : dj + (w - 1) * stride + 1 : stride] += x @ kernel[di, dj]
    before = padding[0]
    return y[:, before : before + out, before : before + out]


def apply_layer(info: LayerInfo, params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Apply one spec layer (with its activation) to a NumPy batch."""
    layer = info.layer
    if isinstance(layer, Flatten):
        return x.reshape(x.shape[0], -1)
    if isinstance(layer, Reshape):
        return x.reshape(x.shape[0], *layer.shape)
    w, b = params[f"{info.name}/kernel"], params[f"{info.name}/bias"]
    if isinstance(layer, Dense):
        y = x @ w + b
    elif isinstance(layer, Conv2D) and layer.transpose:
        y = conv2d_transpose(x, w, layer.stride, info.padding, info.out_shape[0]) + b
    else:
        y = conv2d(x, w, layer.stride, info.padding) + b
    return np.maximum(y, 0) if layer.activation == "relu" else y


def _chain(layers: list[LayerInfo], params: Mapping[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    for info in layers:
        x = apply_layer(info, params, x)
    return x


def _as64(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64) for k, v in params.items()}


def encode(spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ``(mean, logvar)``, float64 ``(batch, latent_dim)``."""
    p = _as64(params)
    h = _chain(spec.encoder_layers(), p, np.asarray(x, np.float64))
    mean, logvar = (apply_layer(info, p, h) for info in spec.head_layers())
    return mean, logvar


def decode_logits(spec: ModelSpec, params: Mapping[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Decoder logits, float64 ``(n, 28, 28, 1)``."""
    return _chain(spec.decoder_layers(), _as64(params), np.asarray(z, np.float64))


def evaluate(spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray, eps: np.ndarray) -> LossTerms:
    """Per-example -ELBO, reconstruction and KL (float64), by the core's one loss."""
    return vae_terms(
        numpy_ops,
        lambda images: encode(spec, params, images),
        lambda z: decode_logits(spec, params, z),
        np.asarray(x, np.float64),
        np.asarray(eps, np.float64),
    )


def sample_z(spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """The latent sample the loss uses for ``x`` with noise ``eps``."""
    mean, logvar = encode(spec, params, x)
    return reparameterize(numpy_ops, mean, logvar, np.asarray(eps, np.float64))


def recon_nll(spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``-log p(x | z)`` per example (float64), by the core's one loss."""
    return loss_recon_nll(numpy_ops, decode_logits(spec, params, z), np.asarray(x, np.float64))
