"""What the core declares for every plugin: the option table, and the options recorded in the environment (#22)."""

from __future__ import annotations

from typing import ClassVar

import pytest

from vaebench.errors import BackendError
from vaebench.plugin import registry
from vaebench.plugin.contract import Backend


class _Plugin(Backend):
    name = "fake"
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"layout": ("nhwc", "nchw"), "fused": ("1", "0")}

    def _environment(self):  # pragma: no cover - not asked here
        raise NotImplementedError

    def build(self, spec, adam):  # pragma: no cover - not asked here
        raise NotImplementedError


def test_one_choices_table_gives_the_defaults_and_the_allowed_values():
    assert _Plugin.option_defaults == {"layout": "nhwc", "fused": "1"}
    assert _Plugin.option_values == {"layout": ("nhwc", "nchw"), "fused": ("1", "0")}
    assert _Plugin(options={"layout": "nchw"}).options == {"layout": "nchw", "fused": "1"}
    with pytest.raises(BackendError, match="fake option fused must be one of 1, 0, got '2'"):
        _Plugin(options={"fused": "2"})


@pytest.mark.parametrize("backend_name", ["torch", "jax"])
def test_every_option_is_recorded_in_the_environment_in_the_plugins_words(backend_name):
    if backend_name not in registry.installed():
        pytest.skip(f"needs the {backend_name} plugin")
    cls = registry.load(backend_name)[0]
    env = cls(device="cpu", options={"transpose": "subpixel"}).environment()
    assert env["transpose"] == "subpixel"
    assert set(cls.option_defaults) <= set(env)
    if backend_name == "torch":
        assert env["fused_adam"] is True and env["layout"] == "nhwc"  # the plugin's own word for fused_adam wins
    else:
        assert env["xla_cpu_onednn"] == "default"
