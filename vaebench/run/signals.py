"""Signals: SIGINT and SIGTERM stop work at a safe point instead of killing it mid-write.

Inside a training loop (and ``bench``'s coordinator) :class:`StopFlag` catches
both and the loop stops after its current step, chunk or picture, checkpoints
and says how to resume. Outside, :func:`terminate_cleanly` makes SIGTERM unwind
like Ctrl-C (``finally`` blocks run, files close), ending with exit code 143.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

from vaebench.errors import Terminated


class StopFlag:
    """Set by SIGINT/SIGTERM while training; the loop stops after the current step."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """Catch SIGINT and SIGTERM for the duration (main thread only; elsewhere, signals keep their handlers)."""

        def handler(signum: int, _frame: Any) -> None:
            self.signum = signum

        try:
            previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread
            yield self
            return
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


def _terminate(signum: int, _frame: object) -> None:
    raise Terminated(signum)


def terminate_cleanly() -> None:
    """SIGTERM raises :class:`~vaebench.errors.Terminated` (main thread; a :class:`StopFlag` overrides it)."""
    signal.signal(signal.SIGTERM, _terminate)
