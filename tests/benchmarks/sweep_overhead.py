"""What Ray costs a sweep, and what packing gains, measured with the real commands on this machine.

    python tests/benchmarks/sweep_overhead.py --data-dir ../shared/data/mnist --json sweep_overhead.json

Two questions, each answered by wall-clock time of the commands a user types,
the two methods alternated within each repeat so drift hits both alike:

1. **Overhead per run.** ``--runs-overhead`` tiny runs, one after another, as a
   shell loop of ``vaebench run --threads 1`` against ``vaebench sweep --address`` on a Ray
   head that offers one CPU (so the sweep, too, runs them one at a time). The
   difference per run is Ray's cost: scheduling, a fresh worker process, and
   the result's return through the object store. Starting a local Ray instance
   (a sweep without ``--address``) is a fixed cost on top, measured apart.
2. **Packing.** ``--runs-packing`` tiny runs as a sequential shell loop of
   ``vaebench run`` (every run on every core, its default) against one ``vaebench sweep``
   packing one-thread runs onto the cores.

Medians and ranges over ``--repeats``. Nothing else may run meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAD_FLAGS = ["--include-dashboard", "false", "--disable-usage-stats"]
TINY = ["--models", "mlp", "--epochs", "1", "--limit-train", "2048", "--no-tensorboard"]


def _timed(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd[:6])}... failed: {proc.stderr.strip()[-500:]}")
    return seconds


def _loop(backend: str, seeds: range, root: Path, env: dict, threads: list[str]) -> float:
    """A shell loop of `vaebench run`, one run after another, total seconds."""
    total = 0.0
    for seed in seeds:
        out = root / f"run-{seed}"
        args = ["-b", backend, "-m", "mlp", "--epochs", "1", "--limit-train", "2048", "--no-tensorboard", "-q", *threads]
        total += _timed([sys.executable, "-m", "vaebench.cli", "run", *args, "--seed", str(seed), "--out", str(out)], env)
    return total


def _sweep(backend: str, seeds: range, out: Path, env: dict, address: str | None) -> float:
    cmd = [sys.executable, "-m", "vaebench.cli", "sweep", "--backends", backend, *TINY, "-q"]
    cmd += ["--seeds", f"{seeds.start}-{seeds.stop - 1}", "--out", str(out)] + (["--address", address] if address else [])
    return _timed(cmd, env)


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--runs-overhead", type=int, default=5)
    parser.add_argument("--runs-packing", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="Also write the figures here.")
    args = parser.parse_args()
    # the head and every driver in token mode: Ray 2.59+ starts `ray start` clusters with token authentication
    env = {**os.environ, "VAEBENCH_DATA_DIR": str(Path(args.data_dir).resolve()), "MPLBACKEND": "Agg", "RAY_AUTH_MODE": "token"}
    root = Path(tempfile.mkdtemp(prefix="vaebench-sweep-bench-"))
    n1, n2 = args.runs_overhead, args.runs_packing
    figures: dict[str, list[float]] = {"loop_per_run": [], "sweep_per_run": [], "ray_start": [], "loop_20": [], "sweep_20": []}
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.run(
        [ray_cli, "start", "--head", "--num-cpus", "1", "--node-ip-address", "127.0.0.1", "--port", "6390", *HEAD_FLAGS],
        capture_output=True,
        text=True,
        env=env,
    )
    if head.returncode:
        sys.exit(f"ray start failed: {head.stderr[-500:]}")
    try:
        for r in range(args.repeats):
            order = ["loop", "sweep"] if r % 2 == 0 else ["sweep", "loop"]
            for method in order:
                rep = root / f"{method}-{r}"
                if method == "loop":
                    figures["loop_per_run"].append(_loop(args.backend, range(n1), rep, env, ["--threads", "1"]) / n1)
                else:
                    figures["sweep_per_run"].append(_sweep(args.backend, range(n1), rep, env, "127.0.0.1:6390") / n1)
            print(f"repeat {r + 1}: loop {figures['loop_per_run'][-1]:.2f} s/run, sweep {figures['sweep_per_run'][-1]:.2f} s/run")
    finally:
        subprocess.run([ray_cli, "stop", "--force"], capture_output=True, env=env)
    for r in range(args.repeats):
        one = _sweep(args.backend, range(1), root / f"local1-{r}", env, None)
        figures["ray_start"].append(one - figures["sweep_per_run"][r])
        order = ["loop", "sweep"] if r % 2 == 0 else ["sweep", "loop"]
        for method in order:
            rep = root / f"pack-{method}-{r}"
            if method == "loop":
                figures["loop_20"].append(_loop(args.backend, range(n2), rep, env, []))  # a user's loop: every core
            else:
                figures["sweep_20"].append(_sweep(args.backend, range(n2), rep, env, None))
        print(f"repeat {r + 1}: {n2} runs: loop {figures['loop_20'][-1]:.0f} s, packed sweep {figures['sweep_20'][-1]:.0f} s")
    shutil.rmtree(root, ignore_errors=True)
    result = {name: _summary(values) for name, values in figures.items()}
    overhead = [s - loop for s, loop in zip(figures["sweep_per_run"], figures["loop_per_run"], strict=True)]
    result["overhead_per_run"] = _summary(overhead)
    speedup = [loop / s for s, loop in zip(figures["sweep_20"], figures["loop_20"], strict=True)]
    result["packing_speedup"] = _summary(speedup)
    result["setup"] = {"backend": args.backend, "tiny": TINY, "runs_overhead": n1, "runs_packing": n2, "repeats": args.repeats}
    cpu = os.cpu_count()

    def line(name: str, unit: str = "s") -> str:
        s = result[name]
        return f"{s['median']:.2f} {unit} (range {s['min']:.2f}-{s['max']:.2f})"

    print(f"\n{args.backend}, {' '.join(TINY)}, {cpu} cores, {args.repeats} repeats, medians:")
    print(f"  shell loop of `vaebench run`: {line('loop_per_run')} per run")
    print(f"  sweep on a 1-CPU Ray head:    {line('sweep_per_run')} per run")
    print(f"  Ray's overhead:               {line('overhead_per_run')} per run")
    print(f"  starting a local Ray:         {line('ray_start')} once per sweep")
    print(f"  {n2} runs, shell loop:        {line('loop_20')}")
    print(f"  {n2} runs, packed sweep:      {line('sweep_20')}")
    print(f"  packing speed-up:             {line('packing_speedup', 'x')}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
