"""Every installed backend, from the same weights on the same batches, follows the same trajectory."""

import itertools

import numpy as np
import pytest

from vaebench.measure.paritycheck import ELBO_RTOL, PARAM_ATOL, PARAM_OUTLIERS
from vaebench.model.batches import train_batches
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.testing import make_tiny_dataset

BACKENDS = [name for name in ("torch", "jax", "keras") if name in registry.installed()]


@pytest.mark.skipif(len(BACKENDS) < 2, reason="needs two installed backends")
@pytest.mark.parametrize("model_name", ["mlp", "conv"])
def test_backends_agree_after_training_steps(tmp_path, model_name):
    from vaebench.io.datasets import load_dataset

    data = load_dataset("mnist", make_tiny_dataset(tmp_path / "d", n_train=160, n_test=8))
    spec = get_model(model_name).spec
    runs = {}
    for name in BACKENDS:
        model = registry.load(name)[0](device="cpu").build(spec, AdamConfig())
        model.load_weights(init_params(spec, 0))
        batches = train_batches(data.train_images, 32, spec.latent_dim, seed=0, epoch=1)
        losses = model.fetch([model.train_step(b.x, b.eps) for b in batches])
        runs[name] = (losses, model.export_weights())
    # The tolerances are vaebench.measure.parity's, stated once there (with why Adam needs steps * lr).
    steps = len(runs[BACKENDS[0]][0])
    for a, b in itertools.combinations(BACKENDS, 2):
        np.testing.assert_allclose(runs[a][0], runs[b][0], rtol=ELBO_RTOL, err_msg=f"{a} vs {b} losses")
        for key in runs[a][1]:
            diff = np.abs(runs[a][1][key] - runs[b][1][key])
            assert diff.max() <= steps * 1e-3, f"{a} vs {b} {key}: {diff.max()}"
            off = np.mean(diff > PARAM_ATOL)
            assert off <= PARAM_OUTLIERS, f"{a} vs {b} {key}: {off:.2%} entries off by > {PARAM_ATOL}"
