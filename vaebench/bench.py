"""``vaebench bench``: the throughput matrix, one backend per process, one at a time.

Method (the same for every backend, in :mod:`vaebench.timing`): the first train
step is timed alone (``compile_seconds``), one more is discarded, then
``repeats`` windows of enough steps to last about half a second each, every
window closed by the backend's synchronisation; images/s is reported as the
median with quartiles and extremes. Batches are synthetic (uniform pixels,
normal noise) of the real shapes, four of them cycled and staged ahead on a
background thread as the runner stages them (:mod:`vaebench.prefetch`): speed
does not depend on pixel values, and the matrix runs without the data set.
Also timed: one evaluation pass over
10,000 images (in chunks of 1,000, as the runner evaluates) and decoding the
20x20 grid. Fairness: every backend gets the same intra-op thread count
(``--threads``, default every usable core), set explicitly, and the same float32
precision settings (each plugin's default: full float32, no TF32).
"""

from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vaebench import registry
from vaebench.contract import Model
from vaebench.environment import host_environment, usable_cores
from vaebench.errors import BackendError
from vaebench.evaluation import grid_points
from vaebench.fileio import atomic_write_bytes, atomic_write_json
from vaebench.prefetch import Prefetcher
from vaebench.spec import AdamConfig, get_model
from vaebench.timing import Step, Sync, measure, summarize
from vaebench.weights import init_params

BENCH_SCHEMA = 1
WINDOW_SECONDS = 0.5
EVAL_IMAGES = 10_000
EVAL_CHUNK = 1_000


def _timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    fn()  # warm-up: compiles the evaluation graph where there is one
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


def synthetic_batches(gen: np.random.Generator, batch_size: int, latent_dim: int, n: int = 4) -> list[tuple[Any, Any]]:
    """``n`` distinct ``(x, eps)`` batches of the real shapes, cycled by :func:`staged_feed`."""
    return [
        (
            gen.random((batch_size, 28, 28, 1), dtype=np.float32),
            gen.standard_normal((batch_size, latent_dim), dtype=np.float32),
        )
        for _ in range(n)
    ]


@contextlib.contextmanager
def staged_feed(model: Model, batches: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[Step, Sync]]:
    """``(step, sync)`` for :func:`vaebench.timing.measure` that trains as the runner does.

    Each step takes the next of ``batches`` (cycled), staged ahead on the
    :class:`~vaebench.prefetch.Prefetcher` thread, so the timed path is the
    runner's: contract checks, staging, ``train_staged``, and a fetch to close
    each window.
    """
    with Prefetcher(itertools.cycle(batches), lambda b: model.stage(*b)) as feed:
        yield (lambda: model.train_staged(next(feed)[1])), (lambda out: model.fetch([out]))


def bench_one(
    backend: str, model_name: str, batch_size: int, repeats: int, threads: int, device: str = "auto", inference: bool = True
) -> dict:
    """Measure one (backend, model, batch size) in this process; see the module docstring.

    ``inference=False`` skips the evaluation-pass and grid timings, which do not
    depend on the training batch size (the worker times them once per model).
    """
    backend_cls, plugin = registry.load(backend)
    be = backend_cls(device=device, threads=threads)
    spec = get_model(model_name).spec
    model = be.build(spec, AdamConfig())
    model.load_weights(init_params(spec, 0))
    gen = np.random.default_rng(0)
    with staged_feed(model, synthetic_batches(gen, batch_size, spec.latent_dim)) as (step, sync):
        t0 = time.perf_counter()
        sync(step())
        compile_seconds = time.perf_counter() - t0
        t0 = time.perf_counter()
        sync(step())
        per_step = time.perf_counter() - t0
        steps = max(1, math.ceil(WINDOW_SECONDS / max(per_step, 1e-6)))
        train = measure({"train": (step, sync)}, batch_size, windows=repeats, steps=steps, warmup=1)["train"].summary()
    train["compile_seconds"] = compile_seconds
    train["steps_per_window"] = steps

    evaluation = grid = None
    if inference:
        ex = gen.random((EVAL_CHUNK, 28, 28, 1), dtype=np.float32)
        eeps = gen.standard_normal((EVAL_CHUNK, spec.latent_dim), dtype=np.float32)
        evaluation = _timed(lambda: [model.evaluate(ex, eeps) for _ in range(EVAL_IMAGES // EVAL_CHUNK)], max(1, repeats // 2))
        z = grid_points(spec.latent_dim, 0)
        grid = _timed(lambda: model.decode(z), repeats)
    return {
        "backend": backend,
        "model": model_name,
        "batch_size": batch_size,
        "train_images_per_second": train,
        "eval_pass_seconds": evaluation,
        "grid_decode_seconds": grid,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_device_memory_mb": model.peak_device_memory_mb(),
        "settings": {"threads": threads, "device": device, "synthetic_batches": True},
        "environment": be.environment(),
        "plugin": plugin.describe(),
    }


# Time-to-quality targets (test -ELBO, nats; [0, 1] targets, default batch sizes): reached by every
# backend within a few epochs on MNIST here (mlp: ~128 after one epoch; conv: ~192 after one).
TTQ_TARGETS = {"mlp": 120.0, "conv": 170.0, "seed": 200.0}
TTQ_MAX_EPOCHS = 10


def time_to_quality(backend: str, model_name: str, seed: int, threads: int, data_dir: str | None, device: str = "auto") -> dict:
    """Wall-clock seconds from the first touch of the data until the test -ELBO first reaches the model's target.

    The clock starts before the data set is read, MLPerf-style, and includes
    building the model, compiling, every epoch and every evaluation.
    """
    from vaebench.data import load_dataset
    from vaebench.evaluation import evaluate_split
    from vaebench.runner import StopFlag, train_epoch
    from vaebench.spec import TrainConfig

    t0 = time.perf_counter()
    cfg = TrainConfig(backend=backend, model=model_name, seed=seed, threads=threads, device=device).resolved()
    data = load_dataset(cfg.dataset, data_dir)
    be = registry.load(backend)[0](device=device, threads=threads)
    model = be.build(cfg.spec, cfg.adam)
    model.load_weights(init_params(cfg.spec, seed))
    timing: dict = {"first_step_seconds": None}
    target = TTQ_TARGETS[model_name]
    result = {"backend": backend, "model": model_name, "seed": seed, "target": target, "epochs": None, "seconds": None}
    for epoch in range(1, TTQ_MAX_EPOCHS + 1):
        train_epoch(model, data.train_images, cfg, epoch, timing, False, StopFlag())
        result["test_neg_elbo"] = evaluate_split(model, data.test_images, cfg.eval_batch_size, seed)["neg_elbo"]
        if result["test_neg_elbo"] <= target:
            result.update(epochs=epoch, seconds=time.perf_counter() - t0)
            break
    return result


def trimmed_ttq(entries: list[dict]) -> dict[str, Any]:
    """Median and range of time to quality over seeds, fastest and slowest dropped (when there are 3+)."""
    times = sorted(e["seconds"] for e in entries if e["seconds"] is not None)
    kept = times[1:-1] if len(times) >= 3 else times
    return {
        "median": statistics.median(kept) if kept else None,
        "min": kept[0] if kept else None,
        "max": kept[-1] if kept else None,
        "seeds": len(entries),
        "reached": len(times),
    }


def _worker() -> None:
    """``python -m vaebench.bench BACKEND MODELS BATCHES REPEATS THREADS DEVICE TTQ_SEEDS DATA_DIR TTQ_MODELS INFERENCE``."""
    backend, models, batches, repeats, threads, device, ttq_seeds, data_dir, ttq_models, inference = sys.argv[1:11]
    for model_name in models.split(","):
        timed: dict = {} if inference == "1" else {"eval_pass_seconds": None, "grid_decode_seconds": None}
        for batch_size in map(int, batches.split(",")):
            result = bench_one(backend, model_name, batch_size, int(repeats), int(threads), device, inference=not timed)
            timed = timed or {k: result[k] for k in ("eval_pass_seconds", "grid_decode_seconds")}
            result.update(timed)  # measured once per model: they do not depend on the training batch size
            print(json.dumps(result), flush=True)
        if int(ttq_seeds) and model_name in ttq_models.split(","):
            runs = [
                time_to_quality(backend, model_name, s, int(threads), data_dir or None, device) for s in range(int(ttq_seeds))
            ]
            print(
                json.dumps({"kind": "ttq", "backend": backend, "model": model_name, "runs": runs, **trimmed_ttq(runs)}),
                flush=True,
            )


def run_matrix(
    backends: list[str],
    models: list[str],
    batch_sizes: list[int],
    repeats: int,
    threads: int | None,
    device: str = "auto",
    ttq_seeds: int = 0,
    data_dir: str | None = None,
    ttq_models: list[str] | None = None,
    rounds: int = 1,
) -> Iterator[dict]:
    """Each backend in a fresh process, one after another; yields results as they arrive, marked with their ``round``.

    With ``rounds`` > 1 the whole matrix runs again, backends in reverse order
    every other round, so slow drift of a shared machine lands on every backend
    alike; time to quality and the inference timings run in the first round only.
    :func:`merge_rounds` pools the windows.
    """
    threads = threads or usable_cores()
    for name in backends:
        if name not in registry.installed():
            registry.load(name)  # raises the "not installed; install with" error
    for round_ in range(rounds):
        for result in _run_round(
            backends if round_ % 2 == 0 else backends[::-1],
            models,
            batch_sizes,
            repeats,
            threads,
            device,
            ttq_seeds if round_ == 0 else 0,
            data_dir,
            ttq_models,
            round_ == 0,
        ):
            yield {**result, "round": round_}


def merge_rounds(results: list[dict]) -> list[dict]:
    """One result per (backend, model, batch size): windows of every round pooled and summarised again.

    ``round_medians`` keeps each round's median, so drift between rounds stays visible;
    compile time is the median over rounds; peak memory the largest; the rest from the first round.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["backend"], r["model"], r["batch_size"]), []).append(r)
    merged = []
    for group in groups.values():
        group.sort(key=lambda r: r.get("round", 0))
        trains = [r["train_images_per_second"] for r in group]
        train = summarize([ips for t in trains for ips in t["samples"]])
        train.update(
            compile_seconds=statistics.median(t["compile_seconds"] for t in trains),
            steps_per_window=trains[0].get("steps_per_window"),
            round_medians=[t["median"] for t in trains],
        )
        memory = [r["peak_device_memory_mb"] for r in group if r.get("peak_device_memory_mb") is not None]
        first = {k: v for k, v in group[0].items() if k != "round"}
        merged.append(
            {
                **first,
                "train_images_per_second": train,
                "peak_rss_mb": max(r["peak_rss_mb"] for r in group),
                "peak_device_memory_mb": max(memory) if memory else None,
                "settings": {**first["settings"], "rounds": len(group)},
            }
        )
    return merged


def _run_round(
    backends: list[str],
    models: list[str],
    batch_sizes: list[int],
    repeats: int,
    threads: int,
    device: str,
    ttq_seeds: int,
    data_dir: str | None,
    ttq_models: list[str] | None,
    inference: bool,
) -> Iterator[dict]:
    for name in backends:
        cmd = [
            sys.executable,
            "-m",
            "vaebench.bench",
            name,
            ",".join(models),
            ",".join(map(str, batch_sizes)),
            str(repeats),
            str(threads),
            device,
            str(ttq_seeds),
            data_dir or "",
            ",".join(ttq_models if ttq_models is not None else models),
            "1" if inference else "0",
        ]
        # stderr to a file, not a pipe: a chatty framework must not block the worker on a full pipe
        with (
            tempfile.TemporaryFile("w+") as errors,
            subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True) as proc,
        ):
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("{"):
                    yield json.loads(line)
            failed = proc.wait() != 0
            errors.seek(0)
            err = errors.read()
            if failed:
                last = [ln for ln in err.strip().splitlines() if ln.strip()]
                raise BackendError(f"benchmark of {name} failed: {last[-1] if last else proc.returncode}")


def write_bench(results: list[dict], out_dir: Path, ttq: list[dict] | None = None) -> tuple[Path, Path]:
    """``bench.json`` (results, time to quality, host environment) and ``bench.csv`` (one row per result), atomically."""
    out_dir = Path(out_dir)
    doc = {
        "schema_version": BENCH_SCHEMA,
        "kind": "bench",
        "environment": host_environment(),
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
            "images_per_second_median",
            "q1",
            "q3",
            "min",
            "max",
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
        t = r["train_images_per_second"]
        writer.writerow(
            [
                r["backend"],
                r["model"],
                r["batch_size"],
                f"{t['median']:.1f}",
                f"{t['q1']:.1f}",
                f"{t['q3']:.1f}",
                f"{t['min']:.1f}",
                f"{t['max']:.1f}",
                f"{t['compile_seconds']:.3f}",
                f"{r['eval_pass_seconds']['median']:.3f}",
                f"{r['grid_decode_seconds']['median']:.4f}",
                f"{r['peak_rss_mb']:.0f}",
                "" if r.get("peak_device_memory_mb") is None else f"{r['peak_device_memory_mb']:.0f}",
                r["settings"]["threads"],
                r["environment"].get("execution", ""),
            ]
        )
    atomic_write_bytes(out_dir / "bench.csv", buffer.getvalue().encode())
    return out_dir / "bench.json", out_dir / "bench.csv"


if __name__ == "__main__":
    _worker()


def write_harness(rows: list[dict], path: Path) -> Path:
    """Add plugin-against-reference rows to a harness document, replacing rows of the same
    (backend, model, batch size, options), so one file gathers every backend's run."""
    path = Path(path)
    doc: dict[str, Any] = {"schema_version": BENCH_SCHEMA, "kind": "harness", "environment": host_environment(), "results": []}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise BackendError(f"{path} exists but is not readable JSON ({exc}); move it away or pick another --json") from None
        if old.get("kind") != "harness":
            raise BackendError(f"{path} is not a harness document; pick another --json")
        doc["results"] = old["results"]

    def key(r: dict) -> tuple:
        return r["backend"], r["model"], r["batch_size"], json.dumps(r.get("options", {}), sort_keys=True)

    new = {key(r) for r in rows}
    doc["results"] = [r for r in doc["results"] if key(r) not in new] + rows
    atomic_write_json(path, doc)
    return path
