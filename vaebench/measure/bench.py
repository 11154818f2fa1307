"""``vaebench bench``: the throughput matrix, cell by cell, backends interleaved; and its files.

For every (model, batch size) cell, each backend gets a fresh worker process
(:mod:`vaebench.measure.worker`) with the same thread count, and the coordinator
(:mod:`vaebench.measure.interleave`) hands out timing windows in turn, the order
rotated every round, so drift of a shared machine lands on every backend
alike. With ``--profile best`` a backend with several tunable settings is first
tuned in a worker of its own, which then exits, so the timed worker holds only
the chosen model and its memory figures are its own. Every row records the
schedule, profile, precision and variant that produced it (and the objective
its step trained on, where ``--objective`` asked for another than the plain
VAE's -ELBO: ``settings.objective``), the median, IQR
and windows, and the ratio to the cell's fastest backend with a 95% bootstrap
interval. Time to quality (:mod:`vaebench.measure.ttq`) runs after the matrix, one
fresh process per seed. This module owns the matrix and :func:`bench`, which
runs it with the load watched and writes ``bench.json`` / ``bench.csv`` after
every cell (:mod:`vaebench.measure.documents`); the statistics are in
:mod:`vaebench.measure.stats`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, VaebenchError
from vaebench.measure.busy import Watch, mark_load
from vaebench.measure.documents import read_bench_doc, write_bench
from vaebench.measure.interleave import SCHEDULES, Channel, run_cell
from vaebench.measure.options import split_options
from vaebench.measure.peak import achieved_gflops, fraction_of_peak, measure_peak_in_subprocess
from vaebench.measure.ttq import picked_variants, run_ttq_grid, ttq_batch_size
from vaebench.measure.worker import CellRequest, WorkerProcess
from vaebench.model.catalogue import get_model
from vaebench.model.costs import step_flops_per_image
from vaebench.model.loss import PLAIN, Objective
from vaebench.plugin import registry
from vaebench.plugin.host import usable_cores
from vaebench.plugin.profiles import PRECISIONS, PROFILES
from vaebench.run.progress import progress as progress_bar

TUNE_WINDOWS = 3
WINDOW_SECONDS = 1.0  # per timing window; window-to-window noise on a shared machine shrinks with longer windows
MEMORY_METHOD = "a fresh worker process per (backend, cell): peak RSS and device memory are that cell's own"


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
    peak_gflops: float | None = None,
    objective: Objective = PLAIN,
) -> Iterator[dict[str, Any]]:
    """Yield one row per (backend, model, batch size), cell by cell; see the module docstring.

    Evaluation and grid timings do not depend on the training batch size, so
    they are measured in the first cell of each model and repeated in its others.
    Every step trains on ``objective``; a row names it unless it is the plain VAE's
    (so rows of the default bench read as they always did).
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
                request = CellRequest(
                    b, model, batch, threads, device, precision, profile, compiles[b], per_backend[b], *_fields(objective)
                )
                if profile == "best":
                    request, tuning[b] = _tune(request, spawn)
                requests[b] = request
            channels: dict[str, Channel] = {}
            try:
                for b, request in requests.items():
                    channels[b] = spawn(request)
                cell = run_cell(
                    channels,
                    batch,
                    rounds,
                    schedule,
                    0 if timed else inference_repeats,
                    progress=progress,
                    window_seconds=WINDOW_SECONDS,  # the value bench.json records as window_seconds
                )
            finally:
                for channel in channels.values():
                    channel.close()
            if not timed:
                timed = {b: {k: cell[b][k] for k in ("eval_pass_seconds", "grid_decode_seconds")} for b in backends}
            for b in backends:
                ips = cell[b]["train_images_per_second"]["median"]
                yield {
                    "backend": b,
                    "model": model,
                    "batch_size": batch,
                    **cell[b],
                    **timed[b],
                    "work": work(model, batch, ips, peak_gflops, objective),
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
                        **({} if objective == PLAIN else {"objective": objective_record(objective)}),
                    },
                }


def _fields(objective: Objective) -> tuple[str, float, int]:
    """The objective as :class:`CellRequest` (and :class:`~vaebench.model.config.TrainConfig`) name it."""
    return objective.name, objective.beta, objective.samples


def ttq_variants(
    profile: str,
    ttq_models: list[str] | None,
    backends: list[str],
    models: list[str],
    batch_sizes: list[int],
    variants_from: Path | None = None,
) -> dict[tuple[str, str], dict[str, Any]] | None:
    """What time to quality trains under ``--profile best``, settled before anything is timed.

    With ``variants_from`` (``--ttq-variants-from``, a best bench's ``bench.json``):
    each (backend, model)'s variant as that bench picked it. Without it, the
    picks come from this bench's own matrix, which must then time every
    ``ttq_models`` model at its :func:`~vaebench.measure.ttq.ttq_batch_size`
    (checked here, returning ``None``: :func:`bench` looks them up once the matrix
    has run). Under ``default`` nothing is looked up (``None``).
    """
    if profile != "best" or not ttq_models:
        return None
    if variants_from is not None:
        return picked_variants(read_bench_doc(variants_from)["results"], backends, ttq_models, str(variants_from))
    missing = [f"{m} at batch {ttq_batch_size(m)}" for m in ttq_models if m not in models or ttq_batch_size(m) not in batch_sizes]
    if missing:
        raise ConfigError(
            "--profile best times to quality the variant the matrix picks, and the matrix does not time "
            f"{', '.join(missing)}: add it to --models/--batch-sizes, or pass --ttq-variants-from a best bench.json"
        )
    return None


def bench_objective(objective: Objective, ttq_models: list[str] | None) -> Objective:
    """The objective the matrix times, refused with ``ttq_models``: time to quality trains the plain VAE."""
    if ttq_models and objective != PLAIN:
        raise ConfigError("--objective times the throughput matrix; time to quality (--ttq-models) trains the plain VAE")
    return objective


def objective_record(objective: Objective) -> dict[str, Any]:
    """A row's ``settings.objective``: what its training step minimised, in the run's flags' names."""
    name, beta, iw_samples = _fields(objective)
    return {"name": name, "beta": beta, "iw_samples": iw_samples, "text": objective.describe()}


def work(
    model: str, batch_size: int, images_per_second: float, peak_gflops: float | None, objective: Objective = PLAIN
) -> dict[str, Any]:
    """What a row's step does and how fast it did it: the cost model's FLOPs per image (on the row's objective: the
    IWAE bound decodes K latents per image), achieved GFLOP/s at the row's median, and its fraction of the
    machine's measured fp32 GEMM peak (None where no peak was measured)."""
    flops = step_flops_per_image(get_model(model).spec.with_objective(objective), batch_size)
    achieved = achieved_gflops(images_per_second, flops)
    return {
        "step_flops_per_image": flops,
        "achieved_gflops": achieved,
        "fraction_of_peak": fraction_of_peak(achieved, peak_gflops) if peak_gflops else None,
        "convention": "vaebench.model.costs (the convention is recorded in explain.json and the README)",
    }


def method_record(
    schedule: str, rounds: int, profile: str, precision: str, load_at_start: dict[str, Any], load_at_end: dict[str, Any]
) -> dict[str, Any]:
    """The ``method`` of ``bench.json``: how the matrix was timed, so a reader can judge a figure without the code.

    It lives beside :func:`run_matrix` because it describes what that function
    does (its window length, its one warm-up round, a worker per cell); the
    load at the start and the end come from :mod:`vaebench.measure.busy`.
    """
    return {
        "schedule": schedule,
        "rounds": rounds,
        "window_seconds": WINDOW_SECONDS,
        "warmup_rounds": 1,
        "profile": profile,
        "precision": precision,
        "ratio": "median of per-round ratios to the cell's fastest; 95% percentile bootstrap over rounds (2000, seed 0)",
        "memory": "a fresh worker process per (backend, cell)",
        "load_at_start": load_at_start,
        "load_at_end": load_at_end,
    }


def bench_backends(names: str) -> list[str]:
    """``--backends``: a comma list, or ``all``: every installed backend but the numpy reference, too slow to time."""
    if names == "all":
        return [b for b in sorted(registry.installed()) if b != "numpy"]
    return list(dict.fromkeys(n.strip() for n in names.split(",")))  # torch,torch is one backend: one row, not two


TABLE_HEADER = (
    f"{'backend':12s} {'model':6s} {'batch':>5s} {'img/s median':>12s} {'IQR':>15s} {'n':>3s} "
    f"{'ratio to fastest (95% CI)':>26s} {'compile s':>9s} {'peak MB':>8s}"
)


def row_line(r: dict[str, Any]) -> str:
    """One row of the table ``vaebench bench`` prints as the matrix goes, under :data:`TABLE_HEADER`."""
    t = r["train_images_per_second"]
    return (
        f"{r['backend']:12s} {r['model']:6s} {r['batch_size']:5d} {t['median']:12.0f} {t['q1']:7.0f}-{t['q3']:<7.0f} "
        f"{t['windows']:3d} {r['ratio']['text']:>26s} {t['compile_seconds']:9.2f} {r['peak_rss_mb']:8.0f}"
    )


def bench(
    out_dir: Path,
    load: dict[str, Any],
    backends: list[str],
    models: list[str],
    batch_sizes: list[int],
    rounds: int,
    *,
    threads: int,
    echo: Callable[[str], None],
    warn: Callable[[str], None],
    compile: bool = False,
    options: Mapping[str, str] | None = None,
    ttq_models: list[str] | None = None,
    ttq_seeds: int = 1,
    device: str = "auto",
    precision: str = "fp32",
    profile: str = "default",
    schedule: str = "interleaved",
    inference: bool = True,
    peak_seconds: float = 4.0,
    data_dir: str | None = None,
    objective: Objective = PLAIN,
    ttq_variants_from: Path | None = None,
) -> tuple[Path, Path]:
    """``vaebench bench`` once its flags are checked: the peak, the matrix, time to quality; ``bench.json`` and CSV.

    ``load`` is the machine's at the start (:func:`~vaebench.measure.busy.check_load`,
    which has already refused a busy machine). Every finished cell is written at
    once, marked ``complete: false``, so an error in the next keeps the cells
    before it, and the error's one line says so; the last write marks every row
    with the load seen in its own windows and says ``complete: true``. Rows go
    to ``echo`` as the table they are measured into; the peak and late-busy
    lines to ``warn``. Every timed step trains on ``objective`` (time to quality
    trains the plain VAE: another objective with ``ttq_models`` is refused).
    Returns the paths of ``bench.json`` and ``bench.csv``.
    """
    bench_objective(objective, ttq_models)
    variants = ttq_variants(profile, ttq_models, backends, models, batch_sizes, ttq_variants_from)
    peak = None
    if models and batch_sizes and peak_seconds > 0:  # a matrix to time: the peak first, on the same quiet machine
        peak = measure_peak_in_subprocess(peak_seconds, threads)
        warn(f"fp32 GEMM peak: {peak['peak_gflops'] or 0:.0f} GFLOP/s ({peak.get('library', peak.get('error'))})")
    bar = progress_bar(len(models) * len(batch_sizes) * len(backends) * rounds, "bench", "window")
    results: list[dict[str, Any]] = []
    kept_rows = 0
    watch = Watch(load)  # samples the load through the matrix; each row is marked by its own windows
    matrix = (models, batch_sizes, rounds, threads, device, precision, profile, compile, options or {}, schedule)
    rows = run_matrix(
        backends,
        *matrix,
        3 if inference else 0,
        progress=lambda _name: bar.update(1),
        peak_gflops=(peak or {}).get("peak_gflops"),
        objective=objective,
    )
    try:
        for r in watch.rows(rows):
            bar.write(row_line(r))
            results.append(r)
            if len(results) % len(backends) == 0:  # a cell is whole: on disk now, so a crash in the next keeps it
                so_far = [dict(row) for row in results]  # marked provisionally; the last write marks the rows for good
                mark_load(so_far, load, [watch.sampler.window(*w) for w in watch.windows])
                partial = {**method_record(schedule, rounds, profile, precision, load, load), "complete": False}
                write_bench(so_far, out_dir, None, partial, peak)
                kept_rows = len(so_far)
    except VaebenchError as exc:  # the cells before it are on disk; say so in the one line
        if kept_rows:
            rows_word = "row" if kept_rows == 1 else "rows"
            kept = f"the {kept_rows} {rows_word} measured before it kept in {out_dir / 'bench.json'} (complete: false)"
            exc.args = (f"{exc}; {kept}",)
        raise
    finally:
        bar.close()
    settings = {"threads": threads, "data_dir": data_dir, "device": device, "precision": precision, "compile": compile}
    if profile == "best" and ttq_models and variants is None:  # checked above: the matrix timed every cell asked for
        variants = picked_variants(results, backends, ttq_models, "this bench's matrix")
    ttq = run_ttq_grid(
        backends, ttq_models or [], ttq_seeds, **settings, options=options or {}, log=echo, profile=profile, variants=variants
    )
    end = watch.mark(results, warn=warn)
    method = {**method_record(schedule, rounds, profile, precision, load, end), "complete": True}
    return write_bench(results, out_dir, ttq, method, peak)
