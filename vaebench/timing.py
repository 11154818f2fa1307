"""Steady-state throughput, measured one way for every backend and every reference loop.

The first call is timed alone (tracing, compilation, allocator warm-up) and
reported as ``compile_seconds``; further warm-up calls are discarded; then
``windows`` timed windows of ``steps`` calls each, every window closed by the
caller's synchronisation (``block_until_ready``, ``.item()``,
``torch.cuda.synchronize``...). Several contenders are measured with their
windows interleaved (A B A B ...), so drift of a shared machine hits all alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Throughput:
    """Per-window seconds per step of one contender, and what follows from them."""

    batch_size: int
    compile_seconds: float
    step_seconds: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> list[float]:
        return [self.batch_size / s for s in self.step_seconds]

    def summary(self) -> dict[str, Any]:
        """:func:`summarize` of the windows' images/s, with the compile time."""
        return {**summarize(self.images_per_second), "compile_seconds": self.compile_seconds}


def summarize(images_per_second: list[float]) -> dict[str, Any]:
    """Median and spread of per-window images/s (IQR from the quartiles; min and max), and the windows themselves
    (``samples``), so windows of several rounds can be pooled and summarised again."""
    ips = sorted(images_per_second)
    q = statistics.quantiles(ips, n=4, method="inclusive") if len(ips) > 1 else [ips[0]] * 3
    return {
        "median": statistics.median(ips),
        "q1": q[0],
        "q3": q[2],
        "min": ips[0],
        "max": ips[-1],
        "windows": len(ips),
        "samples": ips,
    }


Step = Callable[[], Any]
Sync = Callable[[Any], None]


def measure(
    contenders: Mapping[str, tuple[Step, Sync]],
    batch_size: int,
    windows: int = 5,
    steps: int = 5,
    warmup: int = 2,
) -> dict[str, Throughput]:
    """Interleaved steady-state timing of each ``name -> (step, sync)``.

    ``step()`` runs one training step and returns something ``sync`` can wait
    on; ``sync(out)`` must block until that step has finished on the device.
    """
    results: dict[str, Throughput] = {}
    for name, (step, sync) in contenders.items():
        t0 = time.perf_counter()
        sync(step())
        results[name] = Throughput(batch_size, time.perf_counter() - t0)
        for _ in range(max(warmup - 1, 0)):
            sync(step())
    for _ in range(windows):
        for name, (step, sync) in contenders.items():
            t0 = time.perf_counter()
            out = None
            for _ in range(steps):
                out = step()
            sync(out)
            results[name].step_seconds.append((time.perf_counter() - t0) / steps)
    return results
