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


# -- what the evaluation asks of the backend, and what it tells the user on the way --------------------------------
class Recording:
    """A model that passes every call to ``model`` and keeps how many rows each call had, by method."""

    def __init__(self, model):
        self.model, self.spec, self.rows = model, model.spec, {}

    def _kept(self, name, n):
        self.rows.setdefault(name, []).append(n)

    def encode(self, x):
        self._kept("encode", len(x))
        return self.model.encode(x)

    def recon_nll(self, x, z):
        assert len(x) == len(z)
        self._kept("recon_nll", len(z))
        return self.model.recon_nll(x, z)

    def evaluate(self, x, eps):
        self._kept("evaluate", len(x))
        return self.model.evaluate(x, eps)

    def codes(self, x):
        self._kept("codes", len(x))
        return self.model.codes(x)


def test_iwae_calls_the_backend_with_full_calls_of_one_shape_within_rows(model_and_images):
    model, images = model_and_images
    packed = Recording(model)
    iwae_nll(packed, images[:5], 64, seed=0, rows=4096)  # 64 images' samples fit one call: 5 of them, padded
    assert packed.rows["recon_nll"] == [4096] and packed.rows["encode"] == [5]
    ticks = []
    split = Recording(model)
    got = iwae_nll(split, images[:2], 30, seed=0, rows=8, tick=lambda: ticks.append(1))  # 30 = 8 + 8 + 8 + 6
    assert split.rows["recon_nll"] == [8] * 8 and split.rows["encode"] == [1, 1]  # an image at a time, wrapped
    assert len(ticks) == 2  # once before each chunk of images
    np.testing.assert_allclose(got, iwae_nll(model, images[:2], 30, seed=0, rows=4096), rtol=1e-6)


def test_the_evaluation_chunks_every_backend_call_by_its_batch_size(model_and_images):
    model, images = model_and_images
    chunked = Recording(model)
    full_evaluation(chunked, images[:5], k=0, seed=0, batch_size=2)
    assert chunked.rows == {"evaluate": [2, 2, 1], "encode": [2, 2, 1]}


def test_iwae_shows_its_progress_only_when_asked(model_and_images, monkeypatch, capsys):
    model, images = model_and_images
    monkeypatch.setenv("VAEBENCH_LOG_INTERVAL", "0")  # stderr is no terminal here: a line at every update
    iwae_nll(model, images[:5], 8, seed=0)
    full_evaluation(model, images[:5], k=8, seed=0, batch_size=8)
    assert capsys.readouterr().err == ""
    iwae_nll(model, images[:5], 8, seed=0, progress=True)
    assert capsys.readouterr().err.splitlines()[-1].startswith("IWAE k=8: 5/5 images, ")
    full_evaluation(model, images[:3], k=4, seed=0, batch_size=8, progress=True)
    assert capsys.readouterr().err.splitlines()[-1].startswith("IWAE k=4: 3/3 images, ")


def test_the_evaluation_says_what_it_does_and_stops_when_its_tick_raises(model_and_images):
    model, images = model_and_images
    said = []
    full_evaluation(model, images[:5], k=8, seed=0, batch_size=8, log=said.append)
    assert said == ["importance-weighted NLL with k=8 on 5 test images"]

    class StopError(Exception):
        pass

    def tick():
        raise StopError

    with pytest.raises(StopError):
        full_evaluation(model, images[:5], k=8, seed=0, batch_size=8, tick=tick)


def test_one_sample_is_an_importance_weighted_estimate_and_two_images_have_a_spread(model_and_images):
    model, images = model_and_images
    one = full_evaluation(model, images[:2], k=1, seed=0, batch_size=8)
    nll = iwae_nll(model, images[:2], 1, seed=0)
    assert one["iwae_k"] == 1 and one["test_nll"] == pytest.approx(nll.mean(), rel=1e-12)
    assert one["test_nll_sem"] == pytest.approx(abs(nll[0] - nll[1]) / 2, rel=1e-9)  # sd / sqrt 2 of two values
    assert 0 <= one["seconds"] < 3600


def test_a_unit_is_active_only_above_the_threshold():
    """Burda et al.'s ``A_u > 0.01``, strictly: a unit whose posterior means vary by exactly 0.01 is not active."""
    u = 0.1414213562373095  # [u, -u, 0, 0] has variance 0.01 exactly in float64

    class Fixed:
        def encode(self, x):
            mean = np.zeros((len(x), 2))
            mean[:, 0] = [u, -u, 0.0, 0.0]
            mean[:, 1] = [u, -u, 0.0, 0.01]
            return mean, np.zeros((len(x), 2))

    stats = latent_statistics(Fixed(), np.zeros((4, 28, 28), np.uint8), 4)
    assert stats["au_variances"][0] == 0.01 and stats["au_variances"][1] > 0.01
    assert stats["active_units"] == 1


def test_a_larger_latents_decoded_points_are_the_runs_draws_from_the_prior():
    from vaebench.run.evaluation import decode_points
    from vaebench.seeding import rng

    spec = get_model("mlp").spec.with_latent(5)
    points = decode_points(spec, 3)
    assert points.dtype == np.float32 and points.shape == (400, 5)
    np.testing.assert_array_equal(points, rng(3, "grid").standard_normal((400, 5), dtype=np.float32))  # the prior
    assert not np.array_equal(decode_points(spec, 3), decode_points(spec, 4))
