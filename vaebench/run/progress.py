"""Progress on long work: a live bar on a terminal, plain timestamped lines in a log.

tqdm draws a bar only for a terminal; without one (a CI log, ``nohup``, a
cluster job) a 100-epoch run or a k=5000 evaluation used to print nothing for
many minutes. :class:`LineProgress` keeps tqdm's interface and writes one line
every ``interval`` seconds (and one at the end), so a log shows the work is alive,
how far it is and how fast it goes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

LOG_INTERVAL = 30.0  # seconds between lines in a log; $VAEBENCH_LOG_INTERVAL overrides it


def log_interval() -> float:
    """Seconds between progress lines in a log: ``$VAEBENCH_LOG_INTERVAL``, else :data:`LOG_INTERVAL`."""
    try:
        return max(0.0, float(os.environ.get("VAEBENCH_LOG_INTERVAL", LOG_INTERVAL)))
    except ValueError:
        return LOG_INTERVAL


class LineProgress:
    """tqdm's ``update``/``set_postfix``/``write``/``close``, as a line every ``interval`` seconds."""

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "step",
        initial: int = 0,
        interval: float = LOG_INTERVAL,
        write: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.interval, self.clock = interval, clock
        self._write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.start = self.last = clock()
        self.start_n = initial
        self.postfix = ""

    def _line(self) -> str:
        elapsed = self.clock() - self.start
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        eta = f", {(self.total - self.n) / rate:.0f}s left" if rate > 0 and self.total > self.n else ""
        extra = f"  {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.n}/{self.total} {self.unit}s, {elapsed:.0f}s, {rate:.3g} {self.unit}/s{eta}{extra}"

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.clock() - self.last >= self.interval:
            self.last = self.clock()
            self._write(self._line())

    def set_postfix(self, **values: Any) -> None:
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def write(self, line: str) -> None:
        """A result line (stdout, as ``tqdm.write``), not a progress line."""
        print(line, flush=True)

    def close(self) -> None:
        if self.n > self.start_n and self.clock() - self.start >= self.interval:
            self._write(self._line())


def progress(total: int, desc: str, unit: str = "step", initial: int = 0, enabled: bool = True) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` in a log, or a silent bar when ``enabled`` is false."""
    from tqdm import tqdm

    if enabled and not sys.stderr.isatty():
        return LineProgress(total, desc, unit, initial, log_interval())
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
