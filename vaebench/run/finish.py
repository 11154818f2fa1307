"""``train_and_evaluate`` and ``resume_run``: what ``vaebench run`` and the tests call.

Timing rules (so the figures mean the same for every backend):

* the first train step of a run is timed on its own, closed by the backend's
  synchronisation, and reported as ``first_step_seconds`` (graph tracing,
  compilation, allocator warm-up); it is left out of epoch 1's throughput;
* ``train_images_per_second`` is images over the wall time of the epoch's
  training loop, closed by a synchronisation: it includes the core's batch
  preparation, which is identical NumPy work for every backend;
* the loss is read back every ``FETCH_EVERY`` steps (one synchronisation for
  many steps), which is also when a non-finite loss is caught.

Runs survive: a checkpoint (canonical weights, Adam state, position, history)
is written atomically after every epoch and when SIGINT or SIGTERM stops a run
after its current step; ``resume_run`` continues from it and, since batches and
noise are functions of (seed, epoch), reproduces the uninterrupted history. A
non-finite loss stops the run as ``diverged`` and keeps the last good checkpoint.
"""

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
