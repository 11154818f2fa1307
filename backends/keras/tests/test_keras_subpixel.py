"""``transpose=subpixel`` on the Keras engine of this process: the whole kit, and Conv2DTranspose's function.

The engine is ``VAEBENCH_KERAS_ENGINE`` (default TensorFlow); ``nox -s keras_engines`` runs this file on JAX
and PyTorch too.
"""

import importlib.util
import os

import pytest

from vaebench.plugin import registry
from vaebench.testing.kit import BackendTests, assert_same_function

ENGINE = os.environ.get("VAEBENCH_KERAS_ENGINE", "keras")
NEEDS = {"keras": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
if importlib.util.find_spec(NEEDS[ENGINE]) is None:
    pytest.skip(f"{ENGINE} needs {NEEDS[ENGINE]}, not installed", allow_module_level=True)


class TestKerasSubpixelConformance(BackendTests):
    """A formulation ``--profile best`` may pick passes the whole kit."""

    @pytest.fixture
    def backend(self):
        return registry.load(ENGINE)[0](device="cpu", options={"transpose": "subpixel"})


@pytest.mark.parametrize("name", ["conv", "conv-sym"])
def test_subpixel_computes_conv2d_transposes_function_and_gradients(name):
    def make(options):
        return registry.load(ENGINE)[0](device="cpu", options=options)

    assert_same_function(make, name, {"transpose": "keras"}, {"transpose": "subpixel"})
