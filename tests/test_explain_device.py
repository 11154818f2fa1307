"""`vaebench explain --device`: the device reaches each backend's process and the document (for `nox -s gpu`, #24)."""

import subprocess
import sys

import pytest

from vaebench.measure import explain as ex
from vaebench.plugin import registry


def test_the_device_goes_into_every_request_and_the_document():
    seen = []

    def run(request):
        seen.append(request.device)
        return {"backend": request.backend, "environment": {}, "layers": [], "step": {}}

    doc = ex.explain(["a", "b"], "mlp", 8, rounds=2, log=lambda _: None, run=run, device="cuda")
    assert seen == ["cuda", "cuda"] and doc["device"] == "cuda"
    assert ex.explain(["a"], "mlp", 8, rounds=2, log=lambda _: None, run=run)["device"] == "cpu"  # as before


@pytest.mark.skipif("jax" not in registry.installed(), reason="needs the jax plugin")
def test_explain_device_cuda_without_a_gpu_is_one_line(tmp_path):
    cmd = [sys.executable, "-m", "vaebench.cli", "explain", "--backends", "jax", "--model", "mlp", "--device", "cuda"]
    proc = subprocess.run([*cmd, "--rounds", "1", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "sees no GPU" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
