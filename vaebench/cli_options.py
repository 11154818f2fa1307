"""The click options and parsers that several ``vaebench`` commands share, each defined once.

:mod:`vaebench.cli` declares its commands with these, so an option that means
the same thing in ``run``, ``bench``, ``parity``, ``explain`` and ``sweep`` has
one declaration. Where a command words its help differently (its default, or
what the option does there), the decorator takes that text as an argument: the
help users read stays exactly what each command said before it was shared.
Like the CLI, nothing here owns policy: these parse and check what a flag says.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from vaebench.model.config import TrainConfig
from vaebench.plugin.profiles import PRECISIONS, PROFILES

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

DEVICES = ("auto", "cpu", "cuda")
DATA_HELP = "Folder with the four IDX .gz files."
THREADS_HELP = "Intra-op threads for every backend (default: every usable core)."
PRECISION_HELP = "Float32 policy (tf32: GPUs)."


def key_values(values: Iterable[str]) -> dict[str, str]:
    """``-o KEY=VALUE`` repeated, as a dict (a later KEY wins); a value without ``=`` or a key is a usage error."""
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--option")
        pairs[key] = val
    return pairs


def csv(
    kind: type = str, minimum: int | None = None, convert: Callable[[Any, click.Parameter], Any] | None = None
) -> Callable[[object, click.Parameter, str | None], list | None]:
    """A click callback for a comma-separated list of ``kind`` (each at least ``minimum``, then ``convert``-ed)."""

    def parse(_ctx: object, param: click.Parameter, value: str | None) -> list | None:
        if value is None:
            return None
        if not value.strip():  # `--models ''` would run an empty matrix (or fail in it): say so instead
            raise click.BadParameter("is empty; give at least one value, comma-separated, or leave the option out", param=param)
        try:
            items = [kind(v.strip()) for v in value.split(",")]
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of {kind.__name__}s", param=param) from None
        if minimum is not None and any(v < minimum for v in items):
            raise click.BadParameter(f"every value must be at least {minimum}, got {value!r}", param=param)
        return [convert(v, param) for v in items] if convert else items

    return parse


def train_config(flags: Mapping[str, Any], **given: Any) -> TrainConfig:
    """The :class:`TrainConfig` a command's flags describe: every flag named like a field, ``given`` overriding.

    ``--compile`` arrives as ``compile_`` (``compile`` is a builtin); ``-o`` is
    passed in ``given``, parsed, since how it is routed depends on the command.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"compile", *given}
    return TrainConfig(
        **{name: value for name, value in flags.items() if name in fields}, compile=bool(flags["compile_"]), **given
    )


def writable_out(path: Path, shown: str | Path, fix: str = "") -> None:
    """Create ``path`` and check a file can be written in it, before anything is measured: a result nobody can
    write is a result lost. ``shown`` is how the refusal names the folder; ``fix`` ends it (``"; choose ..."``)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise click.UsageError(f"--out {shown}: cannot write there ({exc.strerror or exc}){fix}") from None


# -- the shared options ----------------------------------------------------------------------------------------


def data_dir_option(help: str = DATA_HELP) -> Decorator:
    """``--data-dir``: where the IDX files are (each command says what it reads them for)."""
    return click.option("--data-dir", type=click.Path(file_okay=False), help=help)


def device_option(default: str | None = "auto", help: str | None = None) -> Decorator:
    """``--device``: auto, cpu or cuda (``default=None``: the command's own settings decide)."""
    return click.option("--device", type=click.Choice(DEVICES), default=default, show_default=default is not None, help=help)


def options_option(help: str, metavar: str = "[BACKEND:]KEY=VALUE") -> Decorator:
    """``-o/--option``, repeatable: backend settings, kept raw for :func:`key_values` and the command's routing."""
    return click.option("--option", "-o", "options", multiple=True, metavar=metavar, help=help)


def threads_option(help: str = THREADS_HELP, kind: click.ParamType | type | None = None) -> Decorator:
    """``--threads``: intra-op threads, at least 1 unless ``kind`` says otherwise (unset: the command's default)."""
    return click.option("--threads", type=kind or click.IntRange(min=1), help=help)


def precision_option(default: str | None = "fp32", help: str | None = PRECISION_HELP) -> Decorator:
    """``--precision``: the float32 policy (``default=None``: the sweep's file or fp32)."""
    return click.option(
        "--precision", type=click.Choice(PRECISIONS), default=default, show_default=default is not None, help=help
    )


def profile_option(help: str) -> Decorator:
    """``--profile``: default, or best (every variant the backend has, measured)."""
    return click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True, help=help)


def backends_option(help: str, default: str | None = None) -> Decorator:
    """``--backends`` (into ``names``): the commands that take several backends as one comma list."""
    return click.option("--backends", "names", default=default, show_default=default is not None, help=help)


def out_option(help: str, required: bool = False) -> Decorator:
    """``--out``: the folder a command writes into."""
    return click.option("--out", type=click.Path(file_okay=False), required=required, help=help)


def quiet_option(help: str) -> Decorator:
    """``-q/--quiet``."""
    return click.option("--quiet", "-q", is_flag=True, help=help)
