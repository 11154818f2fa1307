"""Canonical array layouts and each framework's, declared once per plugin and applied here.

A plugin states how its framework lays out a kernel as an axis permutation of
the canonical layout (dense ``(in, out)``, convolution ``(h, w, in, out)``),
per layer kind; the contract applies it to weights and to Adam's ``m`` and
``v`` alike, both ways, so no plugin writes a conversion loop. For example
PyTorch's ``nn.Linear`` stores ``(out, in)``: ``{"dense": (1, 0)}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from vaebench.model.layers import Conv2D, Dense, LayerInfo, ModelSpec

#: kind -> permutation of the canonical kernel's axes that gives the framework's layout
Layout = Mapping[str, tuple[int, ...]]
KINDS = ("dense", "conv", "conv_transpose")


def layer_kind(info: LayerInfo) -> str | None:
    """``dense``, ``conv`` or ``conv_transpose``; ``None`` for layers without weights."""
    if isinstance(info.layer, Dense):
        return "dense"
    if isinstance(info.layer, Conv2D):
        return "conv_transpose" if info.layer.transpose else "conv"
    return None


def kernel_permutations(layout: Layout, spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """``<layer>/kernel`` -> the permutation to apply, for every kernel the layout moves."""
    unknown = set(layout) - set(KINDS)
    if unknown:
        raise ValueError(f"layout names unknown layer kinds {sorted(unknown)}; kinds are {KINDS}")
    return {f"{i.name}/kernel": tuple(layout[k]) for i in spec.layers() if (k := layer_kind(i)) in layout}


def convert(perms: Mapping[str, tuple[int, ...]], arrays: Mapping[str, Any], to_canonical: bool) -> dict[str, Any]:
    """``arrays`` keyed by canonical names (``<layer>/kernel``, ``<layer>/kernel/m``, ``step``...) moved
    to the framework's layout, or back with ``to_canonical``; contiguous copies where moved."""
    out = {}
    for key, value in arrays.items():
        perm = perms.get(key) or perms.get(key.rsplit("/", 1)[0])
        if perm is None:
            out[key] = value
        else:
            out[key] = np.ascontiguousarray(np.transpose(value, np.argsort(perm) if to_canonical else perm))
    return out


def adam_state(step: Any, moments: Iterable[tuple[str, Any, Any]]) -> dict[str, np.ndarray]:
    """Adam's state in the contract's form from ``(canonical parameter name, m, v)`` host arrays."""
    out = {"step": np.asarray(step, np.float32)}
    for key, m, v in moments:
        out[f"{key}/m"], out[f"{key}/v"] = np.array(m), np.array(v)  # copies: never alias live state
    return out
