"""``vaebench run --backend a,b,c`` from its settings to its verdict: what the command line used to decide itself.

:mod:`vaebench.sweep.local` has the pieces (probe, estimate, train in a fresh
process). This module puts them in the order the command promises: every
refusal before the first probe, every probe and the whole estimate before the
first run trains, and, at the end, one verdict over the outcomes: stopped by a
signal, failed, or done. The report over the finished runs is the command
line's to write (``report`` sits above this layer).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from pathlib import Path

from vaebench.errors import ConfigError, VaebenchError
from vaebench.model.config import TrainConfig
from vaebench.sweep import local


def refuse_routed_options(values: Iterable[str]) -> None:
    """``-o BACKEND:KEY=VALUE`` names one backend; with several, every one trains with the same ``-o`` settings."""
    from vaebench.plugin.profiles import routed

    for target, key, value in routed(dict(v.partition("=")[::2] for v in values)):  # the one reading of the syntax
        if target is not None:  # every backend of the list trains with the same -o settings (sweep.local.run_backends)
            one = "BACKEND:KEY=VALUE applies with one backend; with several, -o KEY=VALUE"
            raise ConfigError(f"-o {target}:{key}={value}: {one}")


def check_and_estimate(
    config: TrainConfig,
    names: list[str],
    out: Path,
    overwrite: bool,
    data_dir: str | Path | None,
    echo: Callable[[str], None],
) -> None:
    """Refuse an occupied ``out`` and missing data, then probe every backend and say what the whole job will cost.

    In this order so that a run refused for its folder or its data has probed
    nothing, and every estimate is printed before anything trains.
    """
    local.check_out(out, names, overwrite)
    train_n, test_n = local.check_data(config, data_dir)
    threads = local.probe_threads(config)
    echo(f"Probing {len(names)} backends ({', '.join(names)}; {threads} thread(s)), a few seconds each...")
    estimates = []
    for name in names:
        probe = local.probe_backend(dataclasses.replace(config, backend=name), threads)
        estimates.append(local.estimate(probe, config, train_n, test_n))
    echo("\n".join(local.estimate_lines(estimates, config)))


def completed(outcomes: list[local.Outcome]) -> list[Path]:
    """The run folders the report covers: those with a ``metrics.json``, a failed or stopped run's included."""
    return [o.run_dir for o in outcomes if (o.run_dir / "metrics.json").is_file()]


def seeds_hint(outcomes: list[local.Outcome], names: list[str], model: str) -> str | None:
    """After several backends trained: one seed each is no verdict on quality; the command that gives one."""
    if not any(o.error is None for o in outcomes) or len(names) <= 1:
        return None
    return (
        "One seed per backend: for a verdict on whether backends reach the same quality, train seeds "
        f"(vaebench sweep --backends {','.join(names)} --models {model} --seeds 0-4), then vaebench compare."
    )


def verdict(outcomes: list[local.Outcome], names: list[str], warn: Callable[[str], None]) -> int:
    """0 when every backend completed; a signal's exit code (130, 143) when one stopped the list, said to ``warn``
    with how to resume and what never started; a :class:`VaebenchError` naming the backends that failed."""
    stopped = [o for o in outcomes if o.error == "interrupted"]
    if stopped:
        left = names[len(outcomes) :]
        warn(f"interrupted: resume {stopped[0].run_dir} with vaebench run --resume {stopped[0].run_dir}")
        if left:
            warn(f"not started: {', '.join(left)}")
        return stopped[0].returncode
    failed = [o for o in outcomes if o.error]
    if failed:
        raise VaebenchError(f"{', '.join(o.backend for o in failed)} did not complete; see each one's error above")
    return 0
