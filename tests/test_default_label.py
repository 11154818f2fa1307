"""Which tuning candidate is ``--profile default``'s row: a rule-valued default (Keras' ``xla=auto``) is resolved
on the device at hand, so on a GPU the default's row is XLA on, not the first candidate."""

from __future__ import annotations

import pytest

from vaebench.measure.worker import Cell, CellRequest
from vaebench.plugin import registry
from vaebench.plugin.profiles import variants


def _cell(backend: object, tunables: dict[str, tuple[str, ...]]) -> Cell:
    cell = Cell.__new__(Cell)  # only what _default_label reads: building models here would import TensorFlow twice
    cell.request = CellRequest(backend="keras", model="mlp", batch_size=8, threads=1, profile="best")
    cell.backends, cell.variants = [backend], variants(tunables, "best")
    return cell


@pytest.mark.parametrize(("device", "expected"), [("cpu", "0"), ("cuda", "1")])
def test_keras_auto_resolves_per_device(device: str, expected: str) -> None:
    pytest.importorskip("tensorflow")
    backend = registry.load("keras")[0](device="cpu")
    backend.device_kind = device  # what the backend resolved --device to; there is no GPU here to resolve it
    assert backend.resolved_options({"xla": "auto", "transpose": "keras"}) == {"xla": expected, "transpose": "keras"}
    assert backend.resolved_options({"xla": "0"})["xla"] == "0"  # a value, not a rule: kept
    cell = _cell(backend, {"transpose": ("keras", "subpixel"), "xla": ("0", "1")})
    assert cell._default_label() == f"transpose=keras, xla={expected}"
