"""What the core enforces on plugins: hook signatures at load, final kit checks, layouts, the Environment."""

import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest

from vaebench.errors import BackendError
from vaebench.model.catalogue import get_model
from vaebench.model.layouts import adam_state, convert, kernel_permutations
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.plugin.contract import Backend
from vaebench.plugin.environment import PRECISION_SETTINGS, Environment
from vaebench.plugin.registry import signature_problem
from vaebench.testing.kit import BackendTests


def test_signature_problems_are_named():
    def build(self, spec, adam): ...

    def build_no_adam(self, spec): ...

    def build_extra(self, spec, adam, mode): ...

    def build_kwargs(self, *args, **kwargs): ...

    assert signature_problem(build, build) is None
    assert signature_problem(build, build_kwargs) is None
    assert signature_problem(build, build_no_adam) == "does not accept adam"
    assert signature_problem(build, build_extra) == "requires mode, which the core never passes"


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """Install a one-file plugin module under an entry point, as a distribution would."""

    def install(source: str) -> str:
        (tmp_path / "broken_plugin.py").write_text(textwrap.dedent(source))
        monkeypatch.syspath_prepend(str(tmp_path))
        sys.modules.pop("broken_plugin", None)
        ep = metadata.EntryPoint("broken", "broken_plugin:Plugin", registry.GROUP)
        monkeypatch.setattr(registry, "_entry_points", lambda: [ep])
        return "broken"

    return install


def test_a_plugin_whose_build_cannot_take_the_cores_arguments_fails_at_load(plugin):
    name = plugin(
        """
        from vaebench.plugin.contract import Backend
        class Plugin(Backend):
            name = "broken"
            def _environment(self): ...
            def build(self, spec): ...
        """
    )
    with pytest.raises(
        BackendError, match=r"backend 'broken' \(\?\): Plugin.build does not accept adam; the contract's is build"
    ):
        registry.load(name)


def test_a_plugin_missing_a_hook_names_it(plugin):
    name = plugin(
        """
        from vaebench.plugin.contract import Backend
        class Plugin(Backend):
            name = "broken"
            def build(self, spec, adam): ...
        """
    )
    with pytest.raises(BackendError, match="does not implement the contract: missing _environment"):
        registry.load(name)


def test_the_kits_checks_cannot_be_overridden():
    with pytest.raises(TypeError, match="overrides a conformance check, which is final"):

        class Lenient(BackendTests):
            def test_forward_matches_reference(self, backend, name):
                pass

    class Tighter(BackendTests):  # tolerances and extra tests are the plugin's to add
        rtol = 1e-5

        def test_something_of_my_own(self):
            pass


@pytest.mark.parametrize("model", ["mlp", "conv", "blog"])
def test_layouts_move_kernels_and_their_adam_moments_and_come_back(model):
    spec = get_model(model).spec
    layout = {"dense": (1, 0), "conv": (3, 2, 0, 1), "conv_transpose": (2, 3, 0, 1)}  # torch's
    perms = kernel_permutations(layout, spec)
    params = init_params(spec, 0)
    state = adam_state(3, ((k, v + 1, v + 2) for k, v in params.items()))
    for arrays in (params, state):
        there = convert(perms, arrays, to_canonical=False)
        back = convert(perms, there, to_canonical=True)
        assert all(np.array_equal(back[k], arrays[k]) for k in arrays)
    there = convert(perms, state, to_canonical=False)
    for key, value in params.items():
        expected = np.transpose(value, perms[key]) if key in perms else value
        np.testing.assert_array_equal(convert(perms, params, False)[key], expected)
        np.testing.assert_array_equal(there[f"{key}/m"], expected + 1)  # Adam's moments move with their kernel
        np.testing.assert_array_equal(there[f"{key}/v"], expected + 2)


def test_a_layout_with_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown layer kinds"):
        kernel_permutations({"lstm": (1, 0)}, get_model("mlp").spec)


def test_environment_is_flat_with_the_required_keys_first():
    env = Environment("torch", {"torch": "2.13"}, "cpu", "Xeon", 2, "fp32", "highest", "eager", {"layout": "nhwc"})
    assert env.to_dict() == {
        "framework": "torch",
        "device": "cpu",
        "device_name": "Xeon",
        "threads": 2,
        "precision": "fp32",
        "float32_matmul_precision": "highest",
        "execution": "eager",
        "precision_settings": dict.fromkeys(PRECISION_SETTINGS),
        "torch": "2.13",
        "layout": "nhwc",
    }


def test_a_plugin_that_returns_a_dict_environment_is_told_what_to_return():
    class Old(Backend):
        name = "old"

        def _environment(self):
            return {"framework": "old"}

        def build(self, spec, adam): ...

    with pytest.raises(BackendError, match="must return vaebench.plugin.environment.Environment"):
        Old().environment()


def test_engines_resolve_the_device_with_one_error_text():
    pytest.importorskip("torch")
    import torch

    from vaebench.plugin.engines import resolve_device

    assert resolve_device("cpu", "torch", "torch") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match=r"^--device cuda asked for, but torch x sees no GPU; use --device cpu$"):
            resolve_device("cuda", "torch", "torch x")
        assert resolve_device("auto", "torch", "torch") == "cpu"
