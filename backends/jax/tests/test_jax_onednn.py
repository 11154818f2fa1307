"""The jax option xla_cpu_onednn: XLA_FLAGS set before jax starts, offered only where jaxlib knows the flag (#24)."""

import json
import os
import subprocess
import sys

import pytest

from vaebench.errors import BackendError
from vaebench.plugin import engines
from vaebench_jax import JaxBackend

FLAG = "--xla_cpu_use_onednn=true"
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the flags this test sets only


def test_unknown_xla_flags_are_told_apart_from_known_ones():
    assert engines.xla_flag_known("--xla_vaebench_no_such_flag=true") is False  # XLA aborts on it
    assert engines.xla_flag_known("--xla_cpu_multi_thread_eigen=true") is True  # one every jaxlib has


def test_the_flag_reaches_xla_flags_in_a_fresh_process():
    if not engines.xla_flag_known(FLAG):
        pytest.skip("this jaxlib does not know --xla_cpu_use_onednn")
    code = (
        "import json; from vaebench_jax import JaxBackend; from vaebench.model.catalogue import get_model\n"
        "from vaebench.model.config import AdamConfig; from vaebench.model.weights import init_params; import numpy as np\n"
        "b = JaxBackend(device='cpu', options={'xla_cpu_onednn': '1'}); env = b.environment()\n"
        "m = b.build(get_model('mlp').spec, AdamConfig()); m.load_weights(init_params(get_model('mlp').spec, 0))\n"
        "x = np.zeros((4, 28, 28, 1), np.float32); eps = np.zeros((4, 20), np.float32)\n"
        "print(json.dumps({'flags': env['xla_flags'], 'option': env['xla_cpu_onednn'], "
        "'loss': float(m.fetch([m.train_step(x, eps)])[0])}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert FLAG in out["flags"].split() and out["option"] == "1" and out["loss"] > 0


def test_a_jaxlib_without_the_flag_refuses_the_option_in_one_line(monkeypatch):
    monkeypatch.setattr(engines, "xla_flag_known", lambda flag: False)
    with pytest.raises(BackendError, match="does not know --xla_cpu_use_onednn") as refused:
        JaxBackend(device="cpu", options={"xla_cpu_onednn": "1"})
    assert "\n" not in str(refused.value) and refused.value.exit_code == 2
    JaxBackend(device="cpu")  # the default sets no flag, so it needs no probe


def test_xla_flags_cannot_change_once_jax_has_started(monkeypatch):
    import jax  # noqa: F401  (started: XLA has read XLA_FLAGS)

    monkeypatch.setenv("XLA_FLAGS", "")
    with pytest.raises(BackendError, match="process of its own"):
        engines.prepare("jax", None, [FLAG])
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_use_onednn=false")
    with pytest.raises(BackendError, match="contradict"):
        engines.prepare("jax", None, [FLAG])
    monkeypatch.setenv("XLA_FLAGS", FLAG)
    engines.prepare("jax", None, [FLAG])  # what the process started with: nothing to change


def test_the_flag_is_an_option_but_not_a_tunable():
    # --profile best builds its variants in one process, where XLA_FLAGS cannot differ between them
    assert JaxBackend.option_values["xla_cpu_onednn"] == ("default", "0", "1")
    assert "xla_cpu_onednn" not in JaxBackend.tunables


def test_a_flag_goes_before_the_first_token_xla_stops_reading_at_and_the_probe_asks_about_the_flag_alone(monkeypatch):
    """XLA stops reading XLA_FLAGS at its first token without ``--`` (``intra_op_parallelism_threads=N``, which
    the thread setting writes): a flag after it is ignored, and an unknown name after it seems known."""
    monkeypatch.delitem(sys.modules, "jax", raising=False)  # prepare refuses once jax has started; this only edits env
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=2")
    engines.prepare("jax", 2, [FLAG])
    tokens = os.environ["XLA_FLAGS"].split()
    assert tokens == ["--xla_cpu_multi_thread_eigen=true", FLAG, "intra_op_parallelism_threads=2"]
    assert engines.xla_flag_known("--xla_vaebench_no_such_flag=true") is False  # the ambient token does not hide it
