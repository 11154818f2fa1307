"""A sweep file is read with a bound: binary, endless or huge files are one line, exit 2 (issue #26).

``vaebench sweep FILE`` used to hand the file to ``tomllib.load`` whole: ``/dev/zero`` read until memory ran out,
a 2 GB file was read in full, and NUL bytes gave a parser error about a character. Driven through the real process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vaebench.sweep.plan import MAX_TOML_BYTES


def _dry_run(path: str | Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vaebench.cli", "sweep", str(path), "--dry-run"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)  # the bound: it must not read forever


def _one_line(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in lines[0] and "README" in lines[0], lines[0]


def test_a_file_of_nul_bytes_is_one_line(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_bytes(b"\x00" * 4096)
    _one_line(_dry_run(path), "NUL bytes")


def test_a_binary_file_is_one_line(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_bytes(bytes(range(128, 256)) * 8)
    _one_line(_dry_run(path), "not UTF-8")


def test_dev_zero_is_refused_at_the_bound_not_read_forever():
    _one_line(_dry_run("/dev/zero"), "larger than 1 MB")


def test_a_2_gb_file_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "sweep.toml"
    with open(path, "wb") as fh:  # sparse: 2 GB long, no disk used
        fh.truncate(2 << 30)
    _one_line(_dry_run(path), "larger than 1 MB")


def test_a_file_just_under_the_bound_is_still_read(tmp_path):
    path = tmp_path / "sweep.toml"
    body = 'backends = ["numpy"]\nmodels = ["mlp"]\n'
    path.write_text(body + "#" * (MAX_TOML_BYTES - len(body) - 1) + "\n")
    proc = _dry_run(path)
    assert proc.returncode == 0 and "1 runs; nothing started" in proc.stdout, proc.stderr


def test_a_file_that_vanished_is_one_error(tmp_path):
    from vaebench.errors import ConfigError
    from vaebench.sweep.plan import read_toml

    with pytest.raises(ConfigError, match="does not exist"):
        read_toml(tmp_path / "missing.toml")
