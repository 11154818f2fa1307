"""``vaebench bench``: the throughput matrix, one backend per process, one at a time.

Method (the same for every backend, in :mod:`vaebench.timing`): the first train
step is timed alone (``compile_seconds``), one more is discarded, then
``repeats`` windows of enough steps to last about half a second each, every
window closed by the backend's synchronisation; images/s is reported as the
median with quartiles and extremes. Batches are synthetic (uniform pixels,
normal noise) of the real shapes: speed does not depend on pixel values, and
the matrix runs without the data set. Also timed: one evaluation pass over
10,000 images (in chunks of 1,000, as the runner evaluates) and decoding the
20x20 grid. Fairness: every backend gets the same intra-op thread count
(``--threads``, default every usable core), set explicitly, and the same float32
precision settings (each plugin's default: full float32, no TF32).
"""

from __future__ import annotations

import csv
import io
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from vaebench import registry
from vaebench.environment import host_environment, usable_cores
from vaebench.errors import BackendError
from vaebench.evaluation import grid_points
from vaebench.fileio import atomic_write_bytes, atomic_write_json
from vaebench.spec import AdamConfig, get_model
from vaebench.timing import measure
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


def bench_one(backend: str, model_name: str, batch_size: int, repeats: int, threads: int, device: str = "auto") -> dict:
    """Measure one (backend, model, batch size) in this process; see the module docstring."""
    backend_cls, plugin = registry.load(backend)
    be = backend_cls(device=device, threads=threads)
    spec = get_model(model_name).spec
    model = be.build(spec, AdamConfig())
    model.load_weights(init_params(spec, 0))
    gen = np.random.default_rng(0)
    x = gen.random((batch_size, 28, 28, 1), dtype=np.float32)
    eps = gen.standard_normal((batch_size, spec.latent_dim), dtype=np.float32)

    def step() -> Any:
        return model.train_step(x, eps)

    def sync(out: Any) -> None:
        model.fetch([out])

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
        "settings": {"threads": threads, "device": device, "synthetic_batches": True},
        "environment": be.environment(),
        "plugin": plugin.describe(),
    }


def _worker() -> None:
    """``python -m vaebench.bench BACKEND MODELS BATCHES REPEATS THREADS DEVICE``: one JSON line per result."""
    backend, models, batches, repeats, threads, device = sys.argv[1:7]
    for model_name in models.split(","):
        for batch_size in map(int, batches.split(",")):
            result = bench_one(backend, model_name, batch_size, int(repeats), int(threads), device)
            print(json.dumps(result), flush=True)


def run_matrix(
    backends: list[str], models: list[str], batch_sizes: list[int], repeats: int, threads: int | None, device: str = "auto"
) -> Iterator[dict]:
    """Each backend in a fresh process, one after another; yields results as they arrive."""
    threads = threads or usable_cores()
    for name in backends:
        if name not in registry.installed():
            registry.load(name)  # raises the "not installed; install with" error
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
        ]
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("{"):
                    yield json.loads(line)
            err = proc.stderr.read() if proc.stderr else ""
            if proc.wait() != 0:
                last = [ln for ln in err.strip().splitlines() if ln.strip()]
                raise BackendError(f"benchmark of {name} failed: {last[-1] if last else proc.returncode}")


def write_bench(results: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """``bench.json`` (results plus host environment) and ``bench.csv`` (one row per result), atomically."""
    out_dir = Path(out_dir)
    doc = {"schema_version": BENCH_SCHEMA, "kind": "bench", "environment": host_environment(), "results": results}
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
                r["settings"]["threads"],
                r["environment"].get("execution", ""),
            ]
        )
    atomic_write_bytes(out_dir / "bench.csv", buffer.getvalue().encode())
    return out_dir / "bench.json", out_dir / "bench.csv"


if __name__ == "__main__":
    _worker()
