"""The one exception family the CLI turns into a one-line message.

Anything the user can fix (bad data, a missing plugin, impossible settings)
raises a subclass of :class:`VaebenchError`; the CLI prints ``error: <msg>``
and exits with :attr:`VaebenchError.exit_code` instead of a traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class VaebenchError(Exception):
    """A failure the user can act on; the message says what to do."""

    exit_code = 2


class DataError(VaebenchError):
    """Dataset files missing, truncated, corrupt or unreachable."""


class BackendError(VaebenchError):
    """Unknown backend, plugin not installed, or a plugin breaking the contract."""


class ConfigError(VaebenchError):
    """Settings that cannot describe a run (batch size 0, unknown model...)."""


class InUseError(ConfigError):
    """A folder another vaebench process holds (its lock names the holder)."""


class ShapeError(VaebenchError):
    """An array handed to a backend does not have the contract's shape or dtype."""


class DivergedError(VaebenchError):
    """Training produced a non-finite loss."""

    exit_code = 1


class RunInterruptedError(VaebenchError):
    """SIGINT or SIGTERM stopped a run; its checkpoint lets it resume. Exit code 128 + signal."""

    def __init__(self, signum: int | None, run_dir: object, epoch: int = 0, step: int = 0, where: str | None = None) -> None:
        import signal

        name = signal.Signals(signum).name if signum else "a signal"
        where = where or (f"in epoch {epoch} after step {step}" if step else f"before epoch {epoch}")
        super().__init__(f"interrupted by {name} {where}; checkpoint saved. Resume with: vaebench run --resume {run_dir}")
        self.exit_code = 128 + (signum or 2)


class Terminated(BaseException):
    """SIGTERM outside a training loop (loading, evaluating): unwinds like Ctrl-C, so files are closed, exit 143.

    A ``BaseException``, like ``KeyboardInterrupt``, so that no ``except Exception`` swallows it.
    """
