"""A plain NumPy forward pass of any :class:`ModelSpec`: the suite's ground truth.

Computed in float64 from the canonical weights, with the core's loss on
:data:`~vaebench.model.loss.numpy_ops`. Backends are checked against it to 1e-4
relative in float32. Slow by design: clarity over speed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from vaebench.model.layers import Conv2D, Dense, Flatten, LayerInfo, ModelSpec, Reshape
from vaebench.model.loss import VQ_CENTRE, bce_with_logits, iwae_bound, numpy_ops, vae_terms, vq_terms
from vaebench.model.loss import recon_nll as loss_recon_nll
from vaebench.model.ops import LossTerms, VQTerms


def conv2d(x: np.ndarray, kernel: np.ndarray, stride: int, padding: tuple[int, int]) -> np.ndarray:
    """Cross-correlation of NHWC ``x`` with ``(kh, kw, in, out)`` ``kernel``, padded ``(before, after)``."""
    k = kernel.shape[0]
    xp = np.pad(x, ((0, 0), padding, padding, (0, 0)))
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("bhwcij,ijco->bhwo", windows, kernel, optimize=True)


def conv2d_transpose(x: np.ndarray, kernel: np.ndarray, stride: int, crop: tuple[int, int], out: int) -> np.ndarray:
    """The adjoint of :func:`conv2d` (TensorFlow's ``conv2d_transpose``), ``out`` pixels a side.

    ``kernel`` is ``(kh, kw, in, out)`` with ``in`` the channels of ``x``. The full
    ``(h-1)*stride + k`` output loses ``crop[0]`` pixels before; ``out`` are kept
    (so ``crop[1]`` after, :attr:`~vaebench.model.layers.LayerInfo.crop`).
    """
    b, h, w, _ = x.shape
    k = kernel.shape[0]
    full = (h - 1) * stride + k
    y = np.zeros((b, full, full, kernel.shape[-1]), dtype=np.result_type(x, kernel))
    for di in range(k):
        for dj in range(k):
            y[:, di : di + (h - 1) * stride + 1 : stride, dj : dj + (w - 1) * stride + 1 : stride] += x @ kernel[di, dj]
    before = crop[0]
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
        y = conv2d_transpose(x, w, layer.stride, info.crop, info.out_shape[0]) + b
    else:
        y = conv2d(x, w, layer.stride, info.padding) + b
    return activate(layer.activation, y)


def activate(activation: str | None, y: np.ndarray) -> np.ndarray:
    """A spec activation (:data:`~vaebench.model.layers.ACTIVATIONS`) applied to a layer's output."""
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "tanh":
        return np.tanh(y)
    return y


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


def decode_pixels(spec: ModelSpec, params: Mapping[str, np.ndarray], z: np.ndarray) -> np.ndarray:
    """Decoded images in pixel space, float64: ``sigmoid(logits)``, or a VQ decoder's output plus the centre.

    ``z`` is ``(n, latent_dim)``, or a VQ model's quantised maps flat or in ``latent_shape``.
    """
    if spec.quantizer is not None:
        return decode_logits(spec, params, np.reshape(z, (len(z), *spec.latent_shape))) + VQ_CENTRE
    return 1 / (1 + np.exp(-decode_logits(spec, params, z)))


def evaluate(spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray, eps: np.ndarray) -> LossTerms:
    """Per-example -ELBO, reconstruction and KL (float64), by the core's one loss."""
    return vae_terms(
        numpy_ops,
        lambda images: encode(spec, params, images),
        lambda z: decode_logits(spec, params, z),
        np.asarray(x, np.float64),
        np.asarray(eps, np.float64),
    )


def vq_evaluate(spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray) -> tuple[VQTerms, np.ndarray]:
    """A VQ model's per-example loss terms (float64) and its codes ``(batch, h, w)``, by the core's one loss."""
    p = _as64(params)
    shape = spec.latent_shape
    terms, codes = vq_terms(
        numpy_ops,
        lambda images: _chain(spec.encoder_layers(), p, images).reshape(len(images), -1),
        lambda _: p["quantizer/codebook"],
        lambda flat: _chain(spec.decoder_layers(), p, flat.reshape(-1, *shape)),
        np.asarray(x, np.float64),
        spec.quantizer,
        spec.latent_dim,
    )
    return terms, codes.reshape(len(x), *shape[:-1])


def recon_nll(spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``-log p(x | z)`` per example (float64), by the core's one loss."""
    return loss_recon_nll(numpy_ops, decode_logits(spec, params, z), np.asarray(x, np.float64))


# -- gradients and one Adam step: the reference the conformance kit checks a train step against --


def _layer_backward(
    info: LayerInfo, params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray, dy: np.ndarray, grads: dict[str, np.ndarray]
) -> np.ndarray:
    """Backpropagate ``dy`` (gradient w.r.t. the layer's output ``y``) through one layer; returns dx."""
    layer = info.layer
    if isinstance(layer, (Flatten, Reshape)):
        return dy.reshape(x.shape)
    if layer.activation == "relu":
        dy = dy * (y > 0)
    elif layer.activation == "tanh":
        dy = dy * (1 - y * y)  # tanh' = 1 - tanh^2, from the output kept
    w = params[f"{info.name}/kernel"]
    grads[f"{info.name}/bias"] = dy.reshape(-1, dy.shape[-1]).sum(axis=0)
    if isinstance(layer, Dense):
        grads[f"{info.name}/kernel"] = x.T @ dy
        return dy @ w.T
    k, s, pad = layer.kernel, layer.stride, info.padding
    if layer.transpose:
        # y = crop(full); dfull = dy padded back by the crop; dW[di,dj,c,o] = sum x[b,i,j,c] * dfull[b, i*s+di, j*s+dj, o];
        # dx = the stride-s correlation of dfull with W^T
        dfull = np.pad(dy, ((0, 0), info.crop, info.crop, (0, 0)))
        windows = sliding_window_view(dfull, (k, k), axis=(1, 2))[:, ::s, ::s]
        grads[f"{info.name}/kernel"] = np.einsum("bhwc,bhwoij->ijco", x, windows, optimize=True)
        return conv2d(dfull, w.transpose(0, 1, 3, 2), s, (0, 0))
    xp = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    windows = sliding_window_view(xp, (k, k), axis=(1, 2))[:, ::s, ::s]
    grads[f"{info.name}/kernel"] = np.einsum("bhwcij,bhwo->ijco", windows, dy, optimize=True)
    return conv2d_transpose(dy, w.transpose(0, 1, 3, 2), s, pad, x.shape[1])  # the forward padding is its crop


def _forward_cached(
    layers: list[LayerInfo], params: Mapping[str, np.ndarray], x: np.ndarray
) -> list[tuple[np.ndarray, np.ndarray]]:
    cache = []
    for info in layers:
        y = apply_layer(info, params, x)
        cache.append((x, y))
        x = y
    return cache


def _backward(layers: list[LayerInfo], params: Mapping[str, np.ndarray], cache: list, dy: np.ndarray, grads: dict) -> np.ndarray:
    for info, (x, y) in zip(reversed(layers), reversed(cache), strict=True):
        dy = _layer_backward(info, params, x, y, dy, grads)
    return dy


def loss_and_grads(
    spec: ModelSpec, params: Mapping[str, np.ndarray], x: np.ndarray, eps: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """Batch mean of the spec's objective and its gradient w.r.t. every canonical parameter (float64, by hand).

    The objective is ``recon + beta * kl`` (:class:`~vaebench.model.loss.Objective`;
    the plain -ELBO at ``beta = 1``). With ``B`` the batch size:
    ``d/dlogits = (sigmoid(logits) - x) / B``; the KL's terms
    ``beta * mean / B`` and ``beta * (exp(logvar) - 1) / (2 B)``, and the
    reparameterisation ``z = mean + exp(logvar / 2) * eps``'s.
    """
    p = _as64(params)
    x, eps = np.asarray(x, np.float64), np.asarray(eps, np.float64)
    if spec.quantizer is not None:
        return _vq_loss_and_grads(spec, p, x)
    if spec.objective.name == "iwae":
        return _iwae_loss_and_grads(spec, p, x, eps)
    n = len(x)
    trunk, heads, decoder = spec.encoder_layers(), spec.head_layers(), spec.decoder_layers()
    trunk_cache = _forward_cached(trunk, p, x)
    h = trunk_cache[-1][1]
    mean, logvar = (apply_layer(info, p, h) for info in heads)
    std = np.exp(0.5 * logvar)
    z = mean + std * eps
    dec_cache = _forward_cached(decoder, p, z)
    logits = dec_cache[-1][1]
    terms = vae_terms(numpy_ops, lambda _: (mean, logvar), lambda _: logits, x, eps)
    loss = float(np.mean(spec.objective.per_example(terms)))
    beta = spec.objective.beta
    grads: dict[str, np.ndarray] = {}
    dz = _backward(decoder, p, dec_cache, (1 / (1 + np.exp(-logits)) - x) / n, grads)
    dmean = dz + beta * mean / n
    dlogvar = dz * 0.5 * std * eps + beta * 0.5 * (np.exp(logvar) - 1) / n
    dh = _layer_backward(heads[0], p, h, mean, dmean, grads) + _layer_backward(heads[1], p, h, logvar, dlogvar, grads)
    _backward(trunk, p, trunk_cache, dh, grads)
    return loss, grads


def _iwae_loss_and_grads(
    spec: ModelSpec, p: Mapping[str, np.ndarray], x: np.ndarray, eps: np.ndarray
) -> tuple[float, dict[str, np.ndarray]]:
    """The batch mean of the negative IWAE bound (``eps`` ``(B, K, d)``) and its gradients, by hand.

    With ``log w_k = -recon(x | z_k) - |z_k|^2 / 2 + |eps_k|^2 / 2 + sum(logvar) / 2`` and the
    normalised weights ``w~_k = softmax_k(log w)``, the loss ``mean_b (log K - logsumexp_k log w_k)``
    has ``d/dlog w_k = -w~_k / B``, hence ``d/dlogits_k = w~_k (sigmoid(logits_k) - x) / B``,
    the direct ``d/dz_k = w~_k z_k / B`` beside the decoder's, ``d/dlogvar = -1/(2B)`` direct,
    and the reparameterisation's ``d/dmean = sum_k d/dz_k``, ``d/dlogvar += sum_k d/dz_k * std * eps_k / 2``.
    The value is :func:`~vaebench.model.loss.iwae_bound` on :data:`numpy_ops` itself.
    """
    n, k, d = eps.shape
    trunk, heads, decoder = spec.encoder_layers(), spec.head_layers(), spec.decoder_layers()
    trunk_cache = _forward_cached(trunk, p, x)
    h = trunk_cache[-1][1]
    mean, logvar = (apply_layer(info, p, h) for info in heads)
    std = np.exp(0.5 * logvar)
    z = mean[:, None] + std[:, None] * eps  # (B, K, d)
    dec_cache = _forward_cached(decoder, p, z.reshape(n * k, d))
    logits = dec_cache[-1][1]
    bound = iwae_bound(numpy_ops, lambda _: (mean, logvar), lambda _: logits, x, eps)
    loss = float(np.mean(-bound))
    recon = numpy_ops.sum_per_example(
        bce_with_logits(numpy_ops, logits.reshape(n, k, -1), numpy_ops.flatten(x)[:, None])
    )  # (B, K)
    log_w = 0.5 * np.sum(eps * eps + logvar[:, None] - z * z, axis=-1) - recon
    weights = np.exp(log_w - numpy_ops.logsumexp(log_w)[:, None])  # (B, K), each row sums to 1
    grads: dict[str, np.ndarray] = {}
    scale = (weights / n).reshape(n * k, *([1] * (logits.ndim - 1)))
    dz = _backward(decoder, p, dec_cache, scale * (1 / (1 + np.exp(-logits)) - np.repeat(x, k, axis=0)), grads)
    dz = dz.reshape(n, k, d) + weights[..., None] * z / n
    dmean = dz.sum(axis=1)
    dlogvar = (dz * eps).sum(axis=1) * 0.5 * std - 0.5 / n
    dh = _layer_backward(heads[0], p, h, mean, dmean, grads) + _layer_backward(heads[1], p, h, logvar, dlogvar, grads)
    _backward(trunk, p, trunk_cache, dh, grads)
    return loss, grads


def _vq_loss_and_grads(spec: ModelSpec, p: Mapping[str, np.ndarray], x: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """The batch mean of a VQ model's loss (:func:`~vaebench.model.loss.vq_terms`) and its gradients, by hand.

    With ``B`` images of ``P`` pixels and ``M = N * D`` latent entries each: ``d/dout = 2 (out - (x - 0.5)) /
    (B P variance)``; the straight-through estimator hands the decoder's input gradient to the encoder's vectors
    unchanged; the commitment term adds ``2 beta (v - e) / (B M)`` there, and the codebook term gives each code
    the sum of ``2 (e - v) / (B M)`` over the vectors that chose it (``one_hot^T @ ...``).
    """
    q, (n, d) = spec.quantizer, (len(x), spec.latent_dim)
    trunk, decoder, shape = spec.encoder_layers(), spec.decoder_layers(), spec.latent_shape
    centred = x - VQ_CENTRE
    trunk_cache = _forward_cached(trunk, p, centred)
    vectors = trunk_cache[-1][1].reshape(-1, d)
    book = p["quantizer/codebook"]
    terms, codes = vq_evaluate(spec, p, x)
    chosen = codes.reshape(-1)
    quantised = book[chosen]
    dec_cache = _forward_cached(decoder, p, quantised.reshape(n, *shape))
    out = dec_cache[-1][1]
    grads: dict[str, np.ndarray] = {}
    dq = _backward(decoder, p, dec_cache, 2 * (out - centred) / (out[0].size * n * q.variance), grads).reshape(-1, d)
    entries = vectors.size // n
    dvectors = dq + 2 * q.beta * (vectors - quantised) / (n * entries)
    dbook = np.zeros_like(book)
    np.add.at(dbook, chosen, 2 * (quantised - vectors) / (n * entries))
    grads["quantizer/codebook"] = dbook
    _backward(trunk, p, trunk_cache, dvectors.reshape(trunk_cache[-1][1].shape), grads)
    return float(np.mean(terms.loss)), grads


def adam_update(
    p: np.ndarray,
    g: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    t: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One Adam update of step number ``t`` (1-based), the core's formula (PyTorch's and Optax's):

    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``, ``p -= lr * m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps)``.
    Returns ``(p, m, v)``.
    """
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    return p - lr * (m / (1 - beta1**t)) / (np.sqrt(v / (1 - beta2**t)) + eps), m, v


def adam_step(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray], lr: float = 1e-3) -> dict[str, np.ndarray]:
    """Parameters after the first Adam step from zero state (``m_hat = g``, ``v_hat = g**2``)."""
    out = {}
    for key, value in params.items():
        g = np.asarray(grads[key], np.float64)
        out[key] = adam_update(np.asarray(value, np.float64), g, np.zeros_like(g), np.zeros_like(g), 1, lr)[0]
    return out
