"""The end of a run: the final evaluation, the pictures, TensorBoard and MLflow, under the run's stop flag."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vaebench.errors import DivergedError, RunInterruptedError
from vaebench.model.weights import save_params
from vaebench.plugin.host import load_snapshot
from vaebench.run.evaluation import full_evaluation
from vaebench.run.outputs.pictures import write_pictures
from vaebench.run.results import write_metrics
from vaebench.run.session import Session
from vaebench.run.signals import StopFlag


def finish(session: Session, progress: bool, log: Callable[[str], None], stop: StopFlag) -> None:
    """Weights, the full evaluation, pictures, and status ``completed``; a signal stops it between any two parts."""
    cfg, model, metrics, run_dir = session.cfg, session.model, session.metrics, session.run_dir

    def tick() -> None:
        if stop.signum is not None:
            raise RunInterruptedError(stop.signum, run_dir, where="during the final evaluation")

    save_params(model.export_weights(), run_dir / "weights.npz")
    tick()
    evaluation = full_evaluation(model, session.test_images, cfg.eval_k, cfg.seed, cfg.eval_batch_size, progress, log, tick=tick)
    tick()
    if not np.isfinite(evaluation["test_neg_elbo"]):
        raise DivergedError(f"the final weights give a test -ELBO of {evaluation['test_neg_elbo']}")
    metrics["evaluations"][cfg.backend] = evaluation
    final = {key: evaluation[key] for key in ("test_neg_elbo", "test_recon", "test_kl")}
    if "test_nll" in evaluation:
        final.update(test_nll=evaluation["test_nll"], iwae_k=evaluation["iwae_k"])
        log(f"test NLL (IWAE, k={cfg.eval_k}) {evaluation['test_nll']:.2f} nats")
    final["active_units"] = evaluation["active_units"]
    title = f"{cfg.backend} · {cfg.spec.name} · epoch {cfg.epochs} · test -ELBO {final['test_neg_elbo']:.1f} nats"
    write_pictures(model, session.dataset, session.test_images, cfg, run_dir, metrics["history"], title, tick)
    metrics["environment"]["threads"]["load_at_end"] = load_snapshot()
    metrics.update(status="completed", final=final)
    write_metrics(run_dir, metrics)
