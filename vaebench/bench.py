"""``vaebench bench``: the throughput matrix, cell by cell, backends interleaved; and its files.

For every (model, batch size) cell, each backend gets a fresh worker process
(:mod:`vaebench.benchworker`) with the same thread count, and the coordinator
(:mod:`vaebench.interleave`) hands out timing windows in turn, the order
rotated every round, so drift of a shared machine lands on every backend
alike. With ``--profile best`` a backend with several tunable settings is first
tuned in a worker of its own, which then exits, so the timed worker holds only
the chosen model and its memory figures are its own. Every row records the
schedule, profile, precision and variant that produced it, the median, IQR
and windows, and the ratio to the cell's fastest backend with a 95% bootstrap
interval. Time to quality (:mod:`vaebench.ttq`) runs after the matrix, one
fresh process per seed. This module owns the matrix and ``bench.json`` /
``bench.csv`` / harness documents; the statistics are in :mod:`vaebench.stats`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vaebench import registry
from vaebench.benchworker import CellRequest, WorkerProcess
from vaebench.environment import host_environment, usable_cores
from vaebench.errors import BackendError, ConfigError
from vaebench.fileio import atomic_write_bytes, atomic_write_json, read_json
from vaebench.interleave import SCHEDULES, Channel, run_cell
from vaebench.profiles import PRECISIONS, PROFILES

BENCH_SCHEMA = 2
TUNE_WINDOWS = 3
WINDOW_SECONDS = 1.0  # per timing window; window-to-window noise on a shared machine shrinks with longer windows
MEMORY_METHOD = "a fresh worker process per (backend, cell): peak RSS and device memory are that cell's own"


def split_options(values: Mapping[str, str], backends: list[str]) -> dict[str, dict[str, str]]:
    """``-o KEY=VALUE`` for every backend that has KEY (an error if none has), ``-o BACKEND:KEY=VALUE`` for one."""
    per: dict[str, dict[str, str]] = {b: {} for b in backends}
    for key, value in values.items():
        target, sep, plain = key.partition(":")
        if sep:
            if target not in per:
                raise ConfigError(f"-o {key}={value} names backend {target!r}, which is not benchmarked")
            per[target][plain] = value
            continue
        takers = [b for b in backends if key in registry.load(b)[0].option_defaults]
        if not takers:
            raise ConfigError(f"no benchmarked backend has option {key!r}; see `vaebench backends` and the README")
        for b in takers:
            per[b][key] = value
    return per


def _tune(request: CellRequest, spawn: Callable[[CellRequest], Channel]) -> tuple[CellRequest, dict[str, Any] | None]:
    """``--profile best``: the request fixed to the fastest variant, and the tuning record (None: nothing to tune)."""
    worker = spawn(request)
    try:
        if worker.ready()["variants"] == 1:
            return CellRequest(**{**request.__dict__, "profile": "default"}), None
        tuned = worker.call({"op": "tune", "windows": TUNE_WINDOWS})
    finally:
        worker.close()
    choice = tuned["choice"]
    fixed = CellRequest(**{**request.__dict__, "profile": "default", "compile": choice["compile"], "options": choice["options"]})
    return fixed, tuned


def run_matrix(
    backends: list[str],
    models: list[str],
    batch_sizes: list[int],
    rounds: int,
    threads: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    profile: str = "default",
    compile: bool = False,
    options: Mapping[str, str] | None = None,
    schedule: str = "interleaved",
    inference_repeats: int = 3,
    spawn: Callable[[CellRequest], Channel] = WorkerProcess,
    progress: Callable[[str], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield one row per (backend, model, batch size), cell by cell; see the module docstring.

    Evaluation and grid timings do not depend on the training batch size, so
    they are measured in the first cell of each model and repeated in its others.
    """
    if profile not in PROFILES or precision not in PRECISIONS or schedule not in SCHEDULES:
        raise ConfigError(f"profile {profile!r}, precision {precision!r} or schedule {schedule!r} is not known")
    threads = threads or usable_cores()
    for name in backends:
        registry.load(name)  # an unknown or uninstalled backend is one clear error, before anything starts
    per_backend = split_options(options or {}, backends)
    compiles = {b: compile and "compile" in registry.load(b)[0].tunables for b in backends}
    for model in models:
        timed: dict[str, dict[str, Any]] = {}
        for batch in batch_sizes:
            requests, tuning = {}, {}
            for b in backends:
                request = CellRequest(b, model, batch, threads, device, precision, profile, compiles[b], per_backend[b])
                if profile == "best":
                    request, tuning[b] = _tune(request, spawn)
                requests[b] = request
            channels: dict[str, Channel] = {}
            try:
                for b, request in requests.items():
                    channels[b] = spawn(request)
                cell = run_cell(channels, batch, rounds, schedule, 0 if timed else inference_repeats, progress=progress)
            finally:
                for channel in channels.values():
                    channel.close()
            if not timed:
                timed = {b: {k: cell[b][k] for k in ("eval_pass_seconds", "grid_decode_seconds")} for b in backends}
            for b in backends:
                yield {
                    "backend": b,
                    "model": model,
                    "batch_size": batch,
                    **cell[b],
                    **timed[b],
                    "settings": {
                        "threads": threads,
                        "device": device,
                        "synthetic_batches": True,
                        "schedule": schedule,
                        "rounds": rounds,
                        "profile": profile,
                        "precision": precision,
                        "variant": {"compile": requests[b].compile, "options": requests[b].options},
                        "tuning": tuning.get(b),
                        "memory": MEMORY_METHOD,
                    },
                }


def write_bench(
    results: list[dict], out_dir: Path, ttq: list[dict] | None = None, method: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """``bench.json`` (results, time to quality, method, host environment) and ``bench.csv`` (one row per result)."""
    out_dir = Path(out_dir)
    doc = {
        "schema_version": BENCH_SCHEMA,
        "kind": "bench",
        "environment": host_environment(),
        "method": method or {},
        "results": results,
        "time_to_quality": ttq or [],
    }
    atomic_write_json(out_dir / "bench.json", doc)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "backend",
            "model",
            "batch_size",
            "profile",
            "precision",
            "variant",
            "schedule",
            "images_per_second_median",
            "q1",
            "q3",
            "windows",
            "ratio_to_fastest",
            "ratio_low",
            "ratio_high",
            "compile_seconds",
            "eval_pass_seconds",
            "grid_decode_seconds",
            "peak_rss_mb",
            "peak_device_memory_mb",
            "threads",
            "execution",
        ]
    )
    for r in results:
        t, s, ratio = r["train_images_per_second"], r["settings"], r["ratio"]
        variant = ", ".join(
            (["compile"] if s["variant"]["compile"] else []) + [f"{k}={v}" for k, v in s["variant"]["options"].items()]
        )
        writer.writerow(
            [
                r["backend"],
                r["model"],
                r["batch_size"],
                s["profile"],
                s["precision"],
                variant or "plugin defaults",
                s["schedule"],
                f"{t['median']:.1f}",
                f"{t['q1']:.1f}",
                f"{t['q3']:.1f}",
                t["windows"],
                f"{ratio['value']:.4f}",
                f"{ratio['low']:.4f}",
                f"{ratio['high']:.4f}",
                f"{t['compile_seconds']:.3f}",
                "" if r.get("eval_pass_seconds") is None else f"{r['eval_pass_seconds']['median']:.3f}",
                "" if r.get("grid_decode_seconds") is None else f"{r['grid_decode_seconds']['median']:.4f}",
                f"{r['peak_rss_mb']:.0f}",
                "" if r.get("peak_device_memory_mb") is None else f"{r['peak_device_memory_mb']:.0f}",
                s["threads"],
                r["environment"].get("execution", ""),
            ]
        )
    atomic_write_bytes(out_dir / "bench.csv", buffer.getvalue().encode())
    return out_dir / "bench.json", out_dir / "bench.csv"


def write_harness(rows: list[dict], path: Path) -> Path:
    """Add plugin-against-yardstick rows (``tests/benchmarks/harness_ratio.py --json``) to a harness document,
    replacing rows of the same (backend, model, batch size, options), so one file gathers every backend's run."""
    path = Path(path)
    doc: dict[str, Any] = {"schema_version": BENCH_SCHEMA, "kind": "harness", "environment": host_environment(), "results": []}
    if path.exists():
        old = read_json(path, "move it away or pick another --json")
        if not isinstance(old, dict) or old.get("kind") != "harness" or not isinstance(old.get("results"), list):
            raise BackendError(f"{path} is not a harness document; pick another --json")
        doc["results"] = old["results"]

    def key(r: dict) -> tuple:
        return r["backend"], r["model"], r["batch_size"], json.dumps(r.get("options", {}), sort_keys=True)

    new = {key(r) for r in rows}
    doc["results"] = [r for r in doc["results"] if key(r) not in new] + rows
    atomic_write_json(path, doc)
    return path
