"""A transposed convolution as one stride-1 convolution and a depth-to-space: the "sub-pixel" form, derived.

Why: the same function can cost very different amounts in different
formulations. XLA CPU computes the weight gradient of its transposed
convolution about 24x slower than the layer's forward pass (jax 0.10.2,
``../shared/repro/xla_conv_transpose.py``); the same layer written as a
stride-1 convolution to ``s*s*C`` channels followed by depth-to-space has a
weight gradient about 8x faster. A plugin may offer that form only if it
computes exactly the same function, so the rearrangement of the weights is
derived here, once, and tested against :func:`vaebench.model.reference.conv2d_transpose`.

Derivation, per spatial axis. A transposed convolution with stride ``s`` and
kernel ``w[0..k)`` scatters input pixel ``i`` through the kernel into the full
output: ``full[s*i + t] += x[i] * w[t]``, and the layer keeps
``y[o] = full[o + c]`` (``c`` = the spec's crop before). Split the outputs by
phase ``p = o mod s``, ``o = s*q + p``. Then ``s*i + t = s*q + p + c``, so only
the taps ``t`` with ``(p + c - t) mod s == 0`` reach phase ``p``, each from input
``i = q + d`` with offset ``d = (p + c - t) / s``. Hence

    y[s*q + p] = sum over taps t of phase p:  x[q + d(t)] * w[t],

a stride-1 cross-correlation of ``x`` per phase. All phases share one
correlation with a window of ``L = d_max - d_min + 1`` pixels starting at
``d_min``, whose kernel at window position ``j`` and phase ``p`` is ``w[t]`` for
the tap with ``d(t) = d_min + j``, and zero where phase ``p`` has no such tap.
The phases become output channels (``s*s*C_out`` in 2-D, phase-major), and
depth-to-space interleaves them back: output pixel ``(s*qy + py, s*qx + px)``
is block ``(qy, qx)``'s channel group ``(py, px)``. The correlation's input is
padded by ``-d_min`` before and as much after as the last block reads; either
may be negative (a crop), which XLA's convolution accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vaebench.model.layers import Conv2D, LayerInfo


@dataclass(frozen=True)
class SubPixel:
    """The sub-pixel form of one transposed convolution (the same on both axes).

    ``taps[j][p]`` is the kernel tap that window position ``j`` uses for phase
    ``p``, or ``k`` (one past the last tap: a zero) where that phase has none.
    """

    stride: int
    kernel: int
    taps: tuple[tuple[int, ...], ...]
    padding: tuple[int, int]
    blocks: int
    out: int

    @property
    def window(self) -> int:
        """``L``: the stride-1 convolution's kernel size."""
        return len(self.taps)

    def kernel_index(self) -> np.ndarray:
        """``(L, s)`` integer taps, for a gather from a kernel padded with one zero tap at index ``k``."""
        return np.asarray(self.taps, dtype=np.int64)


def subpixel(info: LayerInfo) -> SubPixel:
    """The sub-pixel form of the transposed convolution ``info`` (its spec crop and output size)."""
    layer = info.layer
    if not (isinstance(layer, Conv2D) and layer.transpose):
        raise ValueError(f"{info.name} is not a transposed convolution")
    s, k, c = layer.stride, layer.kernel, info.crop[0]
    n_in, out = info.in_shape[0], info.out_shape[0]
    offsets = {(p, t): (p + c - t) // s for p in range(s) for t in range(k) if (p + c - t) % s == 0}
    low, high = min(offsets.values()), max(offsets.values())
    taps = [[k] * s for _ in range(high - low + 1)]
    for (p, t), d in offsets.items():
        taps[d - low][p] = t
    blocks = math.ceil(out / s)
    length = high - low + 1
    before = -low
    after = blocks + length - 1 - n_in - before  # the padded input must hold blocks + L - 1 pixels
    return SubPixel(s, k, tuple(tuple(row) for row in taps), (before, after), blocks, out)


def subpixel_kernel(form: SubPixel, kernel: Any, xp: Any = np) -> Any:
    """The stride-1 kernel ``(L, L, in, s*s*out)`` of canonical transposed kernel ``(k, k, in, out)``.

    Written once on any array module with NumPy's names (``pad``, ``take``, ``reshape``, ``transpose``):
    ``numpy`` for the tests' reference, ``jax.numpy`` and ``keras.ops`` in the plugins, where the gather is part of
    the traced step so gradients flow to ``kernel``. Phase-major channels: ``(py, px, c_out)``.
    """
    s, length, k = form.stride, form.window, form.kernel
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    flat = form.kernel_index().reshape(-1)
    w = xp.pad(kernel, ((0, 1), (0, 1), (0, 0), (0, 0)))  # tap k on either axis reads zeros
    w = xp.reshape(xp.take(w, flat, axis=0), (length, s, k + 1, c_in, c_out))
    w = xp.reshape(xp.take(w, flat, axis=2), (length, s, length, s, c_in, c_out))
    return xp.reshape(xp.transpose(w, (0, 2, 4, 1, 3, 5)), (length, length, c_in, s * s * c_out))


def depth_to_space(z: Any, form: SubPixel, xp: Any = np) -> Any:
    """``(b, Q, Q, s*s*C)`` phase-major blocks -> ``(b, out, out, C)`` pixels, on any array module with NumPy's names."""
    q, channels, s = z.shape[1], z.shape[3], form.stride
    c = channels // (s * s)
    y = xp.reshape(xp.transpose(xp.reshape(z, (-1, q, q, s, s, c)), (0, 1, 3, 2, 4, 5)), (-1, q * s, q * s, c))
    return y[:, : form.out, : form.out]
