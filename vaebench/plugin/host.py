"""What a result needs to be reproducible: the host, the software, the commit.

Backends add their framework's part (versions, device, threads); this module
owns everything that does not depend on a framework.
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    """The CPU's marketing name, from ``/proc/cpuinfo`` where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    """Cores this process may run on (affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from ``/proc/stat``; ``None`` where there is no such file."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def busy_cores(seconds: float = 0.3, sample: Callable[[], tuple[int, int] | None] = _cpu_times) -> float:
    """How many cores other processes keep busy, measured over ``seconds`` while this one sleeps.

    On a 2-core machine shared with other jobs, OpenMP threads spin at
    barriers when oversubscribed: a torch epoch pinned to both cores ran 20-40x
    slower under 4-6 concurrent jobs. This is what lets vaebench notice.
    """
    first = sample()
    if first is None:
        return 0.0
    time.sleep(seconds)
    second = sample()
    if second is None or second[1] <= first[1]:
        return 0.0
    fraction = (second[0] - first[0]) / (second[1] - first[1])
    return max(0.0, fraction * (os.cpu_count() or 1))


def default_threads(usable: int, busy: float) -> int:
    """Intra-op threads for a run that did not ask: the usable cores other processes leave free (at least 1)."""
    return max(1, min(usable, usable - math.floor(busy + 0.5)))


BUSY = 0.5  # other processes keeping this many cores busy make a machine "busy"


def load_snapshot() -> dict[str, Any]:
    """The machine's load now: cores other processes keep busy (sampled), and the 1-minute load average.

    The sample decides; the load average is recorded beside it but not used,
    since it lags by a minute and counts processes waiting on disk.
    """
    busy = busy_cores()
    loadavg = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"busy_cores": round(busy, 2), "loadavg_1m": loadavg, "usable_cores": usable_cores(), "busy": busy >= BUSY}


def choose_threads(asked: int | None, log: Callable[[str], None] = print) -> tuple[int | None, dict[str, Any]]:
    """``--threads`` if given; else every usable core on a quiet machine and fewer on a busy one, said in one line.

    Returns the thread count to construct the backend with (``None``: the
    framework's own default, all usable cores) and what to record about why,
    with the load at the start.
    """
    load = load_snapshot()
    if asked:
        return asked, {"threads": asked, "chosen_by": "--threads", "load_at_start": load}
    usable, busy = load["usable_cores"], load["busy_cores"]
    threads = default_threads(usable, busy)
    record = {"threads": threads, "chosen_by": "load", "usable_cores": usable, "busy_cores": busy, "load_at_start": load}
    if threads < usable:
        log(
            f"warning: this machine is busy ({busy:.1f} of {os.cpu_count()} cores in use by other processes): "
            f"training with {threads} thread{'s' if threads > 1 else ''} instead of {usable}, so threads do not "
            "spin against each other; timings will not match a quiet machine. Pass --threads N to choose."
        )
        return threads, record
    return None, record


def git_commit() -> str | None:
    """The vaebench checkout's commit (with ``-dirty`` if modified), if it is one."""
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def host_environment() -> dict:
    """Host and core-software facts shared by every backend's results."""
    try:
        version = metadata.version("vaebench")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "numpy": np.__version__,
        "vaebench": version,
        "commit": git_commit(),
    }


def set_xla_threads(threads: int | None) -> None:
    """Ask XLA's CPU client for ``threads`` intra-op threads, via ``XLA_FLAGS``.

    XLA reads the flags once, when JAX (or TensorFlow's XLA) first starts, so
    this must run before that import; flags the user set win.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if threads and "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={threads}".strip()
