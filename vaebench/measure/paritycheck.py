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
PARAM_OUTLIERS_IWAE = 3e-2  # ... the fraction under the IWAE bound, whose float32 gradient is ~20x less exact
PARAM_OUTLIERS_VQ = 8e-2  # ... the fraction for a VQ model, whose nearest codes flip at near-ties (param_outliers)


def param_outliers(objective: str = "vae") -> float:
    """The fraction of parameter entries allowed past :data:`PARAM_ATOL` after training on ``objective``.

    The IWAE bound's gradient weighs each sample by ``softmax_k(log w)``, and
    ``log w_k`` is a sum of hundreds of float32 terms of about -540 nats, so a
    weight carries that sum's rounding (~1e-4 nats) as relative error: measured
    on ``conv`` at batch 32 from the same weights, the float32 gradient against
    the float64 reference was off by up to 4e-5 (torch) and 7e-5 (jax) of a
    parameter's largest entry under IWAE (K=3), against 3e-6 (both) under the
    -ELBO, with no sign flipped. Adam turns that into whole ``lr`` steps on the
    coordinates whose gradient is that small: after 5 steps (K=5) 0.3% to 1.9%
    of ``conv``'s entries, pair by pair, against 0.27% under the -ELBO; ``mlp``,
    ``blog`` and ``iwae-mlp`` stay under 0.25%. Every other tolerance stays as
    strict: the step losses still agree to 1e-4 relative (measured: at most
    2.3e-7 on ``conv``, 5.4e-6 on ``mlp``).

    ``vq`` (a model with a vector-quantised bottleneck, whatever its objective)
    is looser again, for a discontinuity: ``argmin`` picks the nearest code, so
    weights a few float32 roundings apart choose another code for a vector
    whose two nearest codes are that close. Measured on ``vqvae`` at batch 32:
    after one step every backend's weights are within 1e-5 of the reference;
    after the second, jax's (and Keras' on every engine) are up to 7e-4 off on
    ``decoder/1/kernel`` (Adam's whole steps on near-zero gradients again) while
    torch's stay within 1e-6, and from the third step 2, then 6, then 7 of
    1,568 vectors choose another code, each with its two nearest codes within
    4e-5 to 5e-3 of each other (the median gap is 0.12). After 5 steps 5.35% of
    entries are past 1e-4 for those pairs, every entry within ``steps * lr``,
    the losses within 2.3e-5. An objective this does not know is a
    ``KeyError``, never a silent default.
    """
    return {"vae": PARAM_OUTLIERS, "beta-vae": PARAM_OUTLIERS, "iwae": PARAM_OUTLIERS_IWAE, "vq": PARAM_OUTLIERS_VQ}[objective]


def compare(
    results: dict[str, dict[str, np.ndarray]], steps: int, lr: float = 1e-3, objective: str = "vae"
) -> list[dict[str, Any]]:
    """Pairwise differences and verdicts, for steps trained on ``objective`` (:func:`param_outliers`)."""
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
        row["ok"] = verdict(row, steps, lr, objective)
        rows.append(row)
    return rows


def verdict(row: dict[str, Any], steps: int, lr: float = 1e-3, objective: str = "vae") -> bool:
    """Whether one pair is at parity: every measured difference within its tolerance (module docstring)."""
    return (
        row["elbo_rel"] <= ELBO_RTOL
        and row["loss_rel"] <= ELBO_RTOL
        and row["grid_abs"] <= GRID_ATOL
        and row["param_outliers"] <= param_outliers(objective)
        and row["param_abs"] <= steps * lr * (1 + 1e-3)
    )


def tolerances(steps: int, lr: float = 1e-3, objective: str = "vae") -> str:
    """The tolerances in words, from the constants above (what the CLI prints)."""
    return (
        f"-ELBO and losses rel {ELBO_RTOL:g}, grid abs {GRID_ATOL:g}, params abs {PARAM_ATOL:g} "
        f"for all but {param_outliers(objective):.0%} of entries and {steps * lr:g} (steps x lr) for all"
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
