"""pytest-benchmark: train step, evaluation chunk and grid decoding per backend.

Not part of the default test run (marker ``bench``)::

    pytest tests/benchmarks -m bench --benchmark-autosave
    pytest tests/benchmarks -m bench --benchmark-compare --benchmark-compare-fail=median:10%

Each train-step round runs one step on a batch staged ahead, as ``vaebench
bench`` and the runner feed it (:func:`vaebench.measure.worker.staged_feed`), and
synchronises (the backend's ``fetch``), so a round is a step's full latency; ``warmup_rounds`` absorb tracing and
compilation. ``extra_info`` records images/s and the fairness settings.
"""

import numpy as np
import pytest

from vaebench.measure.worker import staged_feed, synthetic_batches
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.run.evaluation import grid_points

pytestmark = pytest.mark.bench
IN_PROCESS = [b for b in ("torch", "jax", "keras") if b in registry.installed()]
ROUNDS = {"mlp": 50, "conv": 10, "blog": 3}


def _model(backend: str, model_name: str):
    be = registry.load(backend)[0](device="cpu")
    spec = get_model(model_name).spec
    model = be.build(spec, AdamConfig())
    model.load_weights(init_params(spec, 0))
    return be, spec, model


@pytest.mark.parametrize("batch_size", [128, 512])
@pytest.mark.parametrize("model_name", ["mlp", "conv", "blog"])
@pytest.mark.parametrize("backend", IN_PROCESS)
def test_train_step(benchmark, backend, model_name, batch_size):
    be, spec, model = _model(backend, model_name)
    benchmark.group = f"train {model_name} batch {batch_size}"
    with staged_feed(model, synthetic_batches(np.random.default_rng(0), batch_size, spec.latent_dim)) as (step, _):
        loss = benchmark.pedantic(lambda: model.fetch([step()])[0], rounds=ROUNDS[model_name], warmup_rounds=2)
    benchmark.extra_info.update(backend=backend, batch_size=batch_size, environment=be.environment())
    if benchmark.stats:  # absent under --benchmark-disable
        benchmark.extra_info["images_per_second"] = batch_size / benchmark.stats.stats.median
    assert np.isfinite(loss)


@pytest.mark.parametrize("model_name", ["mlp", "conv"])
@pytest.mark.parametrize("backend", IN_PROCESS)
def test_eval_chunk_and_grid(benchmark, backend, model_name):
    be, spec, model = _model(backend, model_name)
    gen = np.random.default_rng(0)
    x = gen.random((1000, 28, 28, 1), dtype=np.float32)
    eps = gen.standard_normal((1000, spec.latent_dim), dtype=np.float32)
    z = grid_points(spec.latent_dim, 0)
    benchmark.group = f"eval+grid {model_name}"

    def work():
        return model.evaluate(x, eps).neg_elbo.mean(), model.decode(z)

    elbo, grid = benchmark.pedantic(work, rounds=10, warmup_rounds=1)
    benchmark.extra_info.update(backend=backend, environment=be.environment())
    assert np.isfinite(elbo) and grid.shape == (400, 28, 28, 1)
