"""``transpose=subpixel`` on the Keras engine of this process: the whole kit, and Conv2DTranspose's function.

The engine is ``VAEBENCH_KERAS_ENGINE`` (default TensorFlow); ``nox -s keras_engines`` runs this file on JAX
and PyTorch too.
"""

import importlib.util
import os

import numpy as np
import pytest

from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.plugin import registry
from vaebench.testing.kit import BackendTests, perturbed_params, sample_inputs

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
    spec = get_model(name).spec
    params = perturbed_params(name)
    x, eps = sample_inputs(spec.latent_dim, n=4)
    adam, out = AdamConfig(), {}
    for form in ("keras", "subpixel"):
        model = registry.load(ENGINE)[0](device="cpu", options={"transpose": form}).build(spec, adam)
        model.load_weights(params)
        probs = model.decode(eps)
        model.fetch([model.train_step(x, eps)])
        state = model.export_optimizer_state()
        out[form] = probs, {k: state[f"{k}/m"] / (1 - adam.beta1) for k in params}  # one Adam step from zero: m = (1-b1) g
    np.testing.assert_allclose(out["subpixel"][0], out["keras"][0], rtol=1e-5, atol=1e-6)
    for key, g in out["keras"][1].items():
        scale = float(np.abs(g).max()) or 1.0
        np.testing.assert_allclose(out["subpixel"][1][key], g, rtol=1e-4, atol=1e-4 * scale, err_msg=key)
