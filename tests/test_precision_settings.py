"""Every row records its precision and autotuning switches, under the same names for every plugin (#24)."""

import pytest

from vaebench.plugin import engines, registry
from vaebench.plugin.environment import PRECISION_SETTINGS, Environment


def _env(**settings):
    return Environment("jax", {}, "cpu", "Xeon", 2, "fp32", "highest", "jit", precision_settings=settings)


def test_every_record_has_every_switch_and_no_plugin_invents_one():
    recorded = _env(jax_default_matmul_precision="highest").to_dict()["precision_settings"]
    assert list(recorded) == list(PRECISION_SETTINGS)
    assert recorded["jax_default_matmul_precision"] == "highest" and recorded["torch_tf32_conv"] is None
    with pytest.raises(ValueError, match="cudnn_benchmark"):
        _env(cudnn_benchmark=True)


@pytest.mark.parametrize(
    ("flags", "level"),
    [
        ("", "default"),
        ("--xla_force_host_platform_device_count=2", "default"),
        ("--xla_gpu_autotune_level=0", "0"),
        ("--xla_gpu_autotune_level=2 --xla_cpu_multi_thread_eigen=false --xla_gpu_autotune_level=4", "4"),
    ],
)
def test_the_xla_gpu_autotune_level_is_read_from_xla_flags(flags, level):
    assert engines.xla_gpu_autotune_level(flags) == level


def test_the_autotune_level_comes_from_the_environment_by_default(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=1")
    assert engines.xla_gpu_autotune_level() == "1"
    monkeypatch.delenv("XLA_FLAGS")
    assert engines.xla_gpu_autotune_level() == "default"


def test_torch_switches_are_read_back_from_torch_each_apart():
    torch = pytest.importorskip("torch")
    before = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        engines.configure("torch", None, "fp32")
        assert engines.precision_settings("torch") == {
            "torch_cudnn_benchmark": False,
            "torch_tf32_matmul": False,
            "torch_tf32_conv": False,
        }
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = True  # conv alone: the two TF32 switches are recorded apart
        assert engines.precision_settings("torch") == {
            "torch_cudnn_benchmark": True,
            "torch_tf32_matmul": False,
            "torch_tf32_conv": True,
        }
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_jax_records_its_matmul_precision_and_the_xla_autotune_level(monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.setenv("XLA_FLAGS", "--xla_gpu_autotune_level=3")
    engines.configure("jax", None, "fp32")
    assert engines.precision_settings("jax") == {"jax_default_matmul_precision": "highest", "xla_gpu_autotune_level": "3"}
    engines.configure("jax", None, "tf32")
    try:
        assert engines.precision_settings("jax")["jax_default_matmul_precision"] == "high"
    finally:
        engines.configure("jax", None, "fp32")


def test_tensorflow_records_tf32_execution():
    tf = pytest.importorskip("tensorflow")
    before = tf.config.experimental.tensor_float_32_execution_enabled()
    try:
        engines.configure("tensorflow", None, "fp32")
        assert engines.precision_settings("tensorflow") == {
            "tensorflow_tf32_execution": False,
            "xla_gpu_autotune_level": engines.xla_gpu_autotune_level(),
        }
        tf.config.experimental.enable_tensor_float_32_execution(True)
        assert engines.precision_settings("tensorflow")["tensorflow_tf32_execution"] is True
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(before)


@pytest.mark.parametrize("name", ["numpy", "torch", "jax"])
def test_a_plugins_environment_carries_the_switches_of_its_engine(name):
    if name not in registry.installed():
        pytest.skip(f"{name} plugin not installed")
    env = registry.load(name)[0](device="cpu").environment()
    settings = env["precision_settings"]
    assert list(settings) == list(PRECISION_SETTINGS)
    given = {k for k, v in settings.items() if v is not None}
    assert (
        given
        == {
            "numpy": set(),
            "torch": {"torch_cudnn_benchmark", "torch_tf32_matmul", "torch_tf32_conv"},
            "jax": {"jax_default_matmul_precision", "xla_gpu_autotune_level"},
        }[name]
    )
