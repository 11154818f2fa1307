"""The statistics behind every throughput and time-to-quality figure vaebench prints.

Pure functions of lists of numbers, no clock and no framework, so each can be
tested with exact values (``tests/test_measurement.py``) and mutation-tested
(``nox -s mutation``). What lives here, and why:

* :func:`summarize`: median, quartiles, extremes and the windows themselves,
  so windows of several rounds can be pooled and summarised again.
* :func:`ratio_interval`: a backend's throughput as a ratio to the fastest:
  the median of per-round ratios, with a 95% percentile bootstrap over
  *rounds*. Windows of one round were measured back to back (interleaved), so
  a round is the unit of pairing and of resampling: machine drift that moves a
  whole round cancels in its ratio.
* :func:`format_ratio`: a ratio printed only to the digits its interval supports.
* :func:`ttq_summary`: time to quality over seeds, median and full range, and
  how many seeds reached the target (nothing is trimmed: with 5 seeds, trimming
  would hide two of them).
* :func:`equivalence`: whether two backends reach the same test -ELBO over
  seeds: the difference of means with its 95% t interval, and TOST (two
  one-sided tests) against a stated margin. Runs of the same seed start from
  the same weights and see the same batches and noise, so when both backends
  have two or more seeds in common the test is paired by seed, which removes
  the seed-to-seed spread that both share; otherwise it is Welch's.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np

BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """Median, quartiles (inclusive method), min, max, count and the values themselves (``samples``).

    ``windows`` is the count; ``samples`` keeps the raw values so rounds can be
    pooled later without losing what was measured.
    """
    if not values:
        raise ValueError("summarize needs at least one value")
    ordered = sorted(float(v) for v in values)
    q = statistics.quantiles(ordered, n=4, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 3
    return {
        "median": statistics.median(ordered),
        "q1": q[0],
        "q3": q[2],
        "min": ordered[0],
        "max": ordered[-1],
        "windows": len(ordered),
        "samples": ordered,
    }


def images_per_second(batch_size: int, steps: int, seconds: float) -> float:
    """Throughput of one window: ``steps`` steps of ``batch_size`` images in ``seconds``."""
    if seconds <= 0:
        raise ValueError(f"a window must take time, got {seconds} s")
    return batch_size * steps / seconds


def ratio_interval(
    rounds: Sequence[Sequence[float]],
    baseline: Sequence[Sequence[float]],
    resamples: int = BOOTSTRAP_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> tuple[float, float, float]:
    """A contender's throughput over the baseline's: the median of the per-round ratios, and its bootstrap interval.

    ``rounds[i]`` and ``baseline[i]`` are the windows of round ``i`` of the two
    contenders, measured back to back. Each round gives one paired ratio (the
    medians of its windows), so drift that moves a whole round cancels. Each
    bootstrap replicate draws rounds with replacement and takes the median of
    their ratios; the interval is the replicates' percentiles. The seed is
    fixed, so the same windows always give the same interval.
    """
    if len(rounds) != len(baseline) or not rounds:
        raise ValueError("ratio_interval needs the same, non-zero number of rounds for both contenders")
    paired = np.array([statistics.median(a) / statistics.median(b) for a, b in zip(rounds, baseline, strict=True)])
    point = float(np.median(paired))
    if len(paired) < 2:
        return point, point, point
    gen = np.random.default_rng(seed)
    picks = gen.integers(0, len(paired), size=(resamples, len(paired)))
    replicates = np.median(paired[picks], axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return point, float(low), float(high)


def supported_decimals(low: float, high: float, most: int = 4) -> int:
    """Decimals worth printing for a value known to within ``[low, high]``: the first decimal the
    half-width reaches (a half-width of 0.012 supports two decimals, 0.12 one, 1.2 none)."""
    half = (high - low) / 2
    if half <= 0:
        return most
    return int(min(most, max(0, -math.floor(math.log10(half)))))


def format_ratio(point: float, low: float, high: float) -> str:
    """``0.87 (0.85-0.89)``: the ratio and its interval, to the precision the interval supports."""
    if low == high == point:
        return f"{point:g}"
    d = supported_decimals(low, high)
    return f"{point:.{d}f} ({low:.{d}f}-{high:.{d}f})"


def ttq_summary(seconds: Sequence[float | None]) -> dict[str, Any]:
    """Median and full range of time to quality over seeds; ``None`` is a seed that never reached the target."""
    reached = sorted(s for s in seconds if s is not None)
    return {
        "median": statistics.median(reached) if reached else None,
        "min": reached[0] if reached else None,
        "max": reached[-1] if reached else None,
        "seeds": len(seconds),
        "reached": len(reached),
    }


EQUIVALENCE_MARGIN = 0.5  # nats of test -ELBO: differences smaller than this are not worth a framework switch


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    if not values:
        raise ValueError("mean_std needs at least one value")
    arr = np.asarray(values)
    return float(arr.mean()), (float(arr.std(ddof=1)) if len(arr) > 1 else None)


def trend(values: Sequence[float]) -> str:
    """How a quantity moves along an ordered series (KL over increasing beta, say): ``increasing`` or
    ``decreasing`` when every step is strictly one way, ``non-decreasing`` or ``non-increasing`` when some steps
    are level (active units stay at the latent size until a large beta), ``flat``, or ``not monotonic``."""
    if len(values) < 2:
        raise ValueError("a trend needs at least two values")
    steps = [b - a for a, b in itertools.pairwise(values)]
    if all(d == 0 for d in steps):
        return "flat"
    if all(d >= 0 for d in steps):
        return "increasing" if all(d > 0 for d in steps) else "non-decreasing"
    if all(d <= 0 for d in steps):
        return "decreasing" if all(d < 0 for d in steps) else "non-increasing"
    return "not monotonic"


def _welch(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Difference of means, its standard error and the Welch-Satterthwaite degrees of freedom."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    with np.errstate(invalid="ignore"):  # no spread on either side: df is 0/0, and unused (see equivalence)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return float(a.mean() - b.mean()), math.sqrt(va + vb), float(df)


def equivalence(
    a: dict[int, float], b: dict[int, float], margin: float = EQUIVALENCE_MARGIN, confidence: float = CONFIDENCE
) -> dict[str, Any]:
    """Is the mean of ``a`` (seed -> test -ELBO) within ``margin`` of the mean of ``b``?

    Returns the difference ``mean(a) - mean(b)``, its two-sided ``confidence``
    interval (``low``, ``high``), the TOST p-value (the larger of the two
    one-sided tests of ``diff <= -margin`` and ``diff >= margin``) and a
    verdict: ``equivalent`` when TOST rejects non-equivalence at
    ``1 - confidence`` (equivalently, the 90% interval lies inside the margin),
    ``different`` when the interval excludes zero and equivalence is not shown,
    ``inconclusive`` otherwise, and ``too few seeds`` without two per side.
    """
    from scipy import stats as st

    common = sorted(set(a) & set(b))
    alpha = 1 - confidence
    if len(common) >= 2:
        d = np.array([a[s] - b[s] for s in common])
        diff, se, df, method, n = float(d.mean()), float(d.std(ddof=1) / math.sqrt(len(d))), len(d) - 1, "paired", len(d)
    elif len(a) >= 2 and len(b) >= 2:
        diff, se, df = _welch(np.array(list(a.values())), np.array(list(b.values())))
        method, n = "welch", min(len(a), len(b))
    else:
        return {"method": None, "n": min(len(a), len(b)), "margin": margin, "verdict": "too few seeds"}
    if se > 0:
        half = float(st.t.ppf(1 - alpha / 2, df)) * se
        p_tost = max(float(st.t.sf((diff + margin) / se, df)), float(st.t.cdf((diff - margin) / se, df)))
    else:  # identical differences in every pair: no spread left to test against
        half, p_tost = 0.0, 0.0 if abs(diff) < margin else 1.0
    low, high = diff - half, diff + half
    if p_tost < alpha:
        verdict = "equivalent"
    elif low > 0 or high < 0:
        verdict = "different"
    else:
        verdict = "inconclusive"
    return {
        "method": method,
        "n": n,
        "diff": diff,
        "low": low,
        "high": high,
        "p_tost": p_tost,
        "margin": margin,
        "verdict": verdict,
    }
