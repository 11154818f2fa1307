"""Every file vaebench writes or reads passes here: atomic writes, and guarded reads.

Writes replace a file so that a crash or a full disk leaves the old file or the
new, never half. Reads are the one validation layer for what comes from disk:
JSON (``metrics.json``, ``bench.json``, harness documents) and ``.npz``
(weights, checkpoints) are read with their size bounded by the file's real
size, and anything malformed (truncated, bit-flipped, a zip bomb, JSON nested
a million deep, an object array) becomes one :class:`~vaebench.errors.VaebenchError`
naming the file and what to do, never a traceback or an unbounded allocation.
The structure inside is checked by :mod:`vaebench.io.schema`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import VaebenchError

MAX_JSON_BYTES = 256 << 20  # a metrics.json of a 10,000-epoch run is ~5 MB
NPZ_SLACK = 1 << 20  # vaebench's .npz members are stored uncompressed: their sizes add up to the file's
_TMP = re.compile(r"^\..+\.\d+\.tmp$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old file or the new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):  # on a read-only or vanished filesystem the cleanup fails too
            tmp.unlink(missing_ok=True)
        raise VaebenchError(f"cannot write {path}: {exc.strerror or exc}; free space or choose another --out") from None


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: object) -> None:
    """Write ``obj`` as strict, indented JSON atomically.

    NaN and infinities become ``null``: a diverged value must not stop the file
    that records the divergence from being written.
    """
    atomic_write_bytes(Path(path), (json.dumps(_finite(obj), indent=2, allow_nan=False) + "\n").encode())


def remove_orphans(folder: Path) -> list[Path]:
    """Delete temporary files a killed writer left in ``folder`` (``.<name>.<pid>.tmp``); return them.

    Call it only while holding the folder's lock, when no other writer can be mid-write.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        if _TMP.match(tmp.name) and tmp.is_file():
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def read_json(path: Path, fix: str) -> Any:
    """Parse strict JSON from ``path``; any failure is one error naming the file and ``fix``."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise VaebenchError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MB, too large to be vaebench's; {fix}")
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=_refuse_constant)
    except FileNotFoundError:
        raise VaebenchError(f"{path} does not exist; {fix}") from None
    except RecursionError:
        raise VaebenchError(f"{path} is nested too deeply to be vaebench's; {fix}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise VaebenchError(f"{path} is not valid JSON ({exc}); {fix}") from None


def _member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> tuple[tuple[int, ...], np.dtype]:
    with zf.open(info) as fh:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _fortran, dtype = reader(fh)
    return shape, dtype


def read_npz(path: Path, fix: str) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file, read with memory bounded by the file's size.

    Before any array is read, every member's declared size is checked against
    the zip directory and the zip directory against the bytes on disk, and
    object arrays are refused (no pickles). Empty, truncated and bit-flipped
    files (zip CRC) are one error.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if sum(i.file_size for i in infos) > 4 * size + NPZ_SLACK:
                raise VaebenchError(f"{path} declares far more data than its {size} bytes hold; {fix}")
            for info in infos:
                shape, dtype = _member_header(zf, info)
                if dtype.hasobject:
                    raise VaebenchError(f"{path} holds Python objects ({info.filename}), which vaebench never writes; {fix}")
                if math.prod(shape) * dtype.itemsize > info.file_size:
                    raise VaebenchError(f"{path}: {info.filename} declares more data than it holds; {fix}")
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise VaebenchError(f"{path} does not exist; {fix}") from None
    except (OSError, EOFError, ValueError, KeyError, IndexError, struct.error, zlib.error, zipfile.BadZipFile) as exc:
        raise VaebenchError(f"{path} is not a readable .npz ({type(exc).__name__}: {exc}); {fix}") from None
    except (NotImplementedError, RuntimeError, MemoryError, OverflowError) as exc:  # odd zip features, huge shapes
        raise VaebenchError(f"{path} is not a readable .npz ({type(exc).__name__}); {fix}") from None
