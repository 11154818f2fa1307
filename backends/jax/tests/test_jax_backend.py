import numpy as np
import pytest

from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.testing.kit import BackendTests, perturbed_params, sample_inputs
from vaebench_jax import JaxBackend


class TestJaxConformance(BackendTests):
    @pytest.fixture
    def backend(self):
        return JaxBackend(device="cpu")


class TestJaxSubpixelConformance(BackendTests):
    """``transpose=subpixel`` is a formulation ``--profile best`` may pick: it must pass the whole kit too."""

    @pytest.fixture
    def backend(self):
        return JaxBackend(device="cpu", options={"transpose": "subpixel"})


@pytest.mark.parametrize("name", ["conv", "conv-sym"])
def test_subpixel_computes_the_lax_networks_function_and_gradients(name):
    import jax

    spec = get_model(name).spec
    params = perturbed_params(name)
    x, eps = sample_inputs(spec.latent_dim, n=4)
    models = {}
    for form in ("lax", "subpixel"):
        models[form] = JaxBackend(device="cpu", options={"transpose": form}).build(spec, AdamConfig())
        models[form].load_weights(params)
    np.testing.assert_allclose(models["lax"].decode(eps), models["subpixel"].decode(eps), rtol=1e-5, atol=1e-6)
    grads = {f: jax.grad(m.loss)(m.params, m._put(x), m._put(eps)) for f, m in models.items()}
    for key in grads["lax"]:
        np.testing.assert_allclose(
            np.asarray(grads["subpixel"][key]), np.asarray(grads["lax"][key]), rtol=2e-4, atol=2e-5, err_msg=key
        )


def test_one_compile_per_shape_and_no_recompiles_in_the_loop():
    import jax

    spec = get_model("mlp").spec
    model = JaxBackend(device="cpu").build(spec, AdamConfig())
    model.load_weights(perturbed_params("mlp"))
    x, eps = sample_inputs(spec.latent_dim, n=8)
    with jax.log_compiles():
        losses = model.fetch([model.train_step(x, eps) for _ in range(5)])
    assert np.all(np.isfinite(losses))
    assert model.step._cache_size() == 1
    model.load_weights(perturbed_params("mlp", seed=1))  # a reload must not change the compiled signature
    model.fetch([model.train_step(x, eps)])
    assert model.step._cache_size() == 1


def test_donated_state_is_consumed():
    """The step donates params and Adam state: the old buffers are deleted, not copied."""
    spec = get_model("mlp").spec
    model = JaxBackend(device="cpu").build(spec, AdamConfig())
    model.load_weights(perturbed_params("mlp"))
    old = model.params["encoder/1/kernel"]
    x, eps = sample_inputs(spec.latent_dim, n=8)
    model.fetch([model.train_step(x, eps)])
    assert old.is_deleted()
