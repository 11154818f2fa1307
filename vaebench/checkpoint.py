"""Checkpoints: one atomic ``checkpoint.npz`` per run folder, rewritten after every epoch.

It holds the canonical weights (``param/<name>``), Adam's canonical state
(``adam/step``, ``adam/<name>/m``, ``adam/<name>/v``) and, as JSON, the
position: the last finished epoch, the steps done in the next one with their
losses and seconds, the history so far and the timing. No RNG state is needed:
every batch, binarisation and noise draw is a function of (seed, epoch), and a
resumed epoch regenerates and skips the batches already trained on.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.contract import Model
from vaebench.errors import VaebenchError
from vaebench.fileio import atomic_write_bytes

CHECKPOINT = "checkpoint.npz"
CHECKPOINT_VERSION = 1


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
    arrays = {f"param/{k}": v for k, v in model.export_weights().items()}
    arrays.update({f"adam/{k}": v for k, v in model.export_optimizer_state().items()})
    meta = json.dumps({"version": CHECKPOINT_VERSION, **asdict(position)}, allow_nan=False)
    arrays["meta"] = np.frombuffer(meta.encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(Path(run_dir) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Position]:
    """``(weights, adam_state, position)`` from ``run_dir/checkpoint.npz``."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise VaebenchError(f"{run_dir} has no {CHECKPOINT} (it stopped before its first epoch ended); start it again")
    try:
        with np.load(path) as data:
            meta = json.loads(bytes(data["meta"]).decode())
            params = {k[6:]: data[k] for k in data.files if k.startswith("param/")}
            adam = {k[5:]: data[k] for k in data.files if k.startswith("adam/")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise VaebenchError(f"{path} is unreadable ({exc}); the run cannot be resumed") from None
    if meta.pop("version", None) != CHECKPOINT_VERSION:
        raise VaebenchError(f"{path} was written by an incompatible vaebench (checkpoint version); start the run again")
    return params, adam, Position(**meta)
