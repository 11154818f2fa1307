"""The coordinator: timing windows handed out in turn to one live worker process per backend.

For one (model, batch size) cell, every backend gets a worker process
(:mod:`vaebench.measure.worker`) with the same thread count. Workers start and
build in parallel (nothing is timed then), compile one at a time, and then only
one worker computes at a time: the coordinator asks each in turn for one
timing window and waits for its answer before asking the next, and every
other worker is frozen meanwhile (SIGSTOP), so no idle thread pool, prefetch
thread or garbage collector competes for the cores. Rounds go
A B C, B C A, C A B, ...: the order rotates every round, so neither machine
drift nor going first lands on one backend. Each worker times its own window
with its framework's synchronisation; the coordinator only schedules.

``schedule="sequential"`` keeps the same workers but gives each backend all
its windows back to back, one backend after another: what vaebench did
before, kept so the two can be compared on the same machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from vaebench.measure.stats import format_ratio, images_per_second, ratio_interval, summarize
from vaebench.measure.timing import WINDOW_SECONDS, steps_for

SCHEDULES = ("interleaved", "sequential")
SETTLE_SECONDS = 0.02  # a pause between windows, so a finished worker's spinning threads have gone idle


class Channel(Protocol):
    """A worker as the coordinator sees it (a real process, or a stub in tests)."""

    def ready(self) -> dict[str, Any]: ...

    def call(self, command: dict[str, Any]) -> dict[str, Any]: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


def order(names: list[str], round_: int) -> list[str]:
    """Backends in the order they get a window in round ``round_`` of the interleaved schedule: rotated by one every round."""
    k = round_ % len(names)
    return names[k:] + names[:k]


def run_cell(
    channels: Mapping[str, Channel],
    batch_size: int,
    rounds: int,
    schedule: str = "interleaved",
    inference_repeats: int = 0,
    settle: float = SETTLE_SECONDS,
    progress: Callable[[str], None] | None = None,
    window_seconds: float = WINDOW_SECONDS,
    warmup_rounds: int = 1,
) -> dict[str, dict[str, Any]]:
    """Time every channel's windows as ``schedule`` says; returns per backend its windows and summary.

    Each backend's windows are sized to about ``window_seconds`` from its own
    probe step (one step at least); ``warmup_rounds`` untimed rounds come
    first. The result per backend holds
    ``train_images_per_second`` (:func:`vaebench.measure.stats.summarize` plus
    ``compile_seconds``, ``steps_per_window`` and ``rounds``: the windows by
    round), ``ratio`` to the fastest backend of the cell with its 95% bootstrap
    interval, the inference timings if asked, and the worker's ``finish`` reply.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}")
    names = list(channels)
    for name in names:
        channels[name].ready()
    compiled = {}
    for name in names:  # one at a time: a compile is timed alone, too
        compiled[name] = channels[name].call({"op": "compile"})
    steps = {name: steps_for(c["probe_seconds"], window_seconds) for name, c in compiled.items()}
    by_round: dict[str, list[list[float]]] = {name: [[] for _ in range(rounds)] for name in names}

    def one_window(name: str, r: int | None) -> None:
        channels[name].resume()
        reply = channels[name].call({"op": "window", "steps": steps[name]})
        channels[name].pause()
        if r is not None:
            by_round[name][r].append(images_per_second(batch_size, reply["steps"], reply["seconds"]))
            if progress:
                progress(name)
        if settle:
            time.sleep(settle)

    for name in names:  # from here on only the worker whose window it is runs at all
        channels[name].pause()
    for _ in range(warmup_rounds):  # untimed: the first windows after a compile still pay for warm-up
        for name in names:
            one_window(name, None)

    if schedule == "sequential":
        for name in names:
            for r in range(rounds):
                one_window(name, r)
    else:
        for r in range(rounds):
            for name in order(names, r):
                one_window(name, r)
    for name in names:
        channels[name].resume()
    inference = (
        {name: channels[name].call({"op": "inference", "repeats": inference_repeats}) for name in names}
        if inference_repeats
        else {}
    )
    finished = {name: channels[name].call({"op": "finish"}) for name in names}
    return summarize_cell(by_round, compiled, steps, inference, finished)


def summarize_cell(
    by_round: Mapping[str, list[list[float]]],
    compiled: Mapping[str, Mapping[str, Any]],
    steps: Mapping[str, int],
    inference: Mapping[str, Mapping[str, Any]],
    finished: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Median, IQR and windows per backend; every backend's ratio to the cell's fastest, with its interval."""
    out: dict[str, dict[str, Any]] = {}
    for name, rounds in by_round.items():
        train = summarize([v for r in rounds for v in r])
        train.update(compile_seconds=compiled[name]["compile_seconds"], steps_per_window=steps[name], rounds=rounds)
        out[name] = {
            "train_images_per_second": train,
            **dict(inference.get(name, {"eval_pass_seconds": None, "grid_decode_seconds": None})),
            **dict(finished[name]),
        }
    for name, ratio in cell_ratios(by_round).items():
        out[name]["ratio"] = ratio
    return out


def cell_ratios(by_round: Mapping[str, list[list[float]]]) -> dict[str, dict[str, Any]]:
    """Every backend's paired ratio to the cell's fastest, with its interval.

    Medians of paired ratios do not compose across pairs (A over B and B over C
    say nothing exact about A over C), so the fastest is not found through an
    anchor: it is the backend whose paired ratio against *every* other is at
    least 1 (of several, the one whose smallest such ratio is largest). Where
    no backend beats all others (the pairs disagree in a cycle) the cell has
    no clear fastest: ratios are then to the backend whose worst pairing is
    best, and ``clear`` is false. A ratio above 1 against the reference (the
    median of an even number of rounds is not the reciprocal of the median of
    the reciprocals, and without a clear fastest pairs may disagree) is shown
    as a tie, never as a number above 1.
    """
    names = list(by_round)
    point = {(a, b): ratio_interval(by_round[a], by_round[b])[0] for a in names for b in names if a != b}

    def worst(n: str) -> float:
        return min((point[n, m] for m in names if m != n), default=1.0)

    beats_all = [n for n in names if worst(n) >= 1]
    fastest = max(beats_all or names, key=worst)
    clear = bool(beats_all)
    out = {}
    for name in names:
        value, low, high = ratio_interval(by_round[name], by_round[fastest])
        tie = name != fastest and value > 1
        if tie:
            text = "tie" if low == high else f"tie ({format_ratio(value, low, high).split(' ', 1)[1][1:-1]})"
        elif name == fastest and not clear:
            text = "1 (no clear fastest)"
        else:
            text = format_ratio(value, low, high)
        out[name] = {"to": fastest, "value": value, "low": low, "high": high, "text": text, "tie": tie, "clear": clear}
    return out
