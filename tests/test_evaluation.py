"""IWAE, active units and KL per dimension, on the NumPy reference model (no framework)."""

import numpy as np
import pytest

from vaebench.io.datasets import load_dataset
from vaebench.model.batches import binarize_fixed
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.plugin.numpy_backend import NumpyModel
from vaebench.run.evaluation import evaluate_split, full_evaluation, iwae_nll, latent_statistics
from vaebench.testing.kit import perturbed_params


@pytest.fixture(scope="module")
def model_and_images(tmp_path_factory):
    from vaebench.testing import make_tiny_dataset

    data = load_dataset("mnist", make_tiny_dataset(tmp_path_factory.mktemp("m"), n_train=8, n_test=24))
    spec = get_model("mlp").spec.with_latent(3)
    params = perturbed_params("mlp", latent_dim=3)
    model = NumpyModel(spec, AdamConfig())
    model.load_weights(params)
    return model, data.test_images


def test_iwae_tightens_with_k_and_stays_below_the_elbo(model_and_images):
    model, images = model_and_images
    neg_elbo = evaluate_split(model, images, 8, seed=0)["neg_elbo"]
    nll = {k: iwae_nll(model, images, k, seed=0, rows=256).mean() for k in (1, 10, 200)}
    assert nll[200] < nll[10] < nll[1]
    assert nll[200] <= neg_elbo
    assert nll[1] == pytest.approx(neg_elbo, rel=0.02)  # k = 1 is a one-sample ELBO


def test_iwae_chunking_does_not_change_the_estimate(model_and_images):
    model, images = model_and_images
    a = iwae_nll(model, images[:5], 30, seed=1, rows=7)  # calls smaller than k: padded, wrapped
    b = iwae_nll(model, images[:5], 30, seed=1, rows=4096)  # several images per call
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_active_units_and_kl_per_dimension(model_and_images):
    model, images = model_and_images
    model.params["encoder/mean/kernel"][:, 1] = 0.0  # unit 1's mean no longer depends on x
    stats = latent_statistics(model, images, batch_size=10)
    assert len(stats["au_variances"]) == 3 and stats["au_variances"][1] < 1e-12
    assert stats["active_units"] == sum(v > 0.01 for v in stats["au_variances"])
    assert all(k >= 0 for k in stats["kl_per_dim"])
    total_kl = evaluate_split(model, images, 8, seed=0)["kl"]
    assert sum(stats["kl_per_dim"]) == pytest.approx(total_kl, rel=1e-5)


def test_full_evaluation_keys(model_and_images):
    model, images = model_and_images
    result = full_evaluation(model, binarize_fixed(images, 0), k=5, seed=0, batch_size=8)
    assert {"test_neg_elbo", "test_nll", "test_nll_sem", "iwae_k", "active_units", "kl_per_dim", "seconds"} <= set(result)
    assert "test_nll" not in full_evaluation(model, images, k=0, seed=0, batch_size=8)


def test_fixed_binarisation_is_binary_and_seeded():
    images = np.random.default_rng(0).integers(0, 256, (30, 28, 28), dtype=np.uint8)
    a, b = binarize_fixed(images, 3, chunk=7), binarize_fixed(images, 3)
    assert np.array_equal(a, b) and set(np.unique(a)) <= {0, 255}
    assert abs(a.mean() / 255 - images.mean() / 255) < 0.01
