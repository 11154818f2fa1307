"""``vaebench sweep`` from its settings to Ray and back: the checks and the order the command promises.

Every refusal comes before anything is written, in seconds: a backend that
is not installed, Ray missing, a cluster that cannot be reached (before Ray's
own minutes of retries), a sweep already in the folder, data that is not
there (checked once, not once per run). Only then is the folder made and
``sweep.json`` written; :func:`vaebench.sweep.cluster.execute` runs the grid,
and :func:`finish` says what came of it (and whether the runs are comparable). A resumed sweep keeps its own grid
and settings; only where things are (the data, the cluster) may change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vaebench.errors import VaebenchError
from vaebench.plugin import registry
from vaebench.run.results import COMPARABLE, METRICS, comparable, read_metrics
from vaebench.sweep import plan
from vaebench.sweep.cluster import check_reachable, require_ray
from vaebench.sweep.preflight import check_runs


def check_cluster(address: str | None) -> None:
    """Ray importable and the cluster at ``address`` answering (``None``: a local Ray), before any folder exists."""
    require_ray()
    check_reachable(address)  # in seconds, before Ray's own minutes of retries


def resume(sweep_dir: Path, data_dir: str | None, address: str | None) -> tuple[dict[str, Any], str | None]:
    """A stopped sweep's record, with a new ``data_dir`` if given, and the address to run it on (``address``, or the
    one it recorded); the cluster and the data of the runs not yet completed are checked first."""
    record = plan.read_record(sweep_dir)
    record["settings"] = plan.resume_settings(record, data_dir)
    address = address or record["settings"].get("address")
    check_cluster(address)
    datasets = [r["config"].get("dataset", "mnist") for r in record["runs"] if r["status"] != plan.COMPLETED]
    plan.check_data(datasets, record["settings"].get("data_dir"), address)
    return record, address


def plan_new(toml_file: Path | None, flags: Mapping[str, Any]) -> tuple[dict[str, Any], plan.Grid, list[plan.Run]]:
    """The settings (the file's, flags given overriding), the grid and its runs; a backend not installed here refused,
    and a run whose options its backend refuses or that reserves more CPUs than this machine has (before Ray)."""
    settings = plan.merge_settings(toml_file, flags)
    grid = plan.make_grid(settings)
    runs = grid.expand()
    missing = sorted({r.config.backend for r in runs} - set(registry.installed()))
    if missing:
        raise VaebenchError(f"backend {', '.join(missing)} is not installed here; see `vaebench backends`")
    check_runs(runs, settings)  # each run's options and CPUs: a dry run refuses what the real sweep would
    return settings, grid, runs


def dry_run_lines(runs: list[plan.Run], settings: Mapping[str, Any]) -> list[str]:
    """``--dry-run``: each run, what it reserves and its own ``-o`` settings, once the data is found (looked for, not
    read or downloaded)."""
    plan.check_data([r.config.dataset for r in runs], settings.get("data_dir"), settings.get("address"), read=False)
    exclusive = bool(settings.get("exclusive"))

    def options(run: plan.Run) -> str:
        return "".join(f"  -o {k}={v}" for k, v in sorted(run.config.options.items()))

    return [f"{run.name}  ({plan.reservation(run, exclusive)}){options(run)}" for run in runs] + [
        f"{len(runs)} runs; nothing started (--dry-run)"
    ]


def create(settings: dict[str, Any], grid: plan.Grid, runs: list[plan.Run], out: str | None) -> tuple[Path, dict[str, Any]]:
    """The sweep's folder and its ``sweep.json``, written only after the folder and the data are checked."""
    sweep_dir = plan.sweep_dir_for(settings, out)
    if (sweep_dir / plan.SWEEP_FILE).exists():
        raise VaebenchError(f"{sweep_dir} holds a sweep already: --resume {sweep_dir}, or choose another --out")
    plan.check_data([r.config.dataset for r in runs], settings.get("data_dir"), settings.get("address"))
    record = plan.new_record(grid, runs, plan.record_settings(settings))
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaebenchError(f"cannot create {sweep_dir}: {exc.strerror or exc}; choose another --out") from None
    plan.write_record(sweep_dir, record)
    return sweep_dir, record


#: the recipe fields a sweep varies as an axis (sweep.json's grid): groups may differ in these, and in nothing else
_AXIS_OF = {"batch_size": "batch_sizes", "lr": "lrs", "epochs": "epochs"}
#: what makes one comparison group: the run's config less its backend and seed (what a group's runs vary)
_GROUP = ("model", "latent_dim", "dataset", "batch_size", "lr", "epochs", "objective", "beta", "iw_samples", "binarize")


def comparability_warning(record: dict[str, Any], sweep_dir: Path) -> str | None:
    """One line when the completed runs are not comparable as the sweep's groups promise, else ``None``.

    A group is the runs of one grid point, backends and seeds apart: its runs
    must be comparable (:func:`vaebench.run.results.comparable`: the same data,
    model, objective and recipe), or ``vaebench compare`` shows them apart and
    the seeds are fewer than planned (data that changed under a resume, say).
    Across groups, a verdict is fair only where they differ in what the sweep
    varies: groups trained on different data, or at batch sizes or epochs the
    sweep did not vary (each model's own default: ``--models mlp,conv`` without
    ``--epochs``), compare more than one thing at once.
    """
    groups: dict[tuple, list[dict[str, str]]] = {}
    for entry in record["runs"]:
        folder = plan.run_folder(sweep_dir, entry)
        if entry["status"] != plan.COMPLETED or folder is None or not (folder / METRICS).is_file():
            continue
        try:
            metrics = read_metrics(folder)
            fields = {**comparable(metrics), **{k: str(metrics["config"].get(k)) for k in _AXIS_OF}}
        except (VaebenchError, KeyError, TypeError, ValueError):
            continue  # a folder compare will refuse on its own
        groups.setdefault(tuple(str(entry["config"].get(k)) for k in _GROUP), []).append(fields)
    problems = []
    split = sorted({f for runs in groups.values() for f in COMPARABLE if len({r[f] for r in runs}) > 1})
    if split:
        problems.append(f"runs of one group differ in {', '.join(split)}, so compare shows them apart, not as seeds of one")
    firsts = [runs[0] for runs in groups.values()]
    grid = record.get("grid") or {}
    unvaried = [f for f, axis in _AXIS_OF.items() if len(grid.get(axis) or [None]) < 2]
    across = [f for f in ("data", *unvaried) if len({r[f] for r in firsts}) > 1]
    if across:
        values = "; ".join(f"{f} {' vs '.join(sorted({r[f] for r in firsts}))}" for f in across)
        problems.append(f"groups differ in {values}, which the sweep does not vary, so a verdict across groups would mislead")
    return f"warning: not comparable: {'; and '.join(problems)}" if problems else None


def finish(
    record: dict[str, Any], sweep_dir: Path, echo: Callable[[str], None], warn: Callable[[str], None] | None = None
) -> None:
    """Say how many runs completed and how to compare them, and (to ``warn``) whether they are comparable;
    a :class:`VaebenchError` naming how to resume the rest."""
    n = plan.counts(record)
    undone = len(record["runs"]) - n["completed"]
    echo(f"{n['completed']} of {len(record['runs'])} runs completed in {sweep_dir}/; compare: vaebench compare {sweep_dir}")
    warning = comparability_warning(record, sweep_dir)
    if warning:
        (warn or echo)(warning)
    if undone:
        states = ", ".join(f"{v} {k}" for k, v in n.items() if v and k != "completed")
        raise VaebenchError(
            f"{undone} runs did not complete ({states}); see {sweep_dir / plan.SWEEP_FILE}, "
            f"then: vaebench sweep --resume {sweep_dir} (--data-dir and --address may be given anew)"
        )
