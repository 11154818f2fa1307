"""`nox -s gpu` refuses, in one line and before installing anything, on a machine without CUDA (#24).

The session itself needs a GPU and gigabytes of CUDA wheels; what can be tested anywhere is its gate.
"""

import importlib.util
import shutil
from pathlib import Path

import pytest

pytest.importorskip("nox")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def noxfile():
    spec = importlib.util.spec_from_file_location("vaebench_noxfile", ROOT / "noxfile.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RefusedError(Exception):
    pass


class FakeSession:
    """What the gate may touch before refusing: error() only. Anything else is recorded, so a test sees it."""

    def __init__(self):
        self.calls = []

    def error(self, message):
        raise RefusedError(message)

    def __getattr__(self, name):
        return lambda *args, **kwargs: self.calls.append((name, args))


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine may have a GPU")
def test_no_cuda_here(noxfile):
    torch = importlib.util.find_spec("torch")
    if torch is not None:
        import torch as t

        if t.cuda.is_available():
            pytest.skip("torch sees a GPU")
    assert noxfile.cuda_available() is False


def test_without_cuda_the_session_refuses_in_one_line_before_installing(noxfile, monkeypatch):
    monkeypatch.setattr(noxfile, "cuda_available", lambda: False)
    session = FakeSession()
    with pytest.raises(RefusedError) as refused:
        noxfile.gpu(session)
    assert str(refused.value) == noxfile.GPU_REFUSAL == "nox -s gpu needs an NVIDIA GPU with CUDA; none found here"
    assert "\n" not in str(refused.value) and session.calls == []  # nothing installed, nothing run


def test_nvidia_smi_that_fails_is_no_gpu(noxfile, monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\nexit 9\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))  # and no torch on this PATH's python matters: find_spec is this process's
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    assert noxfile.cuda_available() is False
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200'\n")
    assert noxfile.cuda_available() is True


def test_every_step_writes_into_the_one_folder(noxfile):
    source = (ROOT / "noxfile.py").read_text()
    body = source[source.index("def gpu(") : source.index("# What `nox -s mutation` gates")]
    assert noxfile.GPU_OUT == "gpu-results" and 'str(out / "bench")' in body and 'str(out / "explain")' in body
    assert set(noxfile.GPU_KITS) == {"torch", "jax", "keras", "keras-jax", "keras-torch"}
