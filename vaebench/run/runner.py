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

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import ConfigError, DivergedError, RunInterruptedError, ShapeError, Terminated, VaebenchError
from vaebench.io.datasets import check_same_data
from vaebench.model.batches import Batch, steps_per_epoch, train_batches
from vaebench.model.config import TrainConfig
from vaebench.model.weights import init_params
from vaebench.plugin.contract import Model
from vaebench.run.checkpoint import CHECKPOINT, Position, check_position, load_checkpoint, save_checkpoint
from vaebench.run.evaluation import HEADLINE, evaluate_split, iwae_nll
from vaebench.run.finish import finish
from vaebench.run.outputs.mlflowlog import MlflowLog
from vaebench.run.outputs.mlflowlog import require as require_mlflow
from vaebench.run.outputs.tensorboard import RunLog
from vaebench.run.prefetch import Prefetcher
from vaebench.run.progress import progress as progress_bar
from vaebench.run.results import (
    claim_run_dir,
    config_of,
    finalise,
    new_run_id,
    read_metrics,
    recorded_data_dir,
    refuse_occupied,
    write_metrics,
)
from vaebench.run.session import Session, Tuner, open_session, split_test
from vaebench.run.signals import StopFlag

FETCH_EVERY = 20


def train_epoch(
    model: Model,
    images: np.ndarray,
    cfg: TrainConfig,
    epoch: int,
    timing: dict,
    progress: bool,
    stop: StopFlag,
    start: Position | None = None,
    on_losses: Callable[[int, list[float]], None] | None = None,
) -> dict[str, Any]:
    """Train epoch ``epoch`` (from ``start.step`` if resuming); stop early if ``stop`` is raised.

    Returns ``train_neg_elbo``, ``epoch_seconds``, ``train_images_per_second`` and,
    when stopped early, ``stopped_at`` (steps of this epoch done) and ``losses``.
    ``on_losses(first_step, values)`` gets every batch of losses read back (steps counted from 1).
    """
    steps = steps_per_epoch(len(images), cfg.batch_size)
    done = start.step if start else 0
    losses: list[float] = list(start.losses) if start else []
    carried = start.seconds if start else 0.0
    pending: list[Any] = []
    warm_images, warm_seconds = 0, 0.0
    bar = progress_bar(steps, f"epoch {epoch}/{cfg.epochs}", "step", done, progress)

    def drain(step: int) -> None:
        values = model.fetch(pending)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            last = next((v for v in reversed(losses + values[: bad[0]].tolist()) if np.isfinite(v)), float("nan"))
            raise DivergedError(
                f"training diverged at epoch {epoch}, step {step - len(values) + bad[0] + 1}: loss {values[bad[0]]} "
                f"(last finite {last:.3f})"
            )
        losses.extend(values.tolist())
        if on_losses:
            on_losses(step - len(values) + 1, values.tolist())
        pending.clear()

    t_start = time.perf_counter()
    step = done
    batches = enumerate(train_batches(images, cfg.batch_size, cfg.noise_shape, cfg.seed, epoch, cfg.binarize), start=1)

    def stage(item: tuple[int, Batch]) -> Any:
        # steps already trained before an interruption are drawn anyway, to advance the streams, but not staged
        return model.stage(item[1].x, item[1].eps) if item[0] > done else None

    with Prefetcher(batches, stage) as feed:
        for (step, _), staged in feed:
            if step <= done:
                continue
            if timing.get("first_step_seconds") is None:
                t0 = time.perf_counter()
                pending.append(model.train_staged(staged))
                model.synchronize()
                drain(step)
                timing["first_step_seconds"] = time.perf_counter() - t0
                warm_images, warm_seconds = cfg.batch_size, time.perf_counter() - t_start
            else:
                pending.append(model.train_staged(staged))
                if len(pending) >= FETCH_EVERY or step == steps or stop.signum is not None:
                    drain(step)
                    elapsed = time.perf_counter() - t_start - warm_seconds
                    rate = ((step - done) * cfg.batch_size - warm_images) / max(elapsed, 1e-9)
                    bar.set_postfix(loss=f"{np.mean(losses[-FETCH_EVERY:]):.2f}", img_s=f"{rate:.0f}")
            bar.update(1)
            if stop.signum is not None and step < steps:
                break
    model.synchronize()
    seconds = time.perf_counter() - t_start
    bar.close()
    timed_images = (step - done) * cfg.batch_size - warm_images
    timed_seconds = seconds - warm_seconds
    train = float(np.mean(losses)) if losses else float("nan")
    # a step returns its objective's value: the -ELBO only for the plain VAE; any other (a VQ model's loss too) is
    # recorded as what it is
    plain = cfg.training_objective.plain and cfg.spec.quantizer is None
    result: dict[str, Any] = {
        "train_neg_elbo": train if plain else None,
        **({} if plain else {"train_objective": train}),
        "epoch_seconds": carried + seconds,
        "train_images_per_second": timed_images / timed_seconds if timed_images > 0 and timed_seconds > 0 else None,
    }
    if step < steps:
        result.update(stopped_at=step, losses=losses)
    return result


def _epoch_line(cfg: TrainConfig, entry: dict[str, Any]) -> str:
    """An epoch's losses as its log line says them: train and test -ELBO with the test split, or a VQ model's terms."""
    if cfg.spec.quantizer is not None:
        return (
            f"train loss {entry['train_objective']:.4f}  test loss {entry['test_loss']:.4f} "
            f"(recon {entry['test_recon']:.4f} + VQ {entry['test_vq']:.4f})"
        )
    objective = cfg.training_objective
    train = (
        f"train -ELBO {entry['train_neg_elbo']:.2f}"
        if objective.plain
        else f"train {objective.describe()} {entry['train_objective']:.2f}"
    )
    return f"{train}  test -ELBO {entry['test_neg_elbo']:.2f} (recon {entry['test_recon']:.2f} + KL {entry['test_kl']:.2f})"


def train_and_evaluate(
    config: TrainConfig,
    run_dir: Path,
    data_dir: str | Path | None = None,
    progress: bool = True,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    tensorboard: bool = True,
    mlflow: str | None = None,
    placement: dict[str, Any] | None = None,
    tune: Tuner | None = None,
) -> dict[str, Any]:
    """Train ``config`` on real data, evaluate every epoch, write the run folder; return the metrics.

    The folder gets ``metrics.json`` (rewritten after every epoch), ``checkpoint.npz``
    (after every epoch), and at the end ``weights.npz`` (canonical layout), the
    pictures of :func:`write_pictures` and, in ``metrics.json``,
    ``evaluations[<backend>]``: active units, KL per dimension and, with
    ``eval_k > 0``, the importance-weighted test NLL. The folder is held
    (:func:`~vaebench.run.results.claim_run_dir`) from before the first write to the end.
    ``placement`` (a sweep's: node, exclusive, resources) is recorded as given. ``tune`` (``--profile best``:
    :data:`~vaebench.run.session.Tuner`) picks the variant the run trains with, recorded under ``execution``.
    """
    require_mlflow(mlflow)
    refuse_occupied(Path(run_dir), overwrite)  # before the session, whose busy-machine warning a refusal would follow
    session = open_session(config.resolved(), Path(run_dir), data_dir, log, tune)
    session.tensorboard, session.mlflow = tensorboard, mlflow
    if placement is not None:
        session.metrics["placement"] = placement
    with claim_run_dir(session.run_dir, new=True, overwrite=overwrite):
        session.model.load_weights(init_params(session.cfg.spec, session.cfg.seed))
        write_metrics(session.run_dir, session.metrics)
        return _train(session, Position(epoch=0), progress, log)


def resume_run(
    run_dir: Path,
    data_dir: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    accept_data_change: bool = False,
    tensorboard: bool = True,
    mlflow: str | None = None,
    placement: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Continue an interrupted (or crashed) run from its last checkpoint, with the run's own settings and data.

    The data is looked for where the run recorded it (unless ``data_dir`` says
    otherwise) and must have the SHA-256 the run recorded; ``accept_data_change``
    continues anyway and records the change under ``data.changes``. A new ``placement``
    replaces the recorded one; each ``resumed`` entry names the node it resumed on.
    """
    run_dir = Path(run_dir)
    with claim_run_dir(run_dir, new=False):
        old = read_metrics(run_dir)
        if old["status"] == "completed":
            raise ConfigError(f"{run_dir} is already completed; nothing to resume")
        params, adam, position = load_checkpoint(run_dir)
        session = open_session(config_of(old, run_dir), run_dir, recorded_data_dir(old, data_dir), log)
        check_position(position, session.cfg, len(session.train_images), run_dir)
        session.metrics["run_id"] = old.get("run_id") or new_run_id()  # the same run, going on
        recorded = old.get("execution") or {}  # a best run goes on with the variant its tuning chose: never retuned
        session.metrics["execution"].update({k: recorded[k] for k in ("profile", "tuning") if k in recorded})
        tracking = old.get("tracking") or {}
        session.tensorboard = tensorboard
        session.mlflow = mlflow if mlflow is not None else tracking.get("mlflow_uri")  # an MLflow run goes on in MLflow
        if tracking:
            session.metrics["tracking"] = tracking
        changed = check_same_data(old.get("data") or {}, session.dataset, "resume", accept_data_change)
        if changed:
            data = dict(old["data"])
            change = {"epoch": position.epoch, "step": position.step, **session.metrics["data"]}
            data["changes"] = [*data.get("changes", []), change]
            session.metrics["data"] = data
            log(f"warning: resuming on different data ({', '.join(changed)} changed); recorded under data.changes")
        try:
            session.model.load_weights(params)
            session.model.load_optimizer_state(adam)
        except ShapeError as exc:
            fix = "the run cannot be resumed; start it again with --overwrite"
            raise ShapeError(f"{run_dir / CHECKPOINT}: {exc}; {fix}") from None
        session.metrics.update(history=position.history, timing=position.timing)
        resumed = {"epoch": position.epoch, "step": position.step}
        if placement is not None:
            resumed["node"] = placement.get("node")
        if placement or old.get("placement"):
            session.metrics["placement"] = placement or old["placement"]
        session.metrics["resumed"] = [*old.get("resumed", []), resumed]
        log(f"resuming {run_dir} after epoch {position.epoch}" + (f", step {position.step}" if position.step else ""))
        write_metrics(run_dir, session.metrics)
        return _train(session, position, progress, log)


def _train(session: Session, start: Position, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
    """Epochs from ``start``, then :func:`finish`; whatever stops it, ``metrics.json`` says why.

    TensorBoard and MLflow are set up first, inside the same handling, so a
    tracking store that cannot be used refuses the run before it trains and
    leaves its status recorded, never ``running``. SIGINT and SIGTERM are caught
    for the whole of it, final evaluation and pictures included: they stop the
    run at the next step, chunk or picture. Every end goes through
    :func:`~vaebench.run.results.finalise`.
    """
    cfg, model, metrics, run_dir = session.cfg, session.model, session.metrics, session.run_dir
    timing = metrics["timing"]
    stop = StopFlag()
    tb: RunLog | None = None
    ml: MlflowLog | None = None
    try:
        with stop.installed():
            tb = RunLog(run_dir, session.tensorboard)
            tb.config(metrics["config"])
            ml = MlflowLog(session.mlflow, run_dir, metrics, log)
            steps = steps_per_epoch(len(session.train_images), cfg.batch_size)
            for epoch in range(start.epoch + 1, cfg.epochs + 1):
                resume_at = start if epoch == start.epoch + 1 and start.step else None
                model = session.with_adam(cfg.adam_at(epoch))  # --lr-schedule: a new stage's rate, state carried over

                def on_losses(first: int, values: list[float], epoch: int = epoch) -> None:
                    tb.losses((epoch - 1) * steps + first, values)

                entry = {
                    "epoch": epoch,
                    "lr": model.adam.lr,
                    **train_epoch(model, session.train_images, cfg, epoch, timing, progress, stop, resume_at, on_losses),
                }
                if "stopped_at" in entry:
                    position = Position(
                        epoch - 1, entry["stopped_at"], entry["losses"], entry["epoch_seconds"], metrics["history"], timing
                    )
                    save_checkpoint(run_dir, model, position)
                    raise RunInterruptedError(stop.signum, run_dir, epoch, entry["stopped_at"])
                t0 = time.perf_counter()
                entry.update(split_test(evaluate_split(model, session.test_images, cfg.eval_batch_size, cfg.seed)))
                entry["eval_seconds"] = time.perf_counter() - t0
                objective, headline = cfg.training_objective, HEADLINE[cfg.spec.bottleneck]
                if cfg.spec.quantizer is not None:
                    entry["test_objective"] = entry["test_loss"]
                elif objective.name == "iwae":  # the negative IWAE-K bound on the test set, beside the plain -ELBO
                    entry["test_objective"] = float(np.mean(iwae_nll(model, session.test_images, objective.samples, cfg.seed)))
                elif not objective.plain:  # the training objective on the test set, beside the plain -ELBO
                    entry["test_objective"] = entry["test_recon"] + objective.beta * entry["test_kl"]
                if not np.isfinite(entry[headline]):
                    raise DivergedError(f"training diverged in epoch {epoch}: {headline} is {entry[headline]}")
                metrics["history"].append(entry)
                save_checkpoint(run_dir, model, Position(epoch, 0, [], 0.0, metrics["history"], timing))
                write_metrics(run_dir, metrics)
                tb.epoch(entry, epoch * steps)
                ml.epoch(entry, epoch)
                tb.pictures(model, session.test_images, cfg.latent_dim, cfg.seed, epoch * steps)
                ips = entry["train_images_per_second"]
                log(
                    f"epoch {epoch}/{cfg.epochs}  {_epoch_line(cfg, entry)}  "
                    f"{entry['epoch_seconds']:.1f}s  {f'{ips:.0f} img/s' if ips else ''}"
                )
                if stop.signum is not None:  # arrived during the epoch's last step or its evaluation
                    raise RunInterruptedError(stop.signum, run_dir, epoch + 1, 0)
            finish(session, progress, log, stop, tb)
    except RunInterruptedError as exc:
        _record_end(run_dir, metrics, "interrupted", None, exc, log)
        raise
    except DivergedError as exc:
        done = metrics["history"]
        kept = f"the checkpoint of epoch {done[-1]['epoch']} is kept" if done else "no epoch finished, so there is no checkpoint"
        error = DivergedError(f"{exc}; {kept}; try a lower --lr")
        _record_end(run_dir, metrics, "diverged", str(error), error, log)
        raise error from None
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt | Terminated)
        message = None if interrupted else (str(exc) if isinstance(exc, VaebenchError) else f"{type(exc).__name__}: {exc}")
        _record_end(run_dir, metrics, "interrupted" if interrupted else "failed", message, exc, log)
        raise
    finally:
        if tb is not None:
            with contextlib.suppress(Exception):  # closing a log must not hide why the run ended
                tb.close()
        if ml is not None:
            ml.finish(run_dir, metrics["status"])
    return metrics


def _record_end(
    run_dir: Path, metrics: dict[str, Any], status: str, error: str | None, cause: BaseException, log: Callable[[str], None]
) -> None:
    """Finalise the status; if even that write fails, the error the user sees names the first cause, then this one."""
    failed = finalise(run_dir, metrics, status, error)
    if failed is None:
        return
    note = f"and its status ({status}) could not be recorded either: {failed}"
    if isinstance(cause, VaebenchError):
        cause.args = (f"{cause}; {note}",)
    else:
        log(f"warning: the run ended with {type(cause).__name__}, {note}")
