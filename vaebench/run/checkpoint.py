"""Checkpoints: one atomic ``checkpoint.npz`` per run folder, rewritten after every epoch.

It holds the canonical weights (``param/<name>``), Adam's canonical state
(``adam/step``, ``adam/<name>/m``, ``adam/<name>/v``) and, as JSON, the
position: the last finished epoch, the steps done in the next one with their
losses and seconds, the history so far and the timing. No RNG state is needed:
every batch, binarisation and noise draw is a function of (seed, epoch), and a
resumed epoch regenerates and skips the batches already trained on.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import VaebenchError
from vaebench.io.fileio import atomic_write_bytes, read_npz
from vaebench.io.schema import NUM, check
from vaebench.model.batches import steps_per_epoch
from vaebench.model.config import TrainConfig
from vaebench.plugin.contract import Model
from vaebench.run.results import EPOCH_SCHEMA

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_VERSION = 1
EXACT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))  # the state dtypes backends checkpoint in


@dataclass
class Position:
    """Where a run stands: ``epoch`` finished, ``step`` steps into the next one."""

    epoch: int
    step: int = 0
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    timing: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(run_dir: Path, model: Model, position: Position) -> None:
    """Write weights, Adam state and ``position`` atomically to ``run_dir/checkpoint.npz``."""
    # exact: in the backend's own precision (float64 for numpy), so a resumed run continues bit for bit
    arrays = {f"param/{k}": v for k, v in model.export_weights(exact=True).items()}
    arrays.update({f"adam/{k}": v for k, v in model.export_optimizer_state(exact=True).items()})
    meta = json.dumps({"version": CHECKPOINT_VERSION, **asdict(position)}, allow_nan=False)
    arrays["meta"] = np.frombuffer(meta.encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buffer.getvalue())


META_SCHEMA = {
    "version": int,
    "epoch": int,
    "step": int,
    "losses": [NUM],
    "seconds": NUM,
    "history": [EPOCH_SCHEMA],
    "timing": dict,
}


def load_checkpoint(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Position]:
    """``(weights, adam_state, position)`` from ``run_dir/checkpoint.npz``, every part checked."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise VaebenchError(f"{run_dir} has no {CHECKPOINT} (it stopped before its first epoch ended); start it again")
    fix = "the run cannot be resumed; start it again with --overwrite"
    data = read_npz(path, fix)
    try:
        meta = json.loads(bytes(data["meta"]).decode())
    except (KeyError, UnicodeDecodeError, ValueError, RecursionError):
        raise VaebenchError(f"{path} has no readable position (meta); {fix}") from None
    if not isinstance(meta, dict) or meta.get("version") != CHECKPOINT_VERSION:
        raise VaebenchError(f"{path} was written by an incompatible vaebench (checkpoint version); {fix}")
    check(meta, META_SCHEMA, f"{path} (meta)", fix)
    known = {f.name for f in dataclasses.fields(Position)}
    extra = sorted(set(meta) - known - {"version"})
    if extra:
        raise VaebenchError(f"{path} has unknown position fields {extra[:3]}; {fix}")
    params = {k[6:]: v for k, v in data.items() if k.startswith("param/")}
    adam = {k[5:]: v for k, v in data.items() if k.startswith("adam/")}
    for name, value in {**params, **adam}.items():
        if value.dtype not in EXACT_DTYPES or not np.isfinite(value).all():
            raise VaebenchError(f"{path}: {name} is {value.dtype}, not finite float32 or float64 (a backend's own); {fix}")
    meta.pop("version")
    return params, adam, Position(**meta)


def check_position(position: Position, cfg: TrainConfig, train_images: int, run_dir: Path) -> None:
    """Refuse a position that this run, with its config and its data, cannot have reached.

    Every field is checked: the finished epoch against ``cfg.epochs``, the step
    against the steps an epoch of ``train_images`` has, the losses and seconds
    against the step, the history against the epoch. A checkpoint edited by hand
    (or by a bug) would otherwise train nothing, record a made-up loss, or count
    throughput over steps that never ran, and still end ``completed``.
    """
    path = Path(run_dir) / CHECKPOINT
    fix = "the run cannot be resumed from it; start it again with --overwrite"
    steps = steps_per_epoch(train_images, cfg.batch_size)
    problems = []
    if not 0 <= position.epoch <= cfg.epochs:
        problems.append(f"epoch {position.epoch} is outside 0..{cfg.epochs} (the run's --epochs)")
    if not 0 <= position.step < steps:
        problems.append(f"step {position.step} is outside 0..{steps - 1} (an epoch of {train_images} images has {steps} steps)")
    elif position.step and position.epoch >= cfg.epochs:
        problems.append(f"step {position.step} is into epoch {position.epoch + 1}, past the run's {cfg.epochs} epochs")
    if len(position.losses) != max(position.step, 0):
        problems.append(f"{len(position.losses)} losses recorded for {position.step} steps")
    if not all(np.isfinite(v) for v in position.losses):
        problems.append("a recorded loss is not finite")
    if not (np.isfinite(position.seconds) and position.seconds >= 0):
        problems.append(f"{position.seconds} seconds recorded for {position.step} steps")
    epochs = [entry.get("epoch") for entry in position.history]
    if epochs != list(range(1, position.epoch + 1)):
        problems.append(f"the history holds epochs {epochs[:5]}{'...' if len(epochs) > 5 else ''}, not 1..{position.epoch}")
    if problems:
        raise VaebenchError(f"{path} holds a position this run cannot have reached: {'; '.join(problems[:2])}; {fix}")
