import os
from pathlib import Path

import pytest

from vaebench.testing import make_tiny_dataset

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR_ENV = os.environ.get("VAEBENCH_DATA_DIR")  # read before any test clears it


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST files: $VAEBENCH_DATA_DIR, else ../shared/data/mnist beside the checkout."""
    for candidate in (DATA_DIR_ENV, ROOT.parent / "shared" / "data" / "mnist"):
        if candidate and (Path(candidate) / "train-images-idx3-ubyte.gz").is_file():
            return Path(candidate)
    pytest.skip("real MNIST not found: set VAEBENCH_DATA_DIR to the folder with the four IDX .gz files")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    """A 256/64-image MNIST-shaped data set made on the fly."""
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No test reads the user's environment, cache or network by accident."""
    monkeypatch.delenv("VAEBENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr("vaebench.io.datasets.SYSTEM_DIR", tmp_path / "no-system-datasets")


@pytest.fixture(params=["numpy", "torch", "jax", "keras"])
def backend(request) -> str:
    """Each in-process backend that is installed here (keras-jax and keras-torch need processes of their own)."""
    from vaebench.plugin import registry

    if request.param not in registry.installed():
        pytest.skip(f"backend {request.param} not installed")
    return request.param
