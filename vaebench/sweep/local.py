"""``vaebench run --backend torch,jax,keras``: the same model and recipe trained in several backends, one after another.

The question vaebench exists for (how do the frameworks compare on this VAE?)
in one command. Before anything trains, each backend is *probed*: a fresh
process builds the model and times a few training steps on synthetic batches of
the real shapes (the bench worker, :mod:`vaebench.measure.worker`), so the user
learns what the whole job will cost before waiting for it (a JAX conv epoch on a
2-core CPU takes minutes, not seconds). Then each backend trains in a fresh
process of its own into ``<out>/<backend>/`` (Keras engines cannot share a
process, and a fresh process gives each run its own thread pools and memory),
sequentially, so no run's timing is disturbed by another's. The report over the
folder is written by the command line (``report`` sits above this layer).

A failed backend does not lose the others: its error is kept and the next
backend runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaebench.errors import BackendError, ConfigError, Terminated, VaebenchError
from vaebench.io.datasets import load_dataset
from vaebench.measure.worker import CellRequest, WorkerProcess
from vaebench.model.batches import steps_per_epoch
from vaebench.model.config import TrainConfig
from vaebench.plugin import registry
from vaebench.plugin.host import default_threads, load_snapshot
from vaebench.run.results import METRICS, final_figure

TRAIN_IMAGES = 60_000  # MNIST and Fashion-MNIST: 60,000 training and 10,000 test images
TEST_IMAGES = 10_000
PROBE_SECONDS = 2.0  # the timed window of a probe: long enough to average a few steps, short enough to wait for
PROBE_MAX_STEPS = 50
# An evaluation image costs about a third of a training image (a forward pass, no backward, no update): the one
# figure of the estimate that is not measured by the probe, and said so in the table's note.
EVAL_COST = 1 / 3
REFERENCE = "numpy"  # float64 and slow: the parity reference, not a framework to compare; ``all`` leaves it out


def parse_backends(text: str, installed: list[str]) -> list[str]:
    """``torch,jax,keras`` or ``all`` (every installed plugin but the NumPy reference), checked against ``installed``."""
    if text.strip() == "all":
        names = [n for n in sorted(installed) if n != REFERENCE]
        if not names:
            raise BackendError("--backend all: no framework plugin is installed (see `vaebench backends`)")
        return names
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--backend: name at least one backend, e.g. torch,jax,keras, or all")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"--backend names {', '.join(dupes)} twice")
    missing = [n for n in names if n not in installed]
    if missing:
        hints = "; ".join(f"{n}: {registry.KNOWN[n]}" if n in registry.KNOWN else f"{n}: unknown" for n in missing)
        raise BackendError(f"not installed: {hints} (installed: {', '.join(sorted(installed)) or 'none'})")
    return names


@dataclass(frozen=True)
class Probe:
    """What a short probe of one backend measured, in seconds."""

    backend: str
    startup_seconds: float  # process start, imports and model build, until the worker said ready
    first_step_seconds: float  # the first training step alone: tracing, compilation, warm-up
    step_seconds: float  # a steady training step, the mean over ``steps``
    steps: int
    threads: int


@dataclass(frozen=True)
class Estimate:
    """A backend's expected cost for a run of ``cfg``, from its :class:`Probe`."""

    backend: str
    images_per_second: float
    epoch_seconds: float  # training plus the test-set evaluation after it
    total_seconds: float  # start-up, first step, every epoch, the final evaluation


def estimate(probe: Probe, cfg: TrainConfig, train_images: int = TRAIN_IMAGES, test_images: int = TEST_IMAGES) -> Estimate:
    """The arithmetic of the cost table: probed step time times the steps of the run, evaluation at :data:`EVAL_COST`.

    ``cfg`` is resolved (model defaults filled in). ``--limit-train`` shortens
    the epochs; every epoch evaluates the whole test set, and so does the end
    (plus ``eval_k`` importance samples per test image, costed as ``eval_k``
    evaluation passes).
    """
    n = min(train_images, cfg.limit_train) if cfg.limit_train else train_images
    steps = steps_per_epoch(n, cfg.batch_size)
    per_image = probe.step_seconds / cfg.batch_size
    evaluation = test_images * per_image * EVAL_COST
    epoch = steps * probe.step_seconds + evaluation
    final = evaluation * (1 + cfg.eval_k)
    first = max(0.0, probe.first_step_seconds - probe.step_seconds) if cfg.epochs and steps else 0.0
    total = probe.startup_seconds + first + cfg.epochs * epoch + final
    return Estimate(probe.backend, cfg.batch_size / probe.step_seconds, epoch, total)


def duration(seconds: float) -> str:
    """``0.4 s``, ``42 s``, ``3.5 min``, ``2.1 h``: a human reading of an estimate."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_lines(estimates: list[Estimate], cfg: TrainConfig) -> list[str]:
    """The cost table printed before anything trains, with the total and what the figures are."""
    rows = [(e.backend, f"{e.images_per_second:,.0f}", duration(e.epoch_seconds), duration(e.total_seconds)) for e in estimates]
    total = sum(e.total_seconds for e in estimates)
    rows.append(("total", "", "", duration(total)))
    header = ("backend", "img/s (probe)", "per epoch", "whole run")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]

    def fmt(r: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))

    n = f"first {cfg.limit_train} of " if cfg.limit_train else ""
    return [
        f"Estimated cost: {cfg.model}, {cfg.epochs} epoch{'' if cfg.epochs == 1 else 's'} of {n}the training images "
        f"at batch size {cfg.batch_size}, backends one after another:",
        fmt(header),
        *map(fmt, rows),
        "(training steps timed by a short probe on synthetic batches; evaluation estimated at a third of a training "
        "image; a busy machine is slower)",
    ]


def probe_backend(cfg: TrainConfig, threads: int) -> Probe:
    """Build ``cfg``'s model in a fresh worker process and time a few training steps (a few seconds)."""
    request = CellRequest(
        backend=cfg.backend,
        model=cfg.model,
        batch_size=cfg.batch_size,
        threads=threads,
        device=cfg.device,
        precision=cfg.precision,
        compile=cfg.compile,
        options=dict(cfg.options),
    )
    t0 = time.perf_counter()
    worker = WorkerProcess(request)
    try:
        worker.ready()
        startup = time.perf_counter() - t0
        first = worker.call({"op": "compile"})
        steps = max(1, min(PROBE_MAX_STEPS, math.ceil(PROBE_SECONDS / max(first["probe_seconds"], 1e-6))))
        timed = worker.call({"op": "window", "steps": steps})
    finally:
        worker.close()
    return Probe(cfg.backend, startup, first["compile_seconds"], timed["seconds"] / steps, steps, threads)


def probe_threads(cfg: TrainConfig) -> int:
    """The thread count a run would choose now (``--threads``, else the cores the machine's load leaves free)."""
    if cfg.threads:
        return cfg.threads
    load = load_snapshot()
    return default_threads(load["usable_cores"], load["busy_cores"])


def check_data(cfg: TrainConfig, data_dir: str | Path | None) -> tuple[int, int]:
    """Load the data once, before any probe or run: a missing file fails here, not once per backend.

    Returns the training images a run will use (after ``--limit-train``) and the test images.
    """
    dataset = load_dataset(cfg.dataset, data_dir)
    n = len(dataset.train_images)
    return (min(n, cfg.limit_train) if cfg.limit_train else n), len(dataset.test_images)


def check_out(out: Path, backends: list[str], overwrite: bool) -> None:
    """Refuse, before any probe, an ``out`` that already holds a run of one of ``backends`` (unless ``overwrite``)."""
    taken = [b for b in backends if (out / b / METRICS).exists()]
    if taken and not overwrite:
        raise ConfigError(f"{out} already holds runs of {', '.join(taken)}; choose another --out or pass --overwrite")


@dataclass
class Outcome:
    """One backend's run: its folder, and the error that stopped it (``None`` when it completed)."""

    backend: str
    run_dir: Path
    error: str | None = None
    returncode: int = 0


def train_one(cfg: TrainConfig, run_dir: Path, options: dict[str, Any]) -> subprocess.CompletedProcess:
    """``cfg`` trained in a fresh process (``python -m vaebench.sweep.local``), its output on this terminal."""
    spec = {"config": dataclasses.asdict(cfg), "run_dir": str(run_dir), **options}
    env = {**os.environ, "MPLBACKEND": os.environ.get("MPLBACKEND", "Agg")}
    return subprocess.run([sys.executable, "-m", "vaebench.sweep.local", json.dumps(spec)], env=env, check=False)


def run_backends(
    cfg: TrainConfig,
    backends: list[str],
    out: Path,
    log: Callable[[str], None] = print,
    train: Callable[[TrainConfig, Path, dict[str, Any]], subprocess.CompletedProcess] = train_one,
    **options: Any,
) -> list[Outcome]:
    """Train ``cfg`` once per backend into ``out/<backend>/``, one after another; every outcome, failures included.

    ``options`` (``data_dir``, ``progress``, ``overwrite``, ``tensorboard``,
    ``mlflow``, ``profile``) are passed to each run; with ``profile="best"`` each run's process first tunes its
    backend (:mod:`vaebench.measure.tune`) and trains the variant it chose.
    """
    outcomes = []
    for i, name in enumerate(backends, 1):
        run_dir = out / name
        log(f"[{i}/{len(backends)}] {name} -> {run_dir}/")
        proc = train(dataclasses.replace(cfg, backend=name), run_dir, options)
        if proc.returncode in (130, 143):  # Ctrl-C or SIGTERM: the child checkpointed; stop here, keep what is done
            outcomes.append(Outcome(name, run_dir, "interrupted", proc.returncode))
            break
        error = None if proc.returncode == 0 else f"exit code {proc.returncode} (its error is above)"
        outcomes.append(Outcome(name, run_dir, error, proc.returncode))
    return outcomes


def main() -> None:
    """``python -m vaebench.sweep.local '<spec JSON>'``: one run, as ``vaebench run`` would train it."""
    from vaebench.measure.tune import tuner
    from vaebench.run.runner import train_and_evaluate
    from vaebench.run.signals import terminate_cleanly

    terminate_cleanly()
    spec = json.loads(sys.argv[1])
    quiet = not spec.get("progress", True)
    try:
        metrics = train_and_evaluate(
            TrainConfig(**spec["config"]),
            Path(spec["run_dir"]),
            data_dir=spec.get("data_dir"),
            progress=not quiet,
            overwrite=bool(spec.get("overwrite")),
            log=(lambda _msg: None) if quiet else print,
            tensorboard=bool(spec.get("tensorboard", True)),
            mlflow=spec.get("mlflow"),
            tune=tuner(print) if spec.get("profile") == "best" else None,  # run --profile best: tuned in this process
        )
    except VaebenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, Terminated) as exc:
        print("interrupted; no file was left half-written", file=sys.stderr)
        sys.exit(143 if isinstance(exc, Terminated) else 130)
    print(f"{final_figure(metrics['final'])}; wrote {spec['run_dir']}/")


if __name__ == "__main__":
    main()
