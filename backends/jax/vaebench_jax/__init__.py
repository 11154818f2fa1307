"""JAX backend for vaebench: Flax Linen layers, Optax Adam, one jitted train step.

This module imports no JAX: XLA reads its thread settings from ``XLA_FLAGS``
when JAX is first imported, so :class:`JaxBackend` sets them from ``--threads``
and only then imports :mod:`vaebench_jax.model`.
"""

from __future__ import annotations

from typing import Any

from vaebench.model.config import AdamConfig
from vaebench.model.layers import ModelSpec
from vaebench.plugin import engines
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.environment import Environment


class JaxBackend(Backend):
    """JAX on CPU, or CUDA when jax finds a GPU. Precision is the core's ``--precision``:
    ``fp32`` sets matmul precision ``highest`` (full float32, as the kit's tolerances
    assume), ``tf32`` sets ``high`` (TF32 passes on GPUs)."""

    name = "jax"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        engines.prepare("jax", self.threads)  # before the first import of jax
        from vaebench_jax import model

        self._impl = model
        hint = "install vaebench-jax[cuda] on a CUDA machine, or use --device cpu"
        self.device_kind = engines.resolve_device(self.device, "jax", f"jax {model.jax.__version__}", hint)
        engines.configure("jax", self.threads, self.precision)

    def _environment(self) -> Environment:
        return self._impl.environment(self)

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return self._impl.JaxModel(spec, adam, self)
