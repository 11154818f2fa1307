"""``vaebench run --profile best``: the run's backend tuned as ``bench --profile best`` tunes it, then trained so.

:func:`best_variant` builds the run's cell (its model, batch size, objective,
device, precision and threads, with the user's own ``--compile`` and ``-o``
settings fixed, not tuned) as a :class:`~vaebench.measure.worker.CellRequest`
and hands it to bench's own tuner (:func:`vaebench.measure.bench._tune`: every
variant of the plugin's tunables timed, interleaved, in one worker process,
which exits before the run builds its model). The run then trains the winner;
:func:`tuning_record` is what its ``metrics.json`` records under ``execution``,
so a reader sees every candidate's images/s and its ratio to the default
variant. The runner never imports this module: the command line passes
:func:`tuner` (``run`` sits below ``measure``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from vaebench.measure.bench import TUNE_WINDOWS, _tune
from vaebench.measure.interleave import Channel
from vaebench.measure.worker import CellRequest, WorkerProcess
from vaebench.model.config import TrainConfig
from vaebench.plugin.host import usable_cores
from vaebench.plugin.profiles import Variant
from vaebench.run.session import Tuner


def best_variant(
    cfg: TrainConfig, threads: int | None, spawn: Callable[[CellRequest], Channel] = WorkerProcess
) -> tuple[TrainConfig, dict[str, Any]]:
    """``cfg`` (resolved) with the fastest variant's ``compile`` and ``options``, and the tuning record.

    ``threads`` is what the run will construct its backend with (``None``: every usable core).
    """
    request = CellRequest(
        cfg.backend,
        cfg.model,
        cfg.batch_size,
        threads or usable_cores(),
        cfg.device,
        cfg.precision,
        "best",
        cfg.compile,
        dict(cfg.options),
        cfg.objective,
        cfg.beta,
        cfg.iw_samples,
    )
    fixed, tuned = _tune(request, spawn)
    chosen = dataclasses.replace(cfg, compile=fixed.compile, options=dict(fixed.options))
    return chosen, tuning_record(fixed, tuned)


def tuning_record(fixed: CellRequest, tuned: dict[str, Any] | None) -> dict[str, Any]:
    """``execution`` of a best run: the profile, the variant chosen and, where there was a choice, every candidate."""
    label = Variant(fixed.compile, fixed.options).label()
    if tuned is None:
        return {"profile": "best", "tuning": {"chosen": label, "default": label, "candidates": [], "nothing_to_tune": True}}
    candidates = [dict(c) for c in tuned["candidates"]]  # label, compile, options, images/s median ..., vs_default
    method = f"bench --profile best's tuner: every variant in one worker, {TUNE_WINDOWS} interleaved windows each"
    return {
        "profile": "best",
        "tuning": {"chosen": label, "default": tuned["default"], "candidates": candidates, "method": method},
    }


def tuning_line(backend: str, execution: dict[str, Any]) -> str:
    """One line: the variant chosen and its images/s against the default variant's, with the interval; or, when
    :func:`~vaebench.plugin.profiles.choose` kept the default, the fastest other variant and why it was not taken."""
    tuning = execution["tuning"]
    if tuning.get("nothing_to_tune"):
        return f"profile best: {backend} has nothing to tune; training its default ({tuning['chosen']})"
    chosen = next(c for c in tuning["candidates"] if c["label"] == tuning["chosen"])
    n = len(tuning["candidates"])
    others = [c for c in tuning["candidates"] if c["label"] != tuning["default"]]
    if tuning["chosen"] != tuning["default"]:
        above = sum(c["vs_default"]["low"] > 1 for c in others)
        return (
            f"profile best: {backend} trains with {tuning['chosen']}: {chosen['median']:.0f} img/s, "
            f"{chosen['vs_default']['text']}x the default ({tuning['default']}); the fastest of the {above} of "
            f"{n - 1} other variants whose interval lies above 1x"
        )
    fastest = max(others, key=lambda c: c["vs_default"]["value"]) if others else None
    beside = f" (the fastest other: {fastest['label']} at {fastest['vs_default']['text']}x)" if fastest else ""
    return (
        f"profile best: {backend} trains with its default ({tuning['default']}): {chosen['median']:.0f} img/s; "
        f"none of the other {n - 1} variants is faster with its whole interval above 1x{beside}"
    )


def tuner(echo: Callable[[str], None]) -> Tuner:
    """What the runner calls before it builds the model: :func:`best_variant`, its line said to ``echo``."""

    def tune(cfg: TrainConfig, threads: int | None) -> tuple[TrainConfig, dict[str, Any]]:
        chosen, execution = best_variant(cfg, threads)
        echo(tuning_line(cfg.backend, execution))
        return chosen, execution

    return tune
