"""The parity verdict: pairwise differences between backends and whether each is within tolerance.

Pure NumPy on what :mod:`vaebench.measure.parity` gathered from each backend's process,
kept apart so it can be tested exhaustively and mutation-tested (``nox -s
mutation``). Every tolerance is stated once, here; the CLI prints
:func:`tolerances` and the tests import the constants. Why each tolerance is
what it is: see :mod:`vaebench.measure.parity`.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

ELBO_RTOL = 1e-4  # per-example -ELBO of the fixed batch, and each step's loss: relative
GRID_ATOL = 1e-4  # decoded grid pixel probabilities: absolute
PARAM_ATOL = 1e-4  # parameters after the steps: absolute ...
PARAM_OUTLIERS = 1e-2  # ... for all but this fraction of all entries (every entry within steps * lr), counting ...
GRAD_NOISE = 1e-4  # ... only settled entries: first-step gradient above this fraction of its tensor's largest


def settled(ra: dict[str, np.ndarray], rb: dict[str, np.ndarray], key: str) -> np.ndarray:
    """Which entries of parameter ``key`` have a gradient that float32 determines: a boolean mask of its shape.

    An entry is settled when its first-step gradient, in either backend
    (``grad/<name>``, :func:`vaebench.measure.parity.compute`), exceeds
    :data:`GRAD_NOISE` of the largest in its tensor. Below that, float32
    summation order alone can flip the gradient's sign (the IWAE bound's
    softmax over K samples leaves ~1e-5 of the largest: measured on ``conv``,
    1.6-1.9% of jax's entries), and Adam, which scales every step to about
    ``lr`` whatever the gradient's size, then moves the entry by ``lr`` a step
    one way in one framework and the other way in another. Those entries are
    held to the ``steps * lr`` bound only. Without recorded gradients every
    entry counts as settled (the stricter rule).
    """
    name = key.removeprefix("param/")
    ga, gb = ra.get(f"grad/{name}"), rb.get(f"grad/{name}")
    if ga is None or gb is None:
        return np.ones(np.shape(ra[key]), bool)
    size = np.maximum(np.abs(ga.astype(np.float64)), np.abs(gb.astype(np.float64)))
    return size > GRAD_NOISE * size.max()


def compare(results: dict[str, dict[str, np.ndarray]], steps: int, lr: float = 1e-3) -> list[dict[str, Any]]:
    """Pairwise differences and verdicts."""
    rows = []
    for a, b in itertools.combinations(results, 2):
        ra, rb = results[a], results[b]
        elbo = np.abs(ra["neg_elbo"].astype(np.float64) - rb["neg_elbo"])
        grid = np.abs(ra["grid"].astype(np.float64) - rb["grid"])
        losses = float(np.max(np.abs(ra["losses"] - rb["losses"]) / np.abs(rb["losses"])))
        keys = [k for k in ra if k.startswith("param/")]
        diffs = np.concatenate([np.abs(ra[k].astype(np.float64) - rb[k]).ravel() for k in keys])
        steady = np.concatenate([settled(ra, rb, k).ravel() for k in keys])
        row = {
            "pair": f"{a} vs {b}",
            "elbo_abs": float(elbo.max()),
            "elbo_rel": float((elbo / np.abs(rb["neg_elbo"])).max()),
            "grid_abs": float(grid.max()),
            "loss_rel": losses,
            "param_abs": float(diffs.max()),
            "param_outliers": float(np.mean((diffs > PARAM_ATOL) & steady)),
            "param_unsettled": float(np.mean(~steady)),
        }
        row["ok"] = verdict(row, steps, lr)
        rows.append(row)
    return rows


def verdict(row: dict[str, Any], steps: int, lr: float = 1e-3) -> bool:
    """Whether one pair is at parity: every measured difference within its tolerance (module docstring)."""
    return (
        row["elbo_rel"] <= ELBO_RTOL
        and row["loss_rel"] <= ELBO_RTOL
        and row["grid_abs"] <= GRID_ATOL
        and row["param_outliers"] <= PARAM_OUTLIERS
        and row["param_abs"] <= steps * lr * (1 + 1e-3)
    )


def tolerances(steps: int, lr: float = 1e-3) -> str:
    """The tolerances in words, from the constants above (what the CLI prints)."""
    return (
        f"-ELBO and losses rel {ELBO_RTOL:g}, grid abs {GRID_ATOL:g}, params abs {PARAM_ATOL:g} "
        f"for all but {PARAM_OUTLIERS:.0%} of entries (those whose first-step gradient is under {GRAD_NOISE:g} "
        f"of their tensor's largest not counted) and {steps * lr:g} (steps x lr) for all"
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The parity matrix: one line per pair, each column under its own header."""
    width = max([28, *(len(r["pair"]) for r in rows)])  # variants' names (jax[transpose=subpixel]) are long
    head = f"{'pair':{width}s} {'-ELBO rel':>10s} {'loss rel':>10s} {'grid abs':>10s} {'params abs':>11s} {'>atol':>7s}"
    lines = [f"{head} {'noise':>7s}  ok"]
    for r in rows:
        lines.append(
            f"{r['pair']:{width}s} {r['elbo_rel']:10.2e} {r['loss_rel']:10.2e} {r['grid_abs']:10.2e} "
            f"{r['param_abs']:11.2e} {r['param_outliers']:7.2%} {r.get('param_unsettled', 0.0):7.2%}  "
            f"{'yes' if r['ok'] else 'NO'}"
        )
    return lines
