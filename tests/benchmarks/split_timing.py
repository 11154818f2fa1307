"""The timing loop of the developers' split tools (``keras_torch_split.py``, ``keras_tf_split.py``).

Every contender is warmed up, then timed in rounds of ``steps`` steps with the
order rotated every round, each round closed by the contender's own sync; the
tools print the median ms per step. Developers' tools, not tests: they assert
nothing.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

Contender = tuple[Callable[[], Any], Callable[[Any], Any]]  # (step, sync)


def time_contenders(contenders: Mapping[str, Contender], rounds: int, steps: int, warmup: int = 20) -> dict[str, list[float]]:
    """ms per step of every contender, one entry per round, the order rotated every round."""
    for step, sync in contenders.values():
        for _ in range(warmup):
            out = step()
        sync(out)
    names = list(contenders)
    times: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            step, sync = contenders[name]
            t0 = time.perf_counter()
            for _ in range(steps):
                out = step()
            sync(out)
            times[name].append((time.perf_counter() - t0) / steps * 1e3)
    return times


def print_medians(title: str, times: Mapping[str, list[float]], rounds: int, steps: int) -> None:
    """The title, then each contender's median ms per step."""
    print(f"{title}, median ms per step over {rounds} rounds of {steps}:")
    for name, t in times.items():
        print(f"  {name:32s} {statistics.median(t):7.3f}")
