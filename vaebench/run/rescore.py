"""``vaebench eval``: scoring a finished run's weights again, with any backend, at any ``k``.

Kept apart from training: it reads a completed run folder, never changes its
weights, and only adds ``evaluations.<backend>`` to its ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, ShapeError, VaebenchError
from vaebench.io.datasets import check_same_data, load_dataset
from vaebench.model.batches import binarize_fixed, steps_per_epoch
from vaebench.model.config import TrainConfig, check_iwae_k
from vaebench.model.weights import check_params, load_params
from vaebench.plugin import registry
from vaebench.run.evaluation import full_evaluation
from vaebench.run.outputs.tensorboard import FOLDER, RunLog
from vaebench.run.results import claim_run_dir, config_of, read_metrics, recorded_data_dir, run_identity, write_metrics

DEFAULT_K = 100
"""``vaebench eval``'s importance samples when none are asked for: minutes on a CPU (a VQ model takes none)."""


def evaluate_run(
    run_dir: Path,
    backend_name: str | None = None,
    k: int | None = 5000,
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    accept_data_change: bool = False,
    tensorboard: bool | None = None,
) -> dict[str, Any]:
    """Evaluate a finished run's ``weights.npz`` with any backend; store it under ``evaluations[<backend>]``.

    Weights are canonical, so a run trained by one backend can be scored by
    another: on the same test images and the same evaluation noise, the -ELBO
    agrees to float32 tolerance. Only the test files are read, from where the
    run recorded them unless ``data_dir`` says otherwise, and they must be the
    ones the run was scored on (``accept_data_change`` overrides, and is
    recorded). The evaluation itself holds no lock, so several can run at
    once; each adds its result to a fresh read of ``metrics.json`` under the
    folder's lock, so none is lost. The result is attached only to the run it
    scored: the run's identity (:func:`~vaebench.run.results.run_identity`)
    is taken before and compared under the lock, and a run replaced in between
    (``run --overwrite``) refuses the result with a line saying so.

    ``k=None`` takes :data:`DEFAULT_K` for a Gaussian model and 0 for a VQ model, which has no likelihood.

    The NLL also goes to the run's TensorBoard files as ``test/nll_k<k>`` (another backend's as
    ``test/nll_k<k>/<backend>``), so the viewer a user watched the run in shows its score and the ``k`` behind
    it. ``tensorboard=None`` logs it when the run wrote TensorBoard files (its ``tb/`` folder exists). That is
    done after ``metrics.json`` holds the result, and a ``tb/`` that cannot be written costs a warning, never
    the evaluation.
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    if metrics["status"] != "completed":
        raise ConfigError(f"{run_dir} is not a completed run (status {metrics['status']!r}); nothing to evaluate")
    cfg = config_of(metrics, run_dir / "metrics.json")
    if k is None:  # the command line's default, which must not refuse the model it is given
        k = 0 if cfg.spec.quantizer is not None else DEFAULT_K
    check_iwae_k(k, cfg.latent_dim, "--k")  # before any framework loads or any image is read
    if k and cfg.spec.quantizer is not None:
        raise ConfigError(f"--k {k}: model {cfg.model!r} has a vector-quantised bottleneck and no likelihood; use --k 0")
    identity = run_identity(run_dir, metrics)
    name = backend_name or cfg.backend
    backend_cls, plugin = registry.load(name)
    params = load_params(run_dir / "weights.npz")
    check_params(cfg.spec, params, run_dir / "weights.npz", "they are not this run's weights; train the run again")
    vq = cfg.spec.quantizer is not None  # its reconstruction loss on the training set too: the recipe's figure
    dataset = load_dataset(cfg.dataset, recorded_data_dir(metrics, data_dir), train=vq)
    changed = check_same_data(metrics.get("data") or {}, dataset, "evaluate", accept_data_change)
    test_images = binarize_fixed(dataset.test_images, cfg.seed) if cfg.binarize else dataset.test_images
    backend = backend_cls(device=device, options=cfg.options if name == cfg.backend else None)
    model = backend.build(cfg.spec, cfg.adam)
    try:
        model.load_weights(params)
    except ShapeError as exc:
        raise ShapeError(f"{run_dir / 'weights.npz'}: {exc}") from None
    train = dataset.train_images[: cfg.limit_train] if vq else None
    evaluation = full_evaluation(model, test_images, k, cfg.seed, cfg.eval_batch_size, progress, log, train_images=train)
    evaluation.update(environment=backend.environment(), plugin=plugin.describe())
    if changed:
        evaluation["data"] = dataset.describe()
    evaluation.update(identity)  # which run, and which weights, this score belongs to
    with claim_run_dir(run_dir, new=False):
        metrics = read_metrics(run_dir)
        now = run_identity(run_dir, metrics)
        if now != identity or metrics["status"] != "completed":
            what = "another run" if now["run_id"] != identity["run_id"] else "other weights"
            raise ConfigError(
                f"{run_dir} was replaced by {what} while this evaluation ran (run --overwrite?); its result belongs "
                f"to the old run and is not added to the new one: run `vaebench eval {run_dir}` again"
            )
        metrics.setdefault("evaluations", {})[name] = evaluation
        write_metrics(run_dir, metrics)
    if tensorboard is None:
        tensorboard = (run_dir / FOLDER).is_dir()  # the run kept TensorBoard files, so its score belongs there too
    if tensorboard:
        _log_nll(run_dir, cfg, metrics.get("data") or {}, evaluation, None if name == cfg.backend else name, log)
    return evaluation


def _log_nll(
    run_dir: Path,
    cfg: TrainConfig,
    data: dict[str, Any],
    evaluation: dict[str, Any],
    backend: str | None,
    log: Callable[[str], None],
) -> None:
    """The evaluation's NLL in the run's TensorBoard files, at the run's last global step (its weights' step)."""
    if evaluation.get("test_nll") is None:
        return
    trained = data.get("train_used")  # the training images the run used, after --limit-train
    if not isinstance(trained, int) and isinstance(data.get("train_size"), int):  # a run recorded before train_used
        trained = min(data["train_size"], cfg.limit_train or data["train_size"])
    step = cfg.epochs * steps_per_epoch(trained, cfg.batch_size) if isinstance(trained, int) else 0
    try:
        tb = RunLog(run_dir)
    except VaebenchError as exc:
        log(f"warning: the NLL is in metrics.json but not in TensorBoard: {exc}")
        return
    try:
        tb.nll(evaluation, step, backend)
    finally:
        tb.close()
