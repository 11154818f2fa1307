"""The NumPy reference backend passes the conformance kit it anchors (no framework needed)."""

import pytest

from vaebench.plugin.numpy_backend import NumpyBackend
from vaebench.testing.kit import BackendTests


class TestNumpyBackend(BackendTests):
    step_atol = 1e-7  # float64 against float64: only the float32 export rounds

    @pytest.fixture
    def backend(self):
        return NumpyBackend(device="cpu")
