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


def atomic_write_files(folder: Path, files: dict[str, bytes]) -> None:
    """Write several files into ``folder`` as one: all of them, or none.

    Every file is written in full to a temporary name first; only when all are
    on disk are they renamed into place, so a failure (a full disk, a file-size
    limit, a signal) leaves the old set whole beside no half of a new one. A
    report whose page is missing, or stale beside new pictures, misleads.
    """
    folder = Path(folder)
    temps: dict[Path, Path] = {}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            path = folder / name
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            temps[path] = tmp
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        for path, tmp in temps.items():
            os.replace(tmp, path)
    except BaseException as exc:
        for tmp in temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise VaebenchError(f"cannot write {folder}: {exc.strerror or exc}; free space or choose another folder") from None
        raise


def _finite(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj: object, compact: bool = False) -> None:
    """Write ``obj`` as strict JSON atomically: indented, or ``compact`` (a fraction of the size).

    NaN and infinities become ``null``: a diverged value must not stop the file
    that records the divergence from being written.
    """
    text = json.dumps(_finite(obj), allow_nan=False, **({"separators": (",", ":")} if compact else {"indent": 2}))
    atomic_write_bytes(Path(path), (text + "\n").encode())


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


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400: Python reads it as inf, which no vaebench file holds
        raise ValueError(f"the number {text[:40]} is out of range for a float")
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) >= 1 << 63:  # no count vaebench writes is this large; as a float it would overflow or round
        raise ValueError(f"the integer {text[:40]}... is out of range")
    return value


def read_bounded(path: Path, limit: int, fix: str, what: str = "vaebench's") -> bytes:
    """The bytes of ``path``, at most ``limit`` of them: the one read every file vaebench reads as a whole goes through.

    The bound is on the bytes read, not on ``stat``: ``/dev/zero``, a FIFO or a
    file that grows while it is read all stop at ``limit`` and are refused in one
    line, instead of filling memory.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read(limit + 1)
    except FileNotFoundError:
        raise VaebenchError(f"{path} does not exist; {fix}") from None
    except IsADirectoryError:
        raise VaebenchError(f"{path} is a folder, not a file; {fix}") from None
    except OSError as exc:
        raise VaebenchError(f"cannot read {path}: {exc.strerror or exc}; {fix}") from None
    if len(data) > limit:
        size = f"{limit >> 20} MB" if limit >= 1 << 20 else f"{limit >> 10} KB"
        raise VaebenchError(f"{path} is larger than {size}, too large to be {what}; {fix}")
    return data


def read_text(path: Path, limit: int, fix: str, what: str = "vaebench's") -> str:
    """:func:`read_bounded`, decoded as UTF-8 text; a binary file is one error."""
    data = read_bounded(path, limit, fix, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise VaebenchError(f"{path} is not UTF-8 text (a binary file?); {fix}") from None
    if "\x00" in text:
        raise VaebenchError(f"{path} holds NUL bytes (a binary file?); {fix}")
    return text


def read_json(path: Path, fix: str) -> Any:
    """Parse strict JSON from ``path``; any failure is one error naming the file and ``fix``.

    Strict: no NaN or Infinity, and no number out of a float's range (``1e400``).
    """
    path = Path(path)
    text = read_text(path, MAX_JSON_BYTES, fix)
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_bounded_int)
    except RecursionError:
        raise VaebenchError(f"{path} is nested too deeply to be vaebench's; {fix}") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError; so are 1e400 and ints past Python's digit limit
        raise VaebenchError(f"{path} is not valid JSON ({str(exc)[:200]}); {fix}") from None


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
