"""JAX backend for vaebench: Flax Linen layers, Optax Adam, one jitted train step.

This module imports no JAX: XLA reads its thread settings from ``XLA_FLAGS``
when JAX is first imported, so :class:`JaxBackend` sets them from ``--threads``
and only then imports :mod:`vaebench_jax.model`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vaebench.contract import Backend, Model
from vaebench.environment import set_xla_threads
from vaebench.spec import AdamConfig, ModelSpec


class JaxBackend(Backend):
    """JAX on CPU, or CUDA when jax finds a GPU. Precision is the core's ``--precision``:
    ``fp32`` sets matmul precision ``highest`` (full float32, as the kit's tolerances
    assume), ``tf32`` sets ``high`` (TF32 passes on GPUs)."""

    name = "jax"
    framework = "jax"
    matmul_precision: ClassVar[dict[str, str]] = {"fp32": "highest", "tf32": "high"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        set_xla_threads(self.threads)
        from vaebench_jax import model

        self._impl = model
        self.jax_device = model.pick_device(self.device)
        model.jax.config.update("jax_default_matmul_precision", self.matmul_precision[self.precision])

    @property
    def ops(self) -> Any:  # the contract's Ops, available once JAX is imported
        return self._impl.JaxOps

    def environment(self) -> dict[str, Any]:
        return self._impl.environment(self)

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return self._impl.JaxModel(spec, adam, self)
