"""`vaebench run -o BACKEND:KEY=VALUE`, as bench and parity take it (#24)."""

import json
import subprocess
import sys

import pytest

from vaebench.plugin import registry


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vaebench.cli", "run", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.skipif("jax" not in registry.installed(), reason="needs the jax plugin")
def test_an_option_named_for_the_runs_backend_reaches_it(tmp_path, tiny_dir):
    out = tmp_path / "run"
    settings = ["--model", "mlp", "--limit-train", "128", "--epochs", "1", "--batch-size", "64", "--threads", "1"]
    proc = _run("-b", "jax", "-o", "jax:transpose=subpixel", *settings, "--data-dir", str(tiny_dir), "--out", str(out), "-q")
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["options"] == {"transpose": "subpixel"}
    assert metrics["environment"]["backend"]["transpose"] == "subpixel"


@pytest.mark.parametrize(
    ("backend", "option", "says"),
    [
        ("numpy", "torch:layout=nchw", "names backend 'torch', but this run trains 'numpy'"),
        ("torch,jax", "jax:transpose=subpixel", "BACKEND:KEY=VALUE applies with one backend"),
    ],
)
def test_an_option_for_another_backend_is_one_line_exit_2(backend, option, says):
    if any(b not in registry.installed() for b in backend.split(",")):
        pytest.skip(f"needs {backend}")
    proc = _run("-b", backend, "-o", option)
    assert proc.returncode == 2 and says in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
