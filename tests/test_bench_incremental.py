"""bench writes what it measured cell by cell: a failure in cell N keeps cells 1..N-1 on disk (issue #26, item 2).

The failure comes from a real plugin, installed for the test through an entry point on ``PYTHONPATH``: numpy's
reference backend, but one that refuses to build any model other than the MLP, so with ``--models mlp,conv``
the first cell is measured and the second fails in its worker, as a crash would. Driven through the real process.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = '''
from vaebench.errors import BackendError
from vaebench.plugin.numpy_backend import NumpyBackend


class PickyBackend(NumpyBackend):
    """numpy, refusing every model but the MLP: bench's second cell fails, its first does not."""

    name = "picky"

    def build(self, spec, adam):
        if spec.name != "mlp":
            raise BackendError(f"picky refuses the {spec.name} model")
        return super().build(spec, adam)
'''

BENCH = ("bench", "--backends", "picky", "--batch-sizes", "32", "--repeats", "2", "--threads", "1")
QUIET = ("--no-inference", "--allow-busy", "--peak-seconds", "0")


@pytest.fixture
def picky(tmp_path) -> dict[str, str]:
    """The environment in which the ``picky`` backend is installed (for bench and its workers)."""
    site = tmp_path / "site"
    (site / "picky_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "picky_plugin.py").write_text(PLUGIN)
    (site / "picky_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: picky-plugin\nVersion: 0.1\n")
    (site / "picky_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[vaebench.backends]\npicky = picky_plugin:PickyBackend\n"
    )
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "PYTHONPATH": path}


def _bench(env: dict[str, str], *args: object) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vaebench.cli", *BENCH, *QUIET, *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_a_bench_whose_second_cell_fails_keeps_the_first_cells_rows(picky, tmp_path):
    out = tmp_path / "b"
    proc = _bench(picky, "--models", "mlp,conv", "--out", out)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("warning:")]  # a busy machine's
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert "picky refuses the conv model" in lines[0]
    assert f"the 1 row measured before it kept in {out / 'bench.json'} (complete: false)" in lines[0]
    doc = json.loads((out / "bench.json").read_text())
    assert doc["method"]["complete"] is False
    [row] = doc["results"]
    assert (row["backend"], row["model"], row["batch_size"]) == ("picky", "mlp", 32)
    assert row["train_images_per_second"]["median"] > 0 and row["load"]["busy"] in (True, False)
    with open(out / "bench.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["backend"], r["model"]) for r in rows] == [("picky", "mlp")]
    compare = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "compare", str(out / "bench.json")], capture_output=True, text=True, env=picky
    )
    assert compare.returncode == 0 and "mlp" in compare.stdout, compare.stderr  # what was kept reads back


def test_a_bench_that_finishes_says_it_is_complete(picky, tmp_path):
    out = tmp_path / "b"
    proc = _bench(picky, "--models", "mlp", "--out", out)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "bench.json").read_text())
    assert doc["method"]["complete"] is True and [r["model"] for r in doc["results"]] == ["mlp"]
    assert not list(Path(out).glob(".*.tmp"))  # every write was atomic: no temporary file left
