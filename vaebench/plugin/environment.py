"""The :class:`Environment` record a plugin returns: its framework, versions, device and execution, checked by the contract."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Environment:
    """What every plugin reports about its framework, with the same keys in every ``metrics.json``.

    The required fields are what a reader compares across backends; ``extra``
    holds settings only one framework has (torch's ``layout``, TensorFlow's XLA
    switch), flattened into the same dict.
    """

    framework: str  # the plugin's framework family: torch, jax, keras
    versions: dict[str, str]  # every library whose version changes numbers or speed
    device: str  # cpu or cuda
    device_name: str  # the CPU or GPU model
    threads: int | str  # intra-op threads, or the framework's default said in words
    precision: str  # the core's --precision, as applied
    float32_matmul_precision: str  # what the framework was told, in its own words
    execution: str  # how a train step runs: eager, jit, tf.function with or without XLA
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat form stored in ``metrics.json`` and ``bench.json``."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("versions", "extra")}
        return {**out, **self.versions, **self.extra}
