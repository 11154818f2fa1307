"""The machine's fp32 peak, measured (not assumed): the best square-GEMM throughput over the installed libraries.

Why measured: a spec sheet's peak is not what this machine, these thread
settings and these BLAS builds reach. A step's achieved GFLOP/s
(:func:`achieved_gflops`, from :func:`vaebench.model.costs.step_flops_per_image`)
means something only next to what the same machine reaches on the easiest
possible work, a large float32 matrix product.

Method (recorded in the result): for each library that imports (NumPy always;
torch and jax if installed, imported only here so the core never imports a
framework at module level) and each size ``n`` in ``sizes``, one untimed
warm-up product, then products of two ``n x n`` float32 matrices, each timed
alone with the library's own synchronisation, for an equal share of
``seconds_budget``; a size's throughput is ``2 n**3 / best time``. The peak
is the best over libraries and sizes.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

Clock = Callable[[], float]
# a library's GEMM: given n, returns (run, sync): run() starts one n x n product, sync(result) waits for it
Gemm = Callable[[int], tuple[Callable[[], Any], Callable[[Any], Any]]]
SIZES = (256, 512, 1024)
METHOD = (
    "fp32 square GEMM C = A @ B (2*n^3 FLOPs), per library and size: one untimed warm-up, then products timed one "
    "by one with the library's own synchronisation for an equal share of the budget; best time per size; "
    "peak = best GFLOP/s over libraries and sizes"
)


def _numpy(n: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    a, b = (np.random.default_rng(i).random((n, n), np.float32) for i in (0, 1))
    return (lambda: a @ b), (lambda r: r)


def _torch(n: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    torch = importlib.import_module("torch")  # by name: the core imports no framework at module level
    a, b = torch.rand(n, n), torch.rand(n, n)
    return (lambda: a @ b), (lambda r: r)  # eager CPU matmul returns when done


def _jax(n: int) -> tuple[Callable[[], Any], Callable[[Any], Any]]:
    jax = importlib.import_module("jax")
    jnp = importlib.import_module("jax.numpy")
    a, b = jnp.ones((n, n), jnp.float32), jnp.ones((n, n), jnp.float32)
    f = jax.jit(jnp.matmul)
    return (lambda: f(a, b)), jax.block_until_ready


def available_libraries() -> dict[str, Gemm]:
    """NumPy plus every framework that imports here, by name."""
    libs: dict[str, Gemm] = {"numpy": _numpy}
    for name, gemm in (("torch", _torch), ("jax", _jax)):
        try:
            importlib.import_module(name)
        except ImportError:
            continue
        libs[name] = gemm
    return libs


def gemm_gflops(n: int, seconds: float) -> float:
    """Throughput of one ``n x n`` float32 product that took ``seconds``: ``2 n**3 / seconds``, in GFLOP/s."""
    if seconds <= 0:
        raise ValueError(f"a product cannot take {seconds} s")
    return 2.0 * n**3 / seconds / 1e9


def _best_time(gemm: Gemm, n: int, budget: float, clock: Clock, min_repeats: int) -> tuple[float, int]:
    run, sync = gemm(n)
    sync(run())  # warm-up: allocation, thread pool start, a jit compile
    best, repeats, start = float("inf"), 0, clock()
    while repeats < min_repeats or clock() - start < budget:
        t0 = clock()
        sync(run())
        best = min(best, clock() - t0)
        repeats += 1
    return best, repeats


def measure_peak(
    seconds_budget: float = 4.0,
    sizes: Sequence[int] = SIZES,
    libraries: Mapping[str, Gemm] | None = None,
    clock: Clock = time.perf_counter,
    min_repeats: int = 3,
) -> dict[str, Any]:
    """The best fp32 GEMM GFLOP/s over ``libraries`` (default: what is installed) and ``sizes``, and how it was measured.

    The budget is shared equally by every (library, size); each gets at least
    ``min_repeats`` timed products, so a slow machine may overrun it.
    """
    libs = dict(available_libraries() if libraries is None else libraries)
    share = seconds_budget / max(1, len(libs) * len(sizes))
    rows = []
    for name, gemm in libs.items():
        for n in sizes:
            seconds, repeats = _best_time(gemm, n, share, clock, min_repeats)
            rows.append({"library": name, "n": n, "best_seconds": seconds, "repeats": repeats, "gflops": gemm_gflops(n, seconds)})
    best = max(rows, key=lambda r: r["gflops"])
    return {
        "peak_gflops": best["gflops"],
        "library": best["library"],
        "n": best["n"],
        "method": METHOD,
        "dtype": "float32",
        "seconds_budget": seconds_budget,
        "threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")} | {"cpus": os.cpu_count()},
        "measurements": rows,
    }


def achieved_gflops(images_per_second: float, step_flops_per_image: float) -> float:
    """The work a training step does per image (:func:`vaebench.model.costs.step_flops_per_image`) times images/s, in GFLOP/s."""
    return images_per_second * step_flops_per_image / 1e9


def fraction_of_peak(achieved: float, peak: float) -> float:
    """Achieved GFLOP/s over the measured peak (``None``-free: a zero or negative peak is an error)."""
    if peak <= 0:
        raise ValueError(f"peak must be positive, got {peak}")
    return achieved / peak


def measure_peak_in_subprocess(seconds_budget: float, threads: int | None = None) -> dict[str, Any]:
    """:func:`measure_peak` in a fresh process with bench's thread count, so the coordinator imports no framework and
    no thread pool it starts outlives the measurement. A failure is recorded (``peak_gflops`` None), never fatal."""
    import json
    import subprocess
    import sys

    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, "-m", "vaebench.measure.peak", str(seconds_budget)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120 + 4 * seconds_budget)
        if proc.returncode == 0:
            return json.loads(proc.stdout.strip().splitlines()[-1])
        why = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    except (subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        why = str(exc)
    return {"peak_gflops": None, "method": METHOD, "error": why[:300]}


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(measure_peak(float(sys.argv[1]) if len(sys.argv) > 1 else 4.0)))
