"""``vaebench sweep`` from its settings to Ray and back: the checks and the order the command promises.

Every refusal comes before anything is written, in seconds: a backend that
is not installed, Ray missing, a cluster that cannot be reached (before Ray's
own minutes of retries), a sweep already in the folder, data that is not
there (checked once, not once per run). Only then is the folder made and
``sweep.json`` written; :func:`vaebench.sweep.cluster.execute` runs the grid,
and :func:`finish` says what came of it. A resumed sweep keeps its own grid
and settings; only where things are (the data, the cluster) may change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vaebench.errors import VaebenchError
from vaebench.plugin import registry
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
    """``--dry-run``: each run and what it reserves, once the data is found (looked for, not read or downloaded)."""
    plan.check_data([r.config.dataset for r in runs], settings.get("data_dir"), settings.get("address"), read=False)
    exclusive = bool(settings.get("exclusive"))
    return [f"{run.name}  ({plan.reservation(run, exclusive)})" for run in runs] + [
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


def finish(record: dict[str, Any], sweep_dir: Path, echo: Callable[[str], None]) -> None:
    """Say how many runs completed and how to compare them; a :class:`VaebenchError` naming how to resume the rest."""
    n = plan.counts(record)
    undone = len(record["runs"]) - n["completed"]
    echo(f"{n['completed']} of {len(record['runs'])} runs completed in {sweep_dir}/; compare: vaebench compare {sweep_dir}")
    if undone:
        states = ", ".join(f"{v} {k}" for k, v in n.items() if v and k != "completed")
        raise VaebenchError(
            f"{undone} runs did not complete ({states}); see {sweep_dir / plan.SWEEP_FILE}, "
            f"then: vaebench sweep --resume {sweep_dir} (--data-dir and --address may be given anew)"
        )
