"""``vaebench bench``: the throughput matrix, cell by cell, backends interleaved; and its files.

For every (model, batch size) cell, each backend gets a fresh worker process
(:mod:`vaebench.measure.worker`) with the same thread count, and the coordinator
(:mod:`vaebench.measure.interleave`) hands out timing windows in turn, the order
rotated every round, so drift of a shared machine lands on every backend
alike. With ``--profile best`` a backend with several tunable settings is first
tuned in a worker of its own, which then exits, so the timed worker holds only
the chosen model and its memory figures are its own. Every row records the
schedule, profile, precision and variant that produced it, the median, IQR
and windows, and the ratio to the cell's fastest backend with a 95% bootstrap
interval. Time to quality (:mod:`vaebench.measure.ttq`) runs after the matrix, one
fresh process per seed. This module owns the matrix and ``bench.json`` /
``bench.csv`` / harness documents; the statistics are in :mod:`vaebench.measure.stats`.
"""

from __future__ import annotations

from collections.abc import Mapping

from vaebench.errors import ConfigError
from vaebench.plugin import registry


def split_options(values: Mapping[str, str], backends: list[str]) -> dict[str, dict[str, str]]:
    """``-o KEY=VALUE`` for every backend that has KEY (an error if none has), ``-o BACKEND:KEY=VALUE`` for one."""
    per: dict[str, dict[str, str]] = {b: {} for b in backends}
    for key, value in values.items():
        target, sep, plain = key.partition(":")
        if sep:
            if target not in per:
                raise ConfigError(f"-o {key}={value} names backend {target!r}, which is not benchmarked")
            per[target][plain] = value
            continue
        takers = [b for b in backends if key in registry.load(b)[0].option_defaults]
        if not takers:
            raise ConfigError(f"no benchmarked backend has option {key!r}; see `vaebench backends` and the README")
        for b in takers:
            per[b][key] = value
    return per
