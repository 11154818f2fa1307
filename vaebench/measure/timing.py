"""Timing windows: how one number of seconds is taken, for every backend and every yardstick loop.

A window is ``steps`` calls of a step function followed by the caller's
synchronisation (``block_until_ready``, ``.item()``, ``torch.cuda.synchronize``
...) and the clock is read only after it: a window closed without it would time
the *queueing* of work, not the work. The first call of a contender is timed
alone (tracing, compilation, allocator warm-up) and reported as
``compile_seconds``, never mixed with steady state. The clock is a parameter
so tests can drive these functions with a fake one.

:func:`measure` interleaves contenders that share a process (A B A B ...);
:mod:`vaebench.measure.interleave` does the same across processes for ``vaebench bench``.
The statistics live in :mod:`vaebench.measure.stats`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vaebench.measure.stats import summarize

Clock = Callable[[], float]
Step = Callable[[], Any]
Sync = Callable[[Any], None]

WINDOW_SECONDS = 0.5


@dataclass
class Throughput:
    """Per-window seconds per step of one contender, and what follows from them."""

    batch_size: int
    compile_seconds: float
    step_seconds: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> list[float]:
        """One figure per window: images in a step over seconds per step."""
        return [self.batch_size / s for s in self.step_seconds]

    def summary(self) -> dict[str, Any]:
        """:func:`vaebench.measure.stats.summarize` of the windows' images/s, with the compile time."""
        return {**summarize(self.images_per_second), "compile_seconds": self.compile_seconds}


def timed_call(step: Step, sync: Sync, clock: Clock = time.perf_counter) -> float:
    """Seconds for one call of ``step``, synchronised: the compile (first) step is timed this way."""
    t0 = clock()
    sync(step())
    return clock() - t0


def window(step: Step, sync: Sync, steps: int, clock: Clock = time.perf_counter) -> float:
    """Seconds for ``steps`` calls of ``step``, closed by ``sync`` on the last call's result."""
    if steps < 1:
        raise ValueError(f"a window needs at least one step, got {steps}")
    t0 = clock()
    out = None
    for _ in range(steps):
        out = step()
    sync(out)
    return clock() - t0


def steps_for(seconds_per_step: float, target: float = WINDOW_SECONDS) -> int:
    """Steps that make a window last about ``target`` seconds (at least one)."""
    return max(1, math.ceil(target / max(seconds_per_step, 1e-6)))


def measure(
    contenders: Mapping[str, tuple[Step, Sync]],
    batch_size: int,
    windows: int = 5,
    steps: int = 5,
    warmup: int = 2,
    clock: Clock = time.perf_counter,
) -> dict[str, Throughput]:
    """Interleaved steady-state timing of each ``name -> (step, sync)`` in this process.

    ``step()`` runs one training step and returns something ``sync`` can wait
    on; ``sync(out)`` must block until that step has finished on the device.
    """
    results: dict[str, Throughput] = {}
    for name, (step, sync) in contenders.items():
        results[name] = Throughput(batch_size, timed_call(step, sync, clock))
        for _ in range(max(warmup - 1, 0)):
            sync(step())
    for _ in range(windows):
        for name, (step, sync) in contenders.items():
            results[name].step_seconds.append(window(step, sync, steps, clock) / steps)
    return results
