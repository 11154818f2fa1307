"""``vaebench bench`` on a busy machine: refuse to time, or time and mark the rows that were timed while busy.

Other processes keeping cores busy slow every backend, and not alike (each
window lands on a different share of the machine), so a throughput figure
taken then is neither fast nor fair. The default is to refuse when the machine
is busy at the start; ``--allow-busy`` times anyway and warns.

Two instants are not enough: a bench once saw 0.07 busy cores at its start and
1.93 at its end, and its rows were recorded quiet. So a :class:`LoadSampler`
thread reads the CPU counters every :data:`SAMPLE_SECONDS` throughout the
measurement, and subtracts what this process and its workers used (their CPU
time, from ``/proc``): what is left is other processes' load, which is what
makes a window unfair. Each row is marked by what was seen during its own
cell's windows (:class:`Watch`): the most and the mean busy cores other
processes kept, how many samples, and ``busy`` when the start or any sample
in its windows reached :data:`~vaebench.plugin.host.BUSY` cores. A
sample is taken as a whole: one spike marks the rows it overlaps, since a
benchmark that hides a disturbed figure is worse than one that flags a clean one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError
from vaebench.plugin import host

SAMPLE_SECONDS = 0.5  # how often the sampler reads the counters: short next to a cell (many 1-second windows)

# (busy ticks of all CPUs, total ticks of all CPUs, CPU ticks of this process and its live descendants), or None
Reading = tuple[float, float, float] | None


class BusyMachineError(ConfigError):
    """Other processes keep cores busy and ``--allow-busy`` was not given."""


def _busy_words(load: dict[str, Any]) -> str:
    loadavg = load.get("loadavg_1m")
    average = f", load average {loadavg:.2f}" if isinstance(loadavg, (int, float)) else ""
    return f"{load['busy_cores']:.1f} cores in use by other processes{average}"


def check_load(allow_busy: bool, warn: Callable[[str], None]) -> dict[str, Any]:
    """The load at the start (:func:`~vaebench.plugin.host.load_snapshot`); refused or warned about when busy.

    Raises :class:`BusyMachineError` on a busy machine unless ``allow_busy``;
    with it, ``warn`` gets one line saying the rows will be marked busy.
    """
    load = host.load_snapshot()
    if load["busy"]:
        what = f"this machine is busy ({_busy_words(load)})"
        if not allow_busy:
            raise BusyMachineError(f"{what}: timings would be slower and unfair; rerun when it is quiet, or pass --allow-busy")
        warn(f"warning: {what}: timing anyway (--allow-busy); every row is marked busy")
    return load


def _own_ticks() -> float:
    """CPU ticks (user + system, reaped children included) of this process and every live descendant, from ``/proc``.

    The bench's workers are child processes: their CPU time is the
    measurement, not a disturbance, so it is taken out of the machine's.
    """
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended while being read
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid ... utime stime cutime cstime
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = sum(int(v) for v in fields[11:15])
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, stack = 0, [os.getpid()]
    while stack:
        pid = stack.pop()
        total += ticks.get(pid, 0)
        stack.extend(children.get(pid, ()))
    return float(total)


def read_counters() -> Reading:
    """The machine's busy and total CPU ticks, and this process tree's; ``None`` where ``/proc`` has no such files."""
    machine = host._cpu_times()
    if machine is None:
        return None
    try:
        own = _own_ticks()
    except (OSError, ValueError, IndexError):
        return None
    return float(machine[0]), float(machine[1]), own


class LoadSampler:
    """A background thread sampling, every ``interval`` seconds, how many cores *other* processes keep busy.

    Each sample covers the interval since the previous reading: ``(start,
    end, cores)``, cores being the machine's busy ticks less this process
    tree's, over the total ticks, times the CPU count. ``read`` and ``clock``
    are injectable, so the arithmetic is tested without a loaded machine.
    """

    def __init__(
        self,
        read: Callable[[], Reading] = read_counters,
        interval: float = SAMPLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        cpus: int | None = None,
    ) -> None:
        self.read, self.interval, self.clock = read, interval, clock
        self.cpus = cpus or os.cpu_count() or 1
        self.samples: list[tuple[float, float, float]] = []
        self._last: tuple[float, tuple[float, float, float]] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def tick(self) -> None:
        """Take one reading; from the second on, append the sample of the interval it closes."""
        now, reading = self.clock(), self.read()
        if reading is None:
            return
        with self._lock:
            if self._last is not None:
                then, (busy0, total0, own0) = self._last
                busy, total, own = reading
                if total > total0:
                    others = max(0.0, (busy - busy0) - (own - own0)) / (total - total0) * self.cpus
                    self.samples.append((then, now, others))
            self._last = (now, reading)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.tick()

    def start(self) -> LoadSampler:
        """Take the first reading now and keep sampling in a daemon thread until :meth:`stop`."""
        self.tick()
        self._thread = threading.Thread(target=self._loop, name="vaebench-load-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread, after one last reading, so the end of the measurement is covered too."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self.tick()

    def window(self, start: float, end: float) -> dict[str, Any]:
        """What the samples overlapping ``[start, end]`` saw: their count, and the most and mean busy cores (rounded)."""
        with self._lock:
            seen = [cores for t0, t1, cores in self.samples if t1 > start and t0 < end]
        if not seen:
            return {"samples": 0, "max": None, "mean": None}
        return {"samples": len(seen), "max": round(max(seen), 2), "mean": round(sum(seen) / len(seen), 2)}


class Watch:
    """The load through a bench's matrix: the start's, every cell's windows, and the end's; marks each row with its own.

    Rows of a cell arrive together once the cell has finished, so a row's
    windows lie between the arrival of the previous cell's rows (or the
    start) and its own arrival.
    """

    def __init__(self, start: dict[str, Any], sampler: LoadSampler | None = None) -> None:
        self.start_load = start
        self.sampler = sampler or LoadSampler()
        self.windows: list[tuple[float, float]] = []
        self.sampler.start()

    def rows(
        self, rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any] | None = None
    ) -> Iterator[dict[str, Any]]:
        """``rows`` unchanged, each one's window noted (in order) for :meth:`mark`.

        ``key`` names a row's cell (default: its model and batch size, bench's cells); consecutive rows of one
        cell share its span.
        """
        begun, cell, span = self.sampler.clock(), None, None
        for row in rows:
            key_ = key(row) if key else (row.get("model"), row.get("batch_size"))
            if key_ != cell or span is None:
                now = self.sampler.clock()
                span, cell, begun = (begun, now), key_, now
            self.windows.append(span)
            yield row

    def mark(self, rows: list[dict[str, Any]], warn: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Stop sampling; mark ``rows`` (see :func:`mark_load`); the load at the end. ``warn``: one line if rows turned busy."""
        self.sampler.stop()
        end = mark_load(rows, self.start_load, [self.sampler.window(*w) for w in self.windows])
        late = [r for r in rows if r["load"]["busy"]]
        if warn and late and not self.start_load["busy"]:
            most = max((r["load"]["busy_cores_during"]["max"] or 0.0) for r in late)
            warn(
                f"warning: other processes kept up to {most:.1f} cores busy during the measurement: "
                f"{len(late)} of {len(rows)} rows are marked busy (their timings are not a quiet machine's)"
            )
        return end


def mark_load(rows: list[dict[str, Any]], start: dict[str, Any], during: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The load at the end; every row gets ``load``: busy or not, and the busy cores at the start and the end.

    ``during`` (one per row, :meth:`LoadSampler.window`) adds what the sampler
    saw in each row's windows, as ``busy_cores_during``. A row is busy when the
    start was (every row's figures were taken on that machine) or when any
    sample in its windows reached :data:`~vaebench.plugin.host.BUSY` cores. The
    end is recorded, not judged by: it comes after the rows' windows.
    """
    end = host.load_snapshot()
    for i, row in enumerate(rows):
        seen = during[i] if during is not None else None
        busy = bool(start["busy"] or (seen is not None and (seen["max"] or 0.0) >= host.BUSY))
        row["load"] = {"busy": busy, "busy_cores_at_start": start["busy_cores"], "busy_cores_at_end": end["busy_cores"]}
        if seen is not None:
            row["load"]["busy_cores_during"] = seen
    return end
