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
import socket
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError
from vaebench.run.results import RUN_OUTPUTS

EXPERIMENT = "vaebench"
EPOCH_METRICS = (
    "train_neg_elbo",
    "test_neg_elbo",
    "test_recon",
    "test_kl",
    "train_objective",  # what a step minimised where it is not the -ELBO (beta-VAE, IWAE, a VQ model's loss)
    "test_objective",
    "test_vq",  # a VQ model's codebook and commitment terms
    "train_images_per_second",
    "epoch_seconds",
    "lr",
)
STATUS = {"completed": "FINISHED", "interrupted": "KILLED"}
CONNECT_SECONDS = 5.0  # how long a tracking server gets to answer before the run is refused
# MLflow's own defaults retry an unreachable server for minutes (7 retries, backoff 2, 120 s timeouts)
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def default_uri() -> str:
    """``./mlruns`` as a file-store URI."""
    return Path("mlruns").resolve().as_uri()


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:200]


def require(uri: str | None) -> None:
    """Refuse ``--mlflow`` up front, before a run folder is touched, when MLflow is not installed."""
    if uri is not None and importlib.util.find_spec("mlflow") is None:
        raise ConfigError('--mlflow needs MLflow, which is not installed: pip install -e ".[mlflow]"')


def _probe(uri: str) -> None:
    """An ``http(s)://`` tracking server must accept a connection within :data:`CONNECT_SECONDS`."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise ConfigError(
            f"the MLflow tracking server {uri} cannot be reached ({exc.strerror or exc}, {CONNECT_SECONDS:g} s); "
            "start it, fix --mlflow's URI, or run without --mlflow"
        ) from None


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
        except Exception as exc:  # an install that is there but broken
            why = f"{type(exc).__name__}: {_first(exc)}"
            raise ConfigError(f"MLflow cannot be imported ({why}); reinstall it or drop --mlflow") from None
        self.Metric = Metric
        uri = uri or default_uri()
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        _probe(uri)
        tracking = metrics.setdefault("tracking", {})
        try:  # setup is all or nothing: a store MLflow cannot use refuses the run before it trains
            self.client = MlflowClient(uri)
            self.run_id = tracking.get("mlflow_run_id")
            if self.run_id is None:
                experiment = self.client.get_experiment_by_name(EXPERIMENT)
                experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(EXPERIMENT)
                tags = {"vaebench.run_dir": str(run_dir)}
                run = self.client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags)
                self.run_id = run.info.run_id
                params = [Param(k, str(v)[:500]) for k, v in sorted(metrics["config"].items())]
                self.client.log_batch(self.run_id, params=params)
                tracking.update(mlflow_run_id=self.run_id, mlflow_uri=uri)
        except Exception as exc:
            self.client = None
            raise ConfigError(
                f"MLflow at {uri} cannot be used ({type(exc).__name__}: {_first(exc)}); fix --mlflow's URI "
                "(or the store's permissions), or run without --mlflow"
            ) from None

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
