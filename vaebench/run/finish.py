"""The end of a run: the final evaluation, the pictures, TensorBoard and MLflow, under the run's stop flag."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vaebench.errors import DivergedError, RunInterruptedError
from vaebench.model.batches import steps_per_epoch
from vaebench.model.weights import save_params
from vaebench.plugin.host import load_snapshot
from vaebench.run.evaluation import HEADLINE, TERMS, full_evaluation
from vaebench.run.outputs.pictures import write_pictures
from vaebench.run.outputs.tensorboard import RunLog
from vaebench.run.results import write_metrics
from vaebench.run.session import Session
from vaebench.run.signals import StopFlag


def finish(session: Session, progress: bool, log: Callable[[str], None], stop: StopFlag, tb: RunLog | None = None) -> None:
    """Weights, the full evaluation, pictures, and status ``completed``; a signal stops it between any two parts.

    ``tb`` is the run's open TensorBoard log: the final NLL goes there too, at the run's last global step, so
    TensorBoard shows the one figure the epochs' -ELBO curves cannot (the tag names its ``k``).
    """
    cfg, model, metrics, run_dir = session.cfg, session.model, session.metrics, session.run_dir

    def tick() -> None:
        if stop.signum is not None:
            raise RunInterruptedError(stop.signum, run_dir, where="during the final evaluation")

    save_params(model.export_weights(), run_dir / "weights.npz")
    tick()
    train = session.train_images if cfg.spec.quantizer is not None else None  # a VQ model's train_recon
    evaluation = full_evaluation(
        model, session.test_images, cfg.eval_k, cfg.seed, cfg.eval_batch_size, progress, log, tick=tick, train_images=train
    )
    tick()
    headline = HEADLINE[cfg.spec.bottleneck]
    if not np.isfinite(evaluation[headline]):
        raise DivergedError(f"the final weights give a {headline} of {evaluation[headline]}")
    metrics["evaluations"][cfg.backend] = evaluation
    final = {f"test_{key}": evaluation[f"test_{key}"] for key in TERMS[cfg.spec.bottleneck]}
    if cfg.spec.quantizer is not None:
        final.update({key: evaluation[key] for key in ("train_recon", "perplexity", "codes_used", "bits_per_image")})
        title = f"{cfg.backend} · {cfg.spec.name} · epoch {cfg.epochs} · test reconstruction loss {final['test_recon']:.4f}"
        log(
            f"test loss {final['test_loss']:.4f} (reconstruction {final['test_recon']:.4f}), codebook perplexity "
            f"{final['perplexity']:.1f}, {final['codes_used']:.0%} of codes used, {final['bits_per_image']:.0f} bits per image"
        )
        write_pictures(model, session.dataset, session.test_images, cfg, run_dir, metrics["history"], title, tick)
        metrics["environment"]["threads"]["load_at_end"] = load_snapshot()
        metrics.update(status="completed", final=final)
        write_metrics(run_dir, metrics)
        return
    if "test_nll" in evaluation:
        final.update(test_nll=evaluation["test_nll"], iwae_k=evaluation["iwae_k"])
        log(f"test NLL (IWAE, k={cfg.eval_k}) {evaluation['test_nll']:.2f} nats")
        if tb is not None:
            tb.nll(evaluation, cfg.epochs * steps_per_epoch(len(session.train_images), cfg.batch_size))
    final["active_units"] = evaluation["active_units"]
    title = f"{cfg.backend} · {cfg.spec.name} · epoch {cfg.epochs} · test -ELBO {final['test_neg_elbo']:.1f} nats"
    write_pictures(model, session.dataset, session.test_images, cfg, run_dir, metrics["history"], title, tick)
    metrics["environment"]["threads"]["load_at_end"] = load_snapshot()
    metrics.update(status="completed", final=final)
    write_metrics(run_dir, metrics)
