"""``vaebench eval``: scoring a finished run's weights again, with any backend, at any ``k``.

Kept apart from training: it reads a completed run folder, never changes its
weights, and only adds ``evaluations.<backend>`` to its ``metrics.json``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, ShapeError
from vaebench.io.datasets import check_same_data, load_dataset
from vaebench.model.batches import binarize_fixed
from vaebench.model.config import check_iwae_k
from vaebench.model.weights import check_params, load_params
from vaebench.plugin import registry
from vaebench.run.evaluation import full_evaluation
from vaebench.run.results import claim_run_dir, config_of, read_metrics, recorded_data_dir, run_identity, write_metrics


def evaluate_run(
    run_dir: Path,
    backend_name: str | None = None,
    k: int = 5000,
    data_dir: str | Path | None = None,
    device: str = "auto",
    progress: bool = True,
    log: Callable[[str], None] = print,
    accept_data_change: bool = False,
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
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    if metrics["status"] != "completed":
        raise ConfigError(f"{run_dir} is not a completed run (status {metrics['status']!r}); nothing to evaluate")
    cfg = config_of(metrics, run_dir / "metrics.json")
    check_iwae_k(k, cfg.latent_dim, "--k")  # before any framework loads or any image is read
    identity = run_identity(run_dir, metrics)
    name = backend_name or cfg.backend
    backend_cls, plugin = registry.load(name)
    params = load_params(run_dir / "weights.npz")
    check_params(cfg.spec, params, run_dir / "weights.npz", "they are not this run's weights; train the run again")
    dataset = load_dataset(cfg.dataset, recorded_data_dir(metrics, data_dir), train=False)
    changed = check_same_data(metrics.get("data") or {}, dataset, "evaluate", accept_data_change)
    test_images = binarize_fixed(dataset.test_images, cfg.seed) if cfg.binarize else dataset.test_images
    backend = backend_cls(device=device, options=cfg.options if name == cfg.backend else None)
    model = backend.build(cfg.spec, cfg.adam)
    try:
        model.load_weights(params)
    except ShapeError as exc:
        raise ShapeError(f"{run_dir / 'weights.npz'}: {exc}") from None
    evaluation = full_evaluation(model, test_images, k, cfg.seed, cfg.eval_batch_size, progress, log)
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
    return evaluation
