"""What ``vaebench compare`` prints on the terminal: every table its inputs call for, in one order, with the notes.

The tables themselves are :mod:`vaebench.report.tables`'; this decides which
of them a set of inputs gets and in what order, so the command line only
prints. A note (runs that look alike but must not be paired) goes to stderr,
where it is said without mixing into a table someone may paste or parse.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from vaebench.report.inputs import by_kind, exactness_entries
from vaebench.report.tables import (
    bench_table,
    beta_trends,
    comparability_notes,
    equivalence_rows,
    exactness_table,
    harness_table,
    has_seeds,
    plain,
    runs_table,
    seed_rows,
    ttq_table,
    vq_rows,
)


def summary(bench_results: list[dict], runs: list[tuple[Path, dict]], margin: float) -> Iterator[tuple[str, bool]]:
    """``(text, to_stderr)`` in printing order: throughput, time to quality, harness, exactness and run tables; the notes;
    over seeds, each backend's mean and the pairwise equivalence at ``margin`` nats."""
    throughput, ttq, harness = by_kind(bench_results)
    exact = exactness_entries(bench_results)
    tables = ((throughput, bench_table), (ttq, ttq_table), (harness, harness_table), (exact, exactness_table), (runs, runs_table))
    for rows, table in tables:
        if rows:
            yield "\n".join(table(rows)), False
    for note in comparability_notes(runs):  # runs that look alike but must not be paired: said, not hidden
        yield f"note: {plain(note)}", True
    if any(m.get("status") == "completed" and (m.get("final") or {}).get("test_loss") is not None for _, m in runs):
        yield "\nVector-quantised models (reconstruction loss = MSE / the recipe's variance; no ELBO):", False
        yield "\n".join(vq_rows(runs).lines()), False
    if has_seeds(runs):
        yield "\nOver seeds:", False
        yield "\n".join(seed_rows(runs).lines()), False
        for line in beta_trends(runs):
            yield f"beta trend: {line}", False
        yield f"\nSame quality? Difference of mean test -ELBO (paired by seed), 95% interval, TOST at ±{margin:g} nats:", False
        yield "\n".join(equivalence_rows(runs, margin).lines()), False
