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
PARAM_OUTLIERS = 1e-2  # ... for all but this fraction of entries (every entry within steps * lr)


def compare(results: dict[str, dict[str, np.ndarray]], steps: int, lr: float = 1e-3) -> list[dict[str, Any]]:
    """Pairwise differences and verdicts."""
    rows = []
    for a, b in itertools.combinations(results, 2):
        ra, rb = results[a], results[b]
        elbo = np.abs(ra["neg_elbo"].astype(np.float64) - rb["neg_elbo"])
        grid = np.abs(ra["grid"].astype(np.float64) - rb["grid"])
        losses = float(np.max(np.abs(ra["losses"] - rb["losses"]) / np.abs(rb["losses"])))
        diffs = np.concatenate([np.abs(ra[k].astype(np.float64) - rb[k]).ravel() for k in ra if k.startswith("param/")])
        row = {
            "pair": f"{a} vs {b}",
            "elbo_abs": float(elbo.max()),
            "elbo_rel": float((elbo / np.abs(rb["neg_elbo"])).max()),
            "grid_abs": float(grid.max()),
            "loss_rel": losses,
            "param_abs": float(diffs.max()),
            "param_outliers": float(np.mean(diffs > PARAM_ATOL)),
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
        f"for all but {PARAM_OUTLIERS:.0%} of entries and {steps * lr:g} (steps x lr) for all"
    )


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The parity matrix: one line per pair, each column under its own header."""
    width = max([28, *(len(r["pair"]) for r in rows)])  # variants' names (jax[transpose=subpixel]) are long
    lines = [f"{'pair':{width}s} {'-ELBO rel':>10s} {'loss rel':>10s} {'grid abs':>10s} {'params abs':>11s} {'>atol':>7s}  ok"]
    for r in rows:
        lines.append(
            f"{r['pair']:{width}s} {r['elbo_rel']:10.2e} {r['loss_rel']:10.2e} {r['grid_abs']:10.2e} "
            f"{r['param_abs']:11.2e} {r['param_outliers']:7.2%}  {'yes' if r['ok'] else 'NO'}"
        )
    return lines
