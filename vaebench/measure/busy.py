"""``vaebench bench`` on a busy machine: refuse to time, or time and mark every row busy.

Other processes keeping cores busy slow every backend, and not alike (each
window lands on a different share of the machine), so a throughput figure
taken then is neither fast nor fair. The default is to refuse; ``--allow-busy``
times anyway, warns, and records the load at the start and at the end on every
row and in the ``method`` record, so the report can show the rows as busy. The
sampling itself is :func:`vaebench.plugin.host.load_snapshot`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vaebench.errors import ConfigError
from vaebench.plugin import host


class BusyMachineError(ConfigError):
    """Other processes keep cores busy and ``--allow-busy`` was not given."""


def check_load(allow_busy: bool, warn: Callable[[str], None]) -> dict[str, Any]:
    """The load at the start (:func:`~vaebench.plugin.host.load_snapshot`); refused or warned about when busy.

    Raises :class:`BusyMachineError` on a busy machine unless ``allow_busy``;
    with it, ``warn`` gets one line saying the rows will be marked busy.
    """
    load = host.load_snapshot()
    if load["busy"]:
        what = (
            f"this machine is busy ({load['busy_cores']:.1f} cores in use by other processes, load average {load['loadavg_1m']})"
        )
        if not allow_busy:
            raise BusyMachineError(f"{what}: timings would be slower and unfair; rerun when it is quiet, or pass --allow-busy")
        warn(f"warning: {what}: timing anyway (--allow-busy); every row is marked busy")
    return load


def mark_load(rows: list[dict[str, Any]], start: dict[str, Any]) -> dict[str, Any]:
    """The load at the end; every row gets ``load``: busy at the start, and the busy cores at the start and the end."""
    end = host.load_snapshot()
    for row in rows:
        row["load"] = {"busy": start["busy"], "busy_cores_at_start": start["busy_cores"], "busy_cores_at_end": end["busy_cores"]}
    return end
