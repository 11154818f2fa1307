"""Atomic file writes: a crash or a full disk leaves the old file or the new, never half."""

from __future__ import annotations

import json
import os
from pathlib import Path

from vaebench.errors import VaebenchError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise VaebenchError(f"cannot write {path}: {exc.strerror or exc}; free space or choose another --out") from None


def atomic_write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as indented JSON atomically; NaN and inf are refused."""
    atomic_write_bytes(Path(path), (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())
