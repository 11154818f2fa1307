"""What a run holds in memory (:class:`Session`) and how it is opened: plugin, data, model, the first metrics record.

Opening touches no file, so whatever can fail on the user's input fails before a folder is written.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import BackendError, ConfigError
from vaebench.io.datasets import Dataset, load_dataset
from vaebench.model.batches import binarize_fixed
from vaebench.model.config import AdamConfig, TrainConfig
from vaebench.plugin import registry
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.host import choose_threads, host_environment, usable_cores
from vaebench.plugin.profiles import Variant, check_precision
from vaebench.run.results import SCHEMA_VERSION, new_run_id


def check_sizes(cfg: TrainConfig, dataset: Dataset) -> np.ndarray:
    images = dataset.train_images
    if cfg.limit_train is not None:
        images = images[: cfg.limit_train]
    if cfg.batch_size > len(images):
        raise ConfigError(f"--batch-size {cfg.batch_size} is larger than the {len(images)} training images")
    return images


def split_test(test: dict[str, float]) -> dict[str, float]:
    """An epoch's test terms (:func:`~vaebench.run.evaluation.evaluate_split`) as the history names them: ``test_<term>``."""
    return {f"test_{k}": v for k, v in test.items()}


@dataclasses.dataclass
class Session:
    """Everything a run needs in memory, whether it starts fresh or resumes."""

    cfg: TrainConfig
    run_dir: Path
    dataset: Dataset
    train_images: np.ndarray
    test_images: np.ndarray
    model: Model
    metrics: dict[str, Any]
    tensorboard: bool = True
    mlflow: str | None = None  # tracking URI ("" for ./mlruns), None: no MLflow
    backend: Backend | None = None  # what built ``model``: builds it again when the learning rate changes

    def with_adam(self, adam: AdamConfig) -> Model:
        """The model trained on with Adam settings ``adam`` (``--lr-schedule``'s next stage), its weights and Adam state
        carried over exactly: the contract's export and load, which a bit-exact resume already relies on.

        A backend bakes its learning rate into its compiled step, so the model is
        built again (one more compile per stage) rather than asked to change it.
        """
        if adam == self.model.adam:
            return self.model
        if self.backend is None:
            raise BackendError("this session keeps no backend to build its model again with a new learning rate")
        weights, state = self.model.export_weights(exact=True), self.model.export_optimizer_state(exact=True)
        model = self.backend.build(self.model.spec, adam)
        model.load_weights(weights)
        model.load_optimizer_state(state)
        self.model = model
        return model


#: ``run --profile best``'s tuner (``vaebench.measure.tune.tuner``, passed down: ``run`` imports no ``measure``):
#: the resolved config and the run's thread count in; the config with the chosen variant and the ``execution``
#: fields that say why (``profile``, ``tuning``) out.
Tuner = Callable[[TrainConfig, "int | None"], tuple[TrainConfig, dict[str, Any]]]


def open_session(
    cfg: TrainConfig,
    run_dir: Path,
    data_dir: str | Path | None,
    log: Callable[[str], None] = print,
    tune: Tuner | None = None,
) -> Session:
    """Load plugin and data, build the model. Touches no file: what can fail on the user's input fails first.

    Without ``--threads``, a busy machine gets fewer threads (:func:`~vaebench.plugin.host.choose_threads`),
    said in one line and recorded under ``environment.threads``. ``tune`` (``--profile best``) runs once the
    data and the threads are settled and before the model is built, which then has the variant it chose.
    """
    backend_cls, plugin = registry.load(cfg.backend)
    dataset = load_dataset(cfg.dataset, data_dir)
    train_images = check_sizes(cfg, dataset)
    test_images = binarize_fixed(dataset.test_images, cfg.seed) if cfg.binarize else dataset.test_images
    threads, threads_record = choose_threads(cfg.threads, log)
    cores = usable_cores()
    if cfg.threads and cfg.threads > cores:
        log(
            f"warning: --threads {cfg.threads} on {cores} usable core{'s' if cores > 1 else ''}: the threads will take "
            f"turns and spin against each other, so the run is slower and its timings are not the framework's; "
            f"--threads {cores} or fewer is what this machine can run at once"
        )
        threads_record["oversubscribed"] = {"threads": cfg.threads, "usable_cores": cores}
    chosen: dict[str, Any] = {"profile": "default"}
    if tune is not None:
        cfg, chosen = tune(cfg, threads)
    backend = backend_cls(device=cfg.device, threads=threads, compile=cfg.compile, options=cfg.options, precision=cfg.precision)
    backend_env = backend.environment()
    check_precision(cfg.precision, backend_env)
    model = backend.build(cfg.spec, cfg.adam)
    spec = cfg.spec
    metrics: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": new_run_id(),  # kept on resume; what eval checks before it attaches a result
        "status": "running",
        "config": cfg.to_dict(),
        "model": {"name": spec.name, "source": spec.source, "latent_dim": spec.latent_dim, "num_params": spec.num_params()},
        "environment": {**host_environment(), "threads": threads_record, "backend": backend_env, "plugin": plugin.describe()},
        "execution": {
            "profile": chosen["profile"],
            "precision": cfg.precision,
            "variant": Variant(cfg.compile, cfg.options).to_dict(),
            "execution": backend_env.get("execution"),
            **({"tuning": chosen["tuning"]} if "tuning" in chosen else {}),
        },
        "data": {**dataset.describe(), "train_used": len(train_images)},
        "history": [],
        "timing": {"first_step_seconds": None},
        "final": None,
        "evaluations": {},
    }
    return Session(cfg, Path(run_dir), dataset, train_images, test_images, model, metrics, backend=backend)
