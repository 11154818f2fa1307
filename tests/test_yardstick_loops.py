"""The hand-written yardstick loops of tests/benchmarks build and train every model in every framework.

``harness_ratio.py`` holds each plugin to them; a loop that silently trained
another network (or crashed on one) would make that ratio meaningless.
"""

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from vaebench.measure.worker import synthetic_batches
from vaebench.model.catalogue import get_model

sys.path.insert(0, str(Path(__file__).parent / "benchmarks"))

LOOPS = [("torch", "torch_yardstick", {}), ("jax", "jax_yardstick", {}), ("tensorflow", "keras_yardstick", {"xla": False})]


@pytest.mark.parametrize("model_name", ["mlp", "conv", "blog"])
@pytest.mark.parametrize(("framework", "module", "kwargs"), LOOPS, ids=[m for _, m, _ in LOOPS])
def test_yardstick_loop_trains_the_named_model(framework, module, kwargs, model_name):
    pytest.importorskip(framework)
    if module == "keras_yardstick" and "keras" in sys.modules and sys.modules["keras"].backend.backend() != "tensorflow":
        pytest.skip("Keras already runs on another engine in this process")
    spec = get_model(model_name).spec
    batches = synthetic_batches(np.random.default_rng(0), 4, spec.latent_dim, n=2)
    step, sync = importlib.import_module(module).make_step(model_name, batches, **kwargs)
    assert step.num_params == spec.num_params(), "the loop builds another network than the one it is named after"
    losses = [float(np.asarray(sync(step()))) for _ in range(2)]
    assert np.all(np.isfinite(losses)) and losses[0] > 0
