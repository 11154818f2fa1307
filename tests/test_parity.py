"""`vaebench parity`: the comparison logic, and the real command across installed backends."""

import subprocess
import sys

import numpy as np
import pytest

from vaebench.measure.paritycheck import compare
from vaebench.plugin import registry


def _result(seed: float = 0.0, outliers: int = 0) -> dict[str, np.ndarray]:
    params = np.zeros(1000, np.float32)
    params[:outliers] = 5e-4
    return {
        "neg_elbo": np.array([500.0, 510.0]) + seed,
        "grid": np.zeros((4, 28, 28, 1)),
        "losses": np.array([500.0, 499.0]),
        "param/w": params,
    }


def test_compare_passes_close_results_and_flags_each_kind_of_gap():
    assert all(r["ok"] for r in compare({"a": _result(), "b": _result(1e-3)}, steps=3))
    assert not compare({"a": _result(), "b": _result(1.0)}, steps=3)[0]["ok"]  # -ELBO off by 2e-3 relative
    assert not compare({"a": _result(), "b": _result(outliers=20)}, steps=3)[0]["ok"]  # 2% of entries off
    grid = _result()
    grid["grid"] = grid["grid"] + 1e-3
    assert not compare({"a": _result(), "b": grid}, steps=3)[0]["ok"]


@pytest.mark.skipif(len(registry.installed()) < 2, reason="needs two installed backends")
def test_parity_command_across_installed_backends():
    proc = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "parity", "--model", "mlp", "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    pairs = [line for line in proc.stdout.splitlines() if " vs " in line]
    n = len(registry.installed())
    assert len(pairs) == n * (n - 1) // 2 and all(line.endswith("yes") for line in pairs)


def test_parity_with_an_unknown_backend_is_a_clear_error():
    proc = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "parity", "--backends", "numpy,nope"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "'nope' is not installed" in proc.stderr
