"""What a result needs to be reproducible: the host, the software, the commit.

Backends add their framework's part (versions, device, threads); this module
owns everything that does not depend on a framework.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
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


@dataclasses.dataclass
class Environment:
    """What every plugin reports about its framework, with the same keys in every ``metrics.json``.

    The required fields are what a reader compares across backends; ``extra``
    holds settings only one framework has (torch's ``layout``, TensorFlow's XLA
    switch), flattened into the same dict.
    """

    framework: str  # the plugin's framework family: torch, jax, keras
    versions: dict[str, str]  # every library whose version changes numbers or speed
    device: str  # cpu or cuda
    device_name: str  # the CPU or GPU model
    threads: int | str  # intra-op threads, or the framework's default said in words
    precision: str  # the core's --precision, as applied
    float32_matmul_precision: str  # what the framework was told, in its own words
    execution: str  # how a train step runs: eager, jit, tf.function with or without XLA
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat form stored in ``metrics.json`` and ``bench.json``."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("versions", "extra")}
        return {**out, **self.versions, **self.extra}
