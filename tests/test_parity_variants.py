"""`vaebench parity -o` and `--profile best`: any variant bench can run is checked against the float64 reference."""

import subprocess
import sys

import pytest

from vaebench.errors import BackendError
from vaebench.measure.parity import _in_subprocess, plan
from vaebench.plugin import registry
from vaebench.plugin.profiles import Variant

needs_jax = pytest.mark.skipif("jax" not in registry.installed(), reason="needs the jax plugin")


def _parity(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "vaebench.cli", "parity", "--model", "conv", "--steps", "2", "--batch-size", "8", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900)


@needs_jax
def test_subpixel_variant_is_at_parity_with_numpy_and_named_in_the_table():
    proc = _parity("--backends", "numpy,jax", "-o", "jax:transpose=subpixel")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    assert "options jax:transpose=subpixel" in proc.stdout.splitlines()[0]
    pairs = [line for line in proc.stdout.splitlines() if " vs " in line]
    assert len(pairs) == 1 and pairs[0].startswith("numpy vs jax[transpose=subpixel] ") and pairs[0].endswith("yes")


@needs_jax
@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("jax:nope=1", "has no option 'nope'"),
        ("jax:transpose=bogus", "transpose must be one of lax, subpixel"),
        ("nope=1", "no benchmarked backend has option 'nope'"),
        ("torch:layout=nchw", "names backend 'torch'"),
    ],
)
def test_a_bad_option_is_one_line_and_exit_2_before_any_backend_runs(option, says):
    proc = _parity("--backends", "numpy,jax", "-o", option)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "running" not in proc.stderr  # refused before numpy's minutes, not after


@needs_jax
def test_best_checks_every_candidate_of_every_backend_as_its_own_entry():
    entries = [name for name, _, _ in plan(["numpy", "jax"], "best")]
    assert entries == ["numpy", "jax[transpose=lax]", "jax[transpose=subpixel]"]
    fixed = [name for name, _, _ in plan(["numpy", "jax"], "best", {"jax:transpose": "subpixel"})]
    assert fixed == ["numpy", "jax[transpose=subpixel]"]  # what the user fixed is not tuned
    assert [name for name, _, _ in plan(["numpy", "jax"])] == ["numpy", "jax"]


@needs_jax
def test_the_variant_reaches_the_backend_in_its_process():
    # A value only the backend's constructor refuses: if the variant were dropped on the way, this would pass.
    with pytest.raises(BackendError, match="transpose must be one of"):
        _in_subprocess("jax", "mlp", 1, 2, Variant(options={"transpose": "bogus"}))


@needs_jax
def test_device_reaches_every_backend_but_the_numpy_reference():
    # No GPU here: jax refuses --device cuda in its own process; numpy, the reference, ran on the CPU before it.
    proc = _parity("--backends", "numpy,jax", "--device", "cuda")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "running numpy" in proc.stderr and "parity run of jax failed" in proc.stderr and "sees no GPU" in proc.stderr
