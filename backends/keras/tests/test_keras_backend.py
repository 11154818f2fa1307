"""The conformance kit on one Keras engine per process.

Keras fixes its engine at import, so this module tests the engine named by
``VAEBENCH_KERAS_ENGINE`` (``keras``, ``keras-jax`` or ``keras-torch``; default
``keras``, TensorFlow). ``test_other_engines_in_their_own_process`` runs this
same file again for every other engine whose framework is installed.
"""

import importlib.util
import os
import subprocess
import sys

import pytest

from vaebench.errors import BackendError
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.plugin import registry
from vaebench.testing.kit import BackendTests

ENGINE = os.environ.get("VAEBENCH_KERAS_ENGINE", "keras")
NEEDS = {"keras": "tensorflow", "keras-jax": "jax", "keras-torch": "torch"}
if importlib.util.find_spec(NEEDS[ENGINE]) is None:
    pytest.skip(f"{ENGINE} needs {NEEDS[ENGINE]}, not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def engine_backend():
    return registry.load(ENGINE)[0](device="cpu")


class TestKerasConformance(BackendTests):
    @pytest.fixture
    def backend(self, engine_backend):
        return engine_backend


@pytest.mark.parametrize("model_name, xla", [("blog", False), ("conv", False), ("mlp", False)])
def test_environment_says_which_engine_and_xla_ran(engine_backend, model_name, xla):
    engine_backend.build(get_model(model_name).spec, AdamConfig())
    env = engine_backend.environment()
    assert env["engine"] == NEEDS[ENGINE] and env["keras"]
    switch = {"tensorflow": "tensorflow_tf32_execution", "jax": "jax_default_matmul_precision", "torch": "torch_tf32_conv"}
    assert env["precision_settings"][switch[NEEDS[ENGINE]]] in (False, "highest")  # the engine's own switch: fp32, TF32 off
    if ENGINE == "keras":  # auto is Keras' own jit_compile="auto" rule: no XLA on a CPU-only machine
        assert env["xla"] is xla and f"XLA {'on' if xla else 'off'}" in env["execution"]


def test_a_second_engine_in_the_same_process_is_a_clear_error(engine_backend):
    other = "keras-torch" if ENGINE != "keras-torch" else "keras-jax"
    with pytest.raises(BackendError, match="in a process of its own"):
        registry.load(other)[0](device="cpu")


@pytest.mark.skipif(ENGINE != "keras", reason="the parent process spawns the others")
@pytest.mark.parametrize("engine", ["keras-jax", "keras-torch"])
def test_other_engines_in_their_own_process(engine):
    if importlib.util.find_spec(NEEDS[engine]) is None:
        pytest.skip(f"{NEEDS[engine]} not installed")
    env = {**os.environ, "VAEBENCH_KERAS_ENGINE": engine, "KERAS_BACKEND": NEEDS[engine]}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


@pytest.mark.skipif(ENGINE != "keras", reason="only Keras on TensorFlow has a tunable (XLA on or off)")
def test_profile_best_measures_xla_on_and_off_and_keeps_what_it_can_show():
    from vaebench.measure.worker import Cell, CellRequest
    from vaebench.plugin.profiles import choose

    cell = Cell(CellRequest("keras", "mlp", 16, 1, "cpu", "fp32", "best"))
    # XLA off and on; no transpose lever, since mlp has no transposed convolution (profiles.levers_for)
    assert [dict(v.options) for v in cell.variants] == [{"xla": "0"}, {"xla": "1"}]
    tuned = cell.tune(windows=2)
    cell.finish()
    ratios = {c["label"]: c["vs_default"]["value"] for c in tuned["candidates"]}
    assert len(ratios) == 2 and all(c["median"] > 0 for c in tuned["candidates"])
    assert tuned["default"] == "xla=0"  # Keras' own rule on a CPU: no XLA
    kept = choose(tuned["candidates"], tuned["default"])  # the default unless XLA's interval lies above 1
    assert tuned["choice"] == {"compile": kept["compile"], "options": kept["options"]}
