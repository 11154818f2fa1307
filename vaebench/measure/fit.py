"""Fixed cost and per-image cost: step time = a + b * batch, fitted over a batch-size sweep.

Why: one throughput per batch size hides two different costs. ``a`` is what a
step costs whatever its size (dispatch, Python, kernel launches, the optimizer
over the weights); ``b`` is what each image adds. A backend with a large ``a``
loses at small batches and may still win at large ones, where ``1/b``, its
asymptotic images/s, decides. bench measures images/s per cell; a step's time
is ``batch / images_per_second`` at the row's median.

The fit is least squares on *relative* residuals (each point weighted by
``1 / t**2``): step times span two orders of magnitude from batch 16 to 1024,
and ordinary least squares would fit the largest batch and ignore the smallest.
``residual`` is the root mean square of ``(fitted - measured) / measured``; with
two batch sizes the line passes through both points and there is no residual
to report (``None``). A negative ``a`` is reported as measured: it means the
points are not on a line (or noise exceeds the fixed cost), which the residual
then shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def fit_step_time(batches: Sequence[int], seconds: Sequence[float]) -> dict[str, Any]:
    """``a`` (s per step), ``b`` (s per image), ``1/b`` (images/s) and the relative residual of ``seconds`` over ``batches``."""
    if len(batches) != len(seconds):
        raise ValueError("one step time per batch size")
    if len(set(batches)) < 2:
        raise ValueError("a line needs at least two different batch sizes")
    if any(t <= 0 or not math.isfinite(t) for t in seconds):
        raise ValueError(f"step times must be positive, got {list(seconds)}")
    bs, ts = np.asarray(batches, float), np.asarray(seconds, float)
    design = np.stack([1 / ts, bs / ts], axis=1)  # rows scaled by 1/t: minimises the relative residuals
    (a, b), *_ = np.linalg.lstsq(design, np.ones_like(ts), rcond=None)
    relative = (a + b * bs - ts) / ts
    residual = float(np.sqrt(np.mean(relative**2))) if len(set(batches)) > 2 else None
    return {
        "fixed_seconds": float(a),
        "seconds_per_image": float(b),
        "asymptotic_images_per_second": float(1 / b) if b > 0 else None,
        "residual": residual,
        "points": [[int(x), float(t)] for x, t in zip(batches, seconds, strict=True)],
    }


def step_seconds(row: dict[str, Any]) -> float:
    """A bench row's step time at its median: ``batch / median images/s``."""
    return row["batch_size"] / row["train_images_per_second"]["median"]


def _label(row: dict[str, Any]) -> str:
    s = row.get("settings") or {}
    variant = s.get("variant") or {}
    parts = (["compile"] if variant.get("compile") else []) + [
        f"{k}={v}" for k, v in sorted((variant.get("options") or {}).items())
    ]
    return f"{s.get('profile', '?')}/{s.get('precision', '?')}" + (f" ({', '.join(parts)})" if parts else "")


def batch_fits(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One fit per (machine, model, backend, setting) that bench timed at two or more batch sizes."""
    groups: dict[tuple[str, str, str, str], dict[int, float]] = {}
    for r in results:
        key = (str(r.get("machine", "")), r["model"], r["backend"], _label(r))
        groups.setdefault(key, {})[r["batch_size"]] = step_seconds(r)
    out = []
    for (machine, model, backend, setting), points in sorted(groups.items()):
        if len(points) < 2:
            continue
        batches = sorted(points)
        fit = fit_step_time(batches, [points[b] for b in batches])
        out.append({"machine": machine, "model": model, "backend": backend, "setting": setting, **fit})
    return out
