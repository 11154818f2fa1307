"""Before Ray starts: every run of a sweep checked for what would make it fail or never start (issue #26).

A sweep that only finds out on its workers pays for it per run: a typo in
``-o`` fails every run of that backend, each after its worker has started,
and a run that reserves more CPUs than the machine has stays pending for good
(Ray waits for a node that never comes). Both are known from the plan alone,
so ``--dry-run`` and a real sweep refuse them the same way, in one line,
before any folder or Ray instance exists. This module is apart from
:mod:`vaebench.sweep.plan` because it loads plugin classes, which the report
(a reader of sweep records) must not.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from vaebench.errors import ConfigError, VaebenchError
from vaebench.plugin import registry
from vaebench.plugin.devices import device_line
from vaebench.sweep.plan import Run


def check_runs(runs: list[Run], settings: Mapping[str, Any], cpus: int | None = None) -> None:
    """Refuse a run whose backend refuses its options, or, on this machine's own Ray, that wants too many CPUs.

    Each run's ``-o`` options are checked by its backend's own rule
    (:meth:`~vaebench.plugin.contract.Backend.checked_options`, on the class:
    no framework is imported). A packed run reserves its ``--threads`` CPUs;
    without an ``address`` the sweep starts a Ray on this machine, which offers
    ``cpus`` of them (default: the machine's CPU count, as a local Ray counts).
    A cluster's nodes are known only once it is joined, and
    :func:`vaebench.sweep.cluster.check_fits` checks them then; ``--exclusive``
    reserves a whole node, which always fits. A ``--device cuda`` run on this
    machine's own Ray needs a GPU its backend sees (:func:`check_gpus`).
    """
    classes: dict[str, Any] = {}
    for run in runs:
        cfg = run.config
        if cfg.backend not in classes:
            classes[cfg.backend] = registry.load(cfg.backend)[0]
        try:
            classes[cfg.backend].checked_options(cfg.options)
        except VaebenchError as exc:
            raise ConfigError(f"run {run.name}: {exc}; no run was started") from None
    if not settings.get("address"):
        check_gpus(runs)
    if settings.get("address") or settings.get("exclusive") or not runs:
        return
    have = cpus or os.cpu_count() or 1
    big = max(runs, key=lambda r: r.config.threads or 1)
    if (big.config.threads or 1) > have:
        raise ConfigError(
            f"run {big.name} reserves {big.config.threads} CPUs (--threads {big.config.threads}), more than the "
            f"{have} of this machine, so it could never start; give --threads {have} or fewer, --exclusive, or "
            "--address a cluster with larger nodes; no run was started"
        )


def check_gpus(runs: list[Run], ask: Any = None) -> None:
    """Refuse ``--device cuda`` on this machine's own Ray when a run's backend sees no GPU here, before Ray starts.

    Without it, the local Ray starts (seconds) only for :func:`vaebench.sweep.cluster.check_fits`
    to find no GPU among its resources. The question is the core's own
    (:func:`vaebench.plugin.devices.device_line`, what ``vaebench backends
    --devices`` prints): each backend asked once, in a process of its own (it
    imports the framework, a few seconds; Keras engines cannot share a process),
    which device it would use. A cluster's GPUs are checked once it is joined.
    """
    ask = ask or device_line
    for backend in sorted({r.config.backend for r in runs if r.config.device == "cuda"}):
        line = " ".join(str(ask(backend)).split())
        if not line.startswith("device cuda"):
            first = next(r for r in runs if r.config.backend == backend and r.config.device == "cuda")
            raise ConfigError(
                f"run {first.name} asks for --device cuda, but {backend} sees no GPU on this machine ({line}), where a "
                "sweep without --address runs; give --device cpu, or --address a cluster with a GPU node; no run was started"
            )
