"""What a result needs to be reproducible: the host, the software, the commit.

Backends add their framework's part (versions, device, threads); this module
owns everything that does not depend on a framework.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

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
