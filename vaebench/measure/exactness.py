"""``vaebench exactness``: what computing the source's network exactly costs each framework, paired in time.

``conv`` is the keras.io network as written, with TensorFlow's 'same' padding:
(0, 1) before each stride-2 convolution, and each transposed convolution
computed in full and cropped. Keras has that rule built in (``padding="same"``
on every engine); torch pads with ``F.pad`` first and crops after. ``conv-sym``
is its twin with symmetric padding (the same layers, FLOPs and parameter
shapes, the pixels shifted by one), which torch's ``Conv2d(padding=1)`` and
``ConvTranspose2d(padding=1, output_padding=1)`` take as arguments and which
Keras, having only 'valid' and 'same', must emulate with padding and cropping
layers; lax takes any padding pair, so jax computes both natively
(:data:`~vaebench.model.catalogue.NATIVE_TWINS`). The ratio of the two is what
the padding rule costs each framework, apart from its speed on the network: a
positive cost is the price of exactness, a negative one says the exact network
is the one the framework computes natively.

Why paired, and not two bench cells: the same variant timed in two benches on
this machine ran at 0.66x to 1.29x (and 0.77x to 1.24x) its own rate, so a ratio of two cells would
mostly measure drift. Here each (backend, batch size) is one cell of bench's own
coordinator (:func:`~vaebench.measure.interleave.run_cell`): a worker process for
the exact model and one for its twin, windows of about
:data:`~vaebench.measure.bench.WINDOW_SECONDS` in turn, the order rotated every
round, the other worker frozen. :func:`exactness_row` turns the windows into the
exact model's throughput over the twin's (the median of per-round paired
ratios, 95% bootstrap interval over rounds) and states it as a cost in time:
step-time overhead ``1/ratio - 1`` (a ratio of 0.8 is 25% more time per step).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, VaebenchError
from vaebench.io.fileio import atomic_write_json
from vaebench.measure.bench import WINDOW_SECONDS
from vaebench.measure.busy import Watch
from vaebench.measure.documents import BENCH_SCHEMA
from vaebench.measure.interleave import Channel, run_cell
from vaebench.measure.options import split_options
from vaebench.measure.stats import format_ratio, ratio_interval
from vaebench.measure.worker import CellRequest, WorkerProcess
from vaebench.model.catalogue import NATIVE_TWINS
from vaebench.plugin import registry
from vaebench.plugin.host import host_environment

EXACTNESS_FILE = "exactness.json"
SIDE_KEYS = ("median", "q1", "q3", "min", "max", "windows", "compile_seconds", "steps_per_window")


def twin_of(model: str) -> str:
    """The symmetrically padded twin of ``model``, or a :class:`ConfigError` naming the models that have one."""
    if model not in NATIVE_TWINS:
        known = ", ".join(f"{m} (twin {t})" for m, t in NATIVE_TWINS.items())
        raise ConfigError(f"model {model!r} has no symmetrically padded twin to price exactness against; choose {known}")
    return NATIVE_TWINS[model]


def exactness_row(backend: str, model: str, batch_size: int, cell: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One backend's cost of exactness from a :func:`run_cell` result holding ``model`` and its twin.

    ``ratio`` is the exact model's images/s over the twin's, paired by round
    (:func:`~vaebench.measure.stats.ratio_interval`); ``cost`` is the step-time
    overhead ``1/ratio - 1`` with the interval mapped through it (the high ratio
    gives the low cost). A negative cost means the exact network ran faster.
    """
    twin = twin_of(model)
    exact, native = cell[model]["train_images_per_second"], cell[twin]["train_images_per_second"]
    value, low, high = ratio_interval(exact["rounds"], native["rounds"])
    return {
        "backend": backend,
        "model": model,
        "twin": twin,
        "batch_size": batch_size,
        "exact": {k: exact[k] for k in SIDE_KEYS if k in exact} | {"rounds": exact["rounds"]},
        "native": {k: native[k] for k in SIDE_KEYS if k in native} | {"rounds": native["rounds"]},
        "ratio": {"value": value, "low": low, "high": high, "text": format_ratio(value, low, high)},
        "cost": {"value": 1 / value - 1, "low": 1 / high - 1, "high": 1 / low - 1},
        "environment": dict(cell[model].get("environment") or {}),
    }


def measure(
    backends: list[str],
    model: str,
    batch_sizes: list[int],
    rounds: int,
    threads: int,
    device: str = "auto",
    precision: str = "fp32",
    options: Mapping[str, str] | None = None,
    spawn: Callable[[CellRequest], Channel] = WorkerProcess,
    progress: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """One :func:`exactness_row` per (batch size, backend): the exact model and its twin as one interleaved cell.

    Both workers of a cell get the same backend settings (``-o``, routed as bench
    routes them), so the pair differs only in the padding rule.
    """
    twin = twin_of(model)
    for name in backends:
        registry.load(name)  # an unknown or uninstalled backend: one clear error before any worker starts
    per_backend = split_options(options or {}, backends)
    for batch in batch_sizes:
        for b in backends:
            channels: dict[str, Channel] = {}
            try:
                for m in (model, twin):
                    channels[m] = spawn(CellRequest(b, m, batch, threads, device, precision, options=dict(per_backend[b])))
                cell = run_cell(channels, batch, rounds, progress=progress, window_seconds=WINDOW_SECONDS)
            finally:
                for channel in channels.values():
                    channel.close()
            yield exactness_row(b, model, batch, cell) | {"options": dict(per_backend[b])}


def method_record(rounds: int, precision: str, load_at_start: dict[str, Any], load_at_end: dict[str, Any]) -> dict[str, Any]:
    """How the pairs were timed, so a reader can judge a figure without the code."""
    return {
        "pairing": "one cell per (backend, batch size): a worker process for the exact model and one for its twin",
        "schedule": "interleaved",
        "rounds": rounds,
        "window_seconds": WINDOW_SECONDS,
        "warmup_rounds": 1,
        "precision": precision,
        "profile": "default",
        "ratio": "exact over twin images/s: median of per-round ratios; 95% percentile bootstrap over rounds (2000, seed 0)",
        "cost": "step-time overhead 1/ratio - 1; interval mapped from the ratio's",
        "load_at_start": load_at_start,
        "load_at_end": load_at_end,
    }


def write_exactness(rows: list[dict[str, Any]], out_dir: Path, method: dict[str, Any]) -> Path:
    """``exactness.json``: the rows, how they were timed and the host; written whole each time (atomically)."""
    path = Path(out_dir) / EXACTNESS_FILE
    doc = {
        "schema_version": BENCH_SCHEMA,
        "kind": "exactness",
        "environment": host_environment(),
        "method": method,
        "results": rows,
    }
    atomic_write_json(path, doc)
    return path


def row_line(r: Mapping[str, Any]) -> str:
    """One printed row: both rates, the ratio with its interval and the cost in step time."""
    c = r["cost"]
    return (
        f"{r['backend']:12s} {r['batch_size']:5d} {r['exact']['median']:14.0f} {r['native']['median']:14.0f} "
        f"{r['ratio']['text']:>22s} {100 * c['value']:+7.1f}% [{100 * c['low']:+.1f}%, {100 * c['high']:+.1f}%]"
    )


def table_header(model: str) -> str:
    """The header :func:`row_line` rows go under."""
    twin = twin_of(model)
    sides = f"{model + ' img/s':>14s} {twin + ' img/s':>14s}"
    return f"{'backend':12s} {'batch':>5s} {sides} {'ratio (95% CI)':>22s}  step-time cost [95%]"


def run(
    out_dir: Path,
    load: dict[str, Any],
    backends: list[str],
    model: str,
    batch_sizes: list[int],
    rounds: int,
    *,
    threads: int,
    echo: Callable[[str], None],
    warn: Callable[[str], None],
    device: str = "auto",
    precision: str = "fp32",
    options: Mapping[str, str] | None = None,
) -> Path:
    """``vaebench exactness`` once its flags are checked: every pair timed, ``exactness.json`` written after each.

    A finished pair is on disk before the next starts (``complete: false`` until
    the last), so an error keeps what was measured; every row is marked with the
    load seen in its own windows (:class:`~vaebench.measure.busy.Watch`).
    """
    from vaebench.measure.busy import mark_load
    from vaebench.run.progress import progress as progress_bar

    bar = progress_bar(len(batch_sizes) * len(backends) * 2 * rounds, "exactness", "window")
    watch = Watch(load)
    rows: list[dict[str, Any]] = []
    pairs = measure(backends, model, batch_sizes, rounds, threads, device, precision, options, progress=lambda _n: bar.update(1))
    try:
        for r in watch.rows(pairs, key=lambda row: (row["backend"], row["batch_size"])):
            bar.write(row_line(r))
            rows.append(r)
            so_far = [dict(x) for x in rows]
            mark_load(so_far, load, [watch.sampler.window(*w) for w in watch.windows])
            write_exactness(so_far, out_dir, {**method_record(rounds, precision, load, load), "complete": False})
    except VaebenchError as exc:  # the pairs before it are on disk; say so in the one line
        if rows:
            exc.args = (
                f"{exc}; the {len(rows)} pair(s) measured before it kept in {out_dir / EXACTNESS_FILE} (complete: false)",
            )
        raise
    finally:
        bar.close()
    end = watch.mark(rows, warn=warn)
    return write_exactness(rows, out_dir, {**method_record(rounds, precision, load, end), "complete": True})
