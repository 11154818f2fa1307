"""Optional MLflow tracking: ``vaebench run --mlflow [URI]`` logs a run's params, per-epoch metrics and files.

Without a URI, runs go to a local file store, ``./mlruns`` (MLflow 3 keeps the
file store in maintenance mode behind ``MLFLOW_ALLOW_FILE_STORE``; vaebench opts
in for that default only); with one, to that store or tracking server
(``sqlite:///mlflow.db``, ``http://host:5000``). Every vaebench run is one
MLflow run in the experiment ``vaebench``, named after the run folder; its id
is kept in ``metrics.json`` (``tracking.mlflow_run_id``), so a resumed run
continues the same MLflow run. MLflow is an optional extra
(``pip install -e ".[mlflow]"``) and is imported only when asked for.
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError
from vaebench.run.results import RUN_OUTPUTS

EXPERIMENT = "vaebench"
EPOCH_METRICS = ("train_neg_elbo", "test_neg_elbo", "test_recon", "test_kl", "train_images_per_second", "epoch_seconds")
STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}


def default_uri() -> str:
    """``./mlruns`` as a file-store URI."""
    return Path("mlruns").resolve().as_uri()


def require(uri: str | None) -> None:
    """Refuse ``--mlflow`` up front, before a run folder is touched, when MLflow is not installed."""
    if uri is not None and importlib.util.find_spec("mlflow") is None:
        raise ConfigError('--mlflow needs MLflow, which is not installed: pip install -e ".[mlflow]"')


class MlflowLog:
    """One vaebench run as one MLflow run; ``uri=None`` turns every method into a no-op."""

    def __init__(self, uri: str | None, run_dir: Path, metrics: dict[str, Any], log: Callable[[str], None] = print) -> None:
        self.client: Any = None
        self.log = log
        if uri is None:
            return
        try:
            from mlflow.entities import Metric, Param
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError('--mlflow needs MLflow, which is not installed: pip install -e ".[mlflow]"') from None
        self.Metric = Metric
        uri = uri or default_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(uri)
        tracking = metrics.setdefault("tracking", {})
        self.run_id = tracking.get("mlflow_run_id")
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(EXPERIMENT)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
            run = self.client.create_run(experiment_id, run_name=Path(run_dir).name, tags={"vaebench.run_dir": str(run_dir)})
            self.run_id = run.info.run_id
            params = [Param(k, str(v)[:500]) for k, v in sorted(metrics["config"].items())]
            self.client.log_batch(self.run_id, params=params)
            tracking.update(mlflow_run_id=self.run_id, mlflow_uri=uri)

    def _guarded(self, what: str, fn: Any) -> None:
        """A tracking server that fails mid-run costs the tracking, not the training: warn once, stop logging."""
        try:
            fn()
        except Exception as exc:
            self.log(f"warning: MLflow {what} failed ({type(exc).__name__}: {exc}); the run goes on without MLflow")
            self.client = None

    def epoch(self, entry: dict[str, Any], epoch: int) -> None:
        """The epoch's figures at step ``epoch``."""
        if self.client is None:
            return
        now = int(time.time() * 1000)
        batch = [
            self.Metric(key, float(entry[key]), now, epoch) for key in EPOCH_METRICS if isinstance(entry.get(key), int | float)
        ]
        self._guarded("logging", lambda: self.client.log_batch(self.run_id, metrics=batch))

    def finish(self, run_dir: Path, status: str) -> None:
        """The run's files as artifacts, and MLflow's status (FINISHED, KILLED or FAILED)."""
        if self.client is None:
            return

        def upload() -> None:
            for name in RUN_OUTPUTS:
                if (Path(run_dir) / name).is_file():
                    self.client.log_artifact(self.run_id, str(Path(run_dir) / name))
            self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))

        self._guarded("upload", upload)
