"""The run folder: its ``metrics.json`` (one schema, written atomically) and its lock.

``metrics.json`` is rewritten after every epoch (status ``running``) and at the
end (``completed``), so a crash never leaves a file that looks finished.

Whoever writes into a run folder holds it: :func:`claim_run_dir` takes an
``fcntl`` lock on ``<run>/.lock`` (released by the kernel if the holder dies, so
it can never go stale) and writes the holder's PID, host and start time into it,
so a second ``run``, ``--resume`` or ``eval`` on a held folder is refused with a
line naming the holder. With ``--overwrite`` the old run's files are moved out
of the way under that lock before anything new is written, so a new run that
dies early can never be resumed on the old one's checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import fcntl
import hashlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, InUseError, VaebenchError
from vaebench.io.fileio import atomic_write_json, read_json, remove_orphans
from vaebench.io.schema import NUM, Maybe, check
from vaebench.model.catalogue import canonical_model
from vaebench.model.config import TrainConfig

SCHEMA_VERSION = 1
METRICS = "metrics.json"
LOCK = ".lock"
STATUSES = ("running", "completed", "interrupted", "diverged", "failed")
#: What a finished run leaves for people (named in run's last line, uploaded to MLflow), in that order.
RUN_OUTPUTS = ("metrics.json", "weights.npz", "grid.png", "samples.png", "reconstructions.png", "latent.png", "curves.png")
#: Everything a run writes; --overwrite clears a folder only if it holds nothing else.
RUN_FILES = frozenset({*RUN_OUTPUTS, "checkpoint.npz", "tb"})
_TRASH = ".replaced-"


def written_outputs(run_dir: Path) -> list[str]:
    """What a finished run left in ``run_dir`` for a person to open, in :data:`RUN_OUTPUTS` order (``tb/`` last)."""
    return [n for n in RUN_OUTPUTS if (run_dir / n).exists()] + (["tb/"] if (run_dir / "tb").is_dir() else [])


CONFIG_SCHEMA = {
    "backend": str,
    "model": str,
    "dataset": str,
    "epochs": int,
    "batch_size": int,
    "latent_dim": int,
    "lr": NUM,
    "seed": int,
    "binarize": bool,
    "device": str,
    "limit_train": Maybe(int),
    "eval_batch_size": int,
    "eval_k": int,
    "threads": Maybe(int),
    "compile": bool,
    "options": dict,
    "precision": Maybe(str),
    "objective": Maybe(str),
    "beta": Maybe(NUM),
    "lr_schedule": Maybe(str),
    "adam_eps": Maybe(NUM),
}
EPOCH_SCHEMA = {
    "epoch": int,
    "lr": Maybe(NUM),  # Adam's rate in this epoch (--lr-schedule); runs from before it trained at config.lr
    "train_neg_elbo": Maybe(NUM),
    "train_objective": Maybe(NUM),  # the training objective, where it is not the -ELBO (--objective beta-vae)
    "test_neg_elbo": Maybe(NUM),
    "test_objective": Maybe(NUM),
    "test_recon": Maybe(NUM),
    "test_kl": Maybe(NUM),
    "epoch_seconds": NUM,
    "train_images_per_second": Maybe(NUM),
}
METRICS_SCHEMA = {
    "schema_version": int,
    "run_id": Maybe(str),
    "status": str,
    "error": Maybe(str),
    "model": Maybe(dict),
    "environment": Maybe({"backend": Maybe(dict), "threads": Maybe(dict)}),
    "execution": Maybe(dict),
    "placement": Maybe(dict),
    "tracking": Maybe(dict),
    "config": CONFIG_SCHEMA,
    "history": [EPOCH_SCHEMA],
    "timing": Maybe(dict),
    "data": Maybe({"sha256": Maybe(dict), "source": Maybe(str), "changes": Maybe([dict])}),
    "final": Maybe({"test_neg_elbo": Maybe(NUM), "test_nll": Maybe(NUM), "active_units": Maybe(int)}),
    "evaluations": Maybe(dict),
    "resumed": Maybe([dict]),
}


def default_run_dir(backend: str, model: str, root: Path = Path("results/runs")) -> Path:
    """``results/runs/<UTC timestamp>-<backend>-<model>``."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return root / f"{stamp}-{backend}-{model}"


class RunLock:
    """An exclusive ``flock`` on ``<folder>/.lock``, naming its holder inside the file."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise :class:`ConfigError` naming whoever holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise VaebenchError(f"cannot lock {self.path.parent}: {exc.strerror or exc}; choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise InUseError(
                f"{self.path.parent} is in use by another vaebench ({holder}); wait for it to end, or use another --out"
            ) from None
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        with contextlib.suppress(OSError):  # the lock holds even if its note cannot be written
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Let go (the file stays: deleting it would race with the next holder)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _clear(path: Path, overwrite: bool) -> None:
    """Make a held folder ready for a new run: refuse, or move the old run's files out and delete them."""
    for leftover in path.glob(f"{_TRASH}*"):  # an earlier --overwrite killed half-way
        shutil.rmtree(leftover, ignore_errors=True)
    remove_orphans(path)
    present = sorted(p.name for p in path.iterdir() if p.name != LOCK)
    ours = [n for n in present if n in RUN_FILES]
    if not ours:
        return
    if not overwrite:
        raise ConfigError(_OCCUPIED.format(path=path))
    foreign = [n for n in present if n not in RUN_FILES]
    if foreign:
        raise ConfigError(
            f"--overwrite would delete files vaebench did not write in {path} ({', '.join(foreign[:3])}); "
            "move them away or choose another --out"
        )
    trash = path / f"{_TRASH}{os.getpid()}"
    trash.mkdir()
    # metrics.json first: from then on the folder is not a run any more, whatever a crash leaves behind
    for name in sorted(ours, key=lambda n: n != METRICS):
        os.replace(path / name, trash / name)
    shutil.rmtree(trash, ignore_errors=True)


_OCCUPIED = "{path} already holds a run; choose another --out or pass --overwrite"


def refuse_occupied(path: Path, overwrite: bool) -> None:
    """The refusals of :func:`claim_run_dir` for a new run, checked without touching ``path``.

    A run calls this before it opens its session, so a run that will be refused
    says only why: no busy-machine warning, no plugin or data loaded first.
    :func:`claim_run_dir` checks again under the lock, which is what decides.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder")
    if not overwrite and path.is_dir() and any((path / name).exists() for name in RUN_FILES):
        raise ConfigError(_OCCUPIED.format(path=path))


@contextlib.contextmanager
def claim_run_dir(path: Path, new: bool = True, overwrite: bool = False) -> Iterator[Path]:
    """Hold ``path`` for the duration: a new run's folder (created, and cleared under ``overwrite``) or,
    with ``new=False``, an existing run being resumed or evaluated.

    A folder this call created is removed again if what runs inside fails before
    writing anything into it: a refused run leaves no folder holding only ``.lock``.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path} is a file, not a folder")
    created = new and not path.exists()
    if new:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise VaebenchError(f"cannot create {path}: {exc.strerror or exc}; choose another --out") from None
    lock = RunLock(path).acquire()
    try:
        if new:
            _clear(path, overwrite)
        else:
            remove_orphans(path)
        yield path
    except BaseException:
        if created and {p.name for p in path.iterdir()} <= {LOCK}:
            with contextlib.suppress(OSError):
                (path / LOCK).unlink()
                path.rmdir()
        raise
    finally:
        lock.release()


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    """Atomically replace ``run_dir/metrics.json``."""
    atomic_write_json(run_dir / METRICS, metrics)


def new_run_id() -> str:
    """A run's identity, recorded in ``metrics.json`` when it starts and kept when it resumes."""
    return uuid.uuid4().hex


def file_sha256(path: Path) -> str | None:
    """SHA-256 of a file (``None`` if it is not there)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None


def run_identity(run_dir: Path, metrics: dict[str, Any]) -> dict[str, str | None]:
    """What makes a run folder *this* run: its ``run_id`` and the SHA-256 of its ``weights.npz``.

    Whoever attaches a result to a run (``eval``, a sweep) takes this before its
    work and compares it under the folder's lock before writing: a run replaced
    in between (``run --overwrite``) has another id, or other weights where a run
    predates run ids.
    """
    return {"run_id": metrics.get("run_id"), "weights_sha256": file_sha256(Path(run_dir) / "weights.npz")}


def finalise(run_dir: Path, metrics: dict[str, Any], status: str, error: str | None = None) -> str | None:
    """The one place a run's end is recorded: ``status`` (and ``error``) into ``metrics.json``, whatever else failed.

    Returns ``None`` once it is written, else why it could not be: the caller
    names its first cause and this second one. The status is tried twice, the
    second time as compact JSON (a fraction of the size), so a disk or a
    file-size limit that refused the checkpoint can still take the status.
    """
    metrics["status"] = status
    if error is not None:
        metrics["error"] = error
    try:
        write_metrics(run_dir, metrics)
        return None
    except VaebenchError as exc:
        first = str(exc)
    try:
        atomic_write_json(Path(run_dir) / METRICS, metrics, compact=True)
        return None
    except (VaebenchError, TypeError, ValueError):
        return first


def read_metrics(run_dir: Path) -> dict[str, Any]:
    """Read a run's ``metrics.json``, checking it is one this version understands, with the structure it needs."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        raise VaebenchError(f"{run_dir} is not a vaebench run (no {METRICS})")
    fix = "restore it from a backup, or start the run again with --overwrite"
    metrics = read_json(path, fix)
    if not isinstance(metrics, dict) or metrics.get("schema_version") != SCHEMA_VERSION:
        version = metrics.get("schema_version") if isinstance(metrics, dict) else None
        raise VaebenchError(f"{path} has schema version {version!r}, this vaebench reads {SCHEMA_VERSION}; {fix}")
    check(metrics, METRICS_SCHEMA, path, fix)
    if metrics["status"] not in STATUSES:
        raise VaebenchError(f"{path} has an unknown status {metrics['status'][:40]!r}; {fix}")
    metrics["config"]["model"] = canonical_model(metrics["config"]["model"])  # runs written before a rename
    return metrics


def config_of(metrics: dict[str, Any], where: object = "metrics.json") -> TrainConfig:
    """The resolved :class:`TrainConfig` a run's ``metrics.json`` records (refused, in one line, if it cannot be one)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    try:
        return TrainConfig(**{key: value for key, value in metrics["config"].items() if key in known}).resolved()
    except (KeyError, TypeError, ValueError, VaebenchError) as exc:
        raise ConfigError(f"{where}: its recorded config is not a valid run ({exc}); start the run again") from None


def recorded_data_dir(metrics: dict[str, Any], data_dir: str | Path | None) -> str | Path | None:
    """``data_dir`` if given, else the folder the run's data came from if it is still there (else ``None``)."""
    source = (metrics.get("data") or {}).get("source")
    if data_dir is None and isinstance(source, str) and Path(source).is_dir():
        return source
    return data_dir


#: What makes two runs comparable, i.e. seeds of one comparison: the same data, model, objective and recipe.
#: Backend, seed, device, threads and execution settings are what a comparison varies or does not care about.
COMPARABLE = ("data", "model", "objective", "recipe")
_RECIPE = ("dataset", "batch_size", "lr", "epochs", "binarize", "limit_train", "precision")
# fields added later, with TrainConfig's defaults: the values runs had before they were recorded
_RECIPE_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name in ("lr_schedule", "adam_eps")}


def objective_of(cfg: dict[str, Any]) -> str:
    """The training objective as comparison text: ``elbo`` for the plain -ELBO, however a run names it.

    Runs written before ``--objective`` record none, ``vae`` records beta 1, and
    ``beta-vae`` at beta 1 is the same objective: all three are ``elbo``, so
    they stay seeds of one comparison. Any other weight is its own objective.
    """
    name = str(cfg.get("objective") or "vae")
    beta = cfg.get("beta")
    if name in ("vae", "beta-vae") and (beta is None or beta == 1):
        return "elbo"
    if name == "iwae":  # the IWAE bound: K samples per image, no KL weight; each K its own objective
        return f"iwae k={cfg.get('iw_samples', 1)}"
    text = name
    if isinstance(beta, int | float):
        text += f" beta={float(beta):g}"  # 4 and 4.0 are one weight
    for extra in ("iwae_k_train", "k"):
        if cfg.get(extra) is not None:
            text += f" {extra}={cfg[extra]}"
    return text


def comparable(metrics: dict[str, Any]) -> dict[str, str]:
    """A run's value of each :data:`COMPARABLE` field, as short text: runs are comparable when every one is equal.

    The one rule ``compare``, the report and a sweep's statistics group by:
    the data by SHA-256 of every file (a run resumed on changed data counts as
    its own data), the model by name and latent size, the objective (the ELBO
    unless a run records another, with its weight), the recipe by what else
    shapes training.
    """
    cfg = metrics["config"]
    data = metrics.get("data") or {}
    sha = data.get("sha256") or {}
    digest = hashlib.sha256(repr(sorted((str(k), str(v)) for k, v in sha.items())).encode()).hexdigest()[:12] if sha else "?"
    if data.get("changes"):
        digest += f"+{len(data['changes'])} changes"
    objective = objective_of(cfg)
    recipe = " ".join(f"{key}={cfg.get(key)}" for key in _RECIPE)
    for key, default in _RECIPE_DEFAULTS.items():  # named only where a run set them: older runs read as before
        if cfg.get(key, default) not in (default, None):
            recipe += f" {key}={cfg[key]}"
    return {"data": digest, "model": f"{cfg.get('model')} z{cfg.get('latent_dim')}", "objective": objective, "recipe": recipe}


def headline(final: dict[str, Any]) -> tuple[str, str] | None:
    """``(key, label)`` of the figure a finished run is judged by, lower better: the test -ELBO in nats, or a VQ
    model's test reconstruction loss (MSE over the recipe's variance), which has no ELBO; ``None`` for neither."""
    if final.get("test_neg_elbo") is not None:
        return "test_neg_elbo", "test -ELBO"
    if final.get("test_loss") is not None and final.get("test_recon") is not None:
        return "test_recon", "test reconstruction loss"
    return None


def final_figure(final: dict[str, Any]) -> str:
    """A finished run's headline as one phrase: ``test -ELBO 140.12 nats``, or a VQ model's reconstruction loss."""
    if final.get("test_neg_elbo") is not None:
        return f"test -ELBO {final['test_neg_elbo']:.2f} nats"
    return f"test reconstruction loss {final['test_recon']:.4f} (MSE / variance), codebook perplexity {final['perplexity']:.1f}"
