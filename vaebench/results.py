"""The run folder and its ``metrics.json``: one schema, written atomically.

``metrics.json`` is rewritten after every epoch (status ``running``) and at the
end (``completed``), so a crash never leaves a file that looks finished.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, VaebenchError
from vaebench.fileio import atomic_write_json

SCHEMA_VERSION = 1
METRICS = "metrics.json"
STATUSES = ("running", "completed", "interrupted", "diverged", "failed")


def default_run_dir(backend: str, model: str, root: Path = Path("results/runs")) -> Path:
    """``results/runs/<UTC timestamp>-<backend>-<model>``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return root / f"{stamp}-{backend}-{model}"


def prepare_run_dir(path: Path, overwrite: bool = False) -> Path:
    """Create ``path`` for a new run, refusing one that holds another run's results."""
    if (path / METRICS).exists() and not overwrite:
        raise ConfigError(f"{path} already holds a run; choose another --out or pass --overwrite")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VaebenchError(f"cannot create {path}: {exc.strerror or exc}") from None
    return path


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Atomically replace ``run_dir/metrics.json``."""
    atomic_write_json(run_dir / METRICS, metrics)


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """Read a run's ``metrics.json``, checking it is one this version understands."""
    path = Path(run_dir) / METRICS
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        raise VaebenchError(f"{run_dir} is not a vaebench run (no {METRICS})") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise VaebenchError(f"cannot read {path}: {exc}") from None
    if metrics.get("schema_version") != SCHEMA_VERSION:
        raise VaebenchError(f"{path} has schema version {metrics.get('schema_version')}, this vaebench reads {SCHEMA_VERSION}")
    return metrics
