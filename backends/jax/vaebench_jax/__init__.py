"""JAX backend for vaebench: Flax Linen layers, Optax Adam, one jitted train step.

This module imports no JAX: XLA reads its thread settings from ``XLA_FLAGS``
when JAX is first imported, so :class:`JaxBackend` sets them from ``--threads``
and only then imports :mod:`vaebench_jax.model`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from vaebench.contract import Backend, Model
from vaebench.environment import set_xla_threads
from vaebench.errors import BackendError
from vaebench.spec import AdamConfig, ModelSpec


class JaxBackend(Backend):
    """JAX on CPU, or CUDA when jax finds a GPU. Options: ``precision`` (``highest``:
    full float32 matmuls and convolutions, as the contract's tolerances assume;
    ``default`` lets XLA use TF32/bf16 passes on GPUs)."""

    name = "jax"
    framework = "jax"
    option_defaults: ClassVar[dict[str, str]] = {"precision": "highest"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        set_xla_threads(self.threads)
        if self.options["precision"] not in ("highest", "high", "default"):
            raise BackendError(f"jax option precision must be highest, high or default, got {self.options['precision']!r}")
        from vaebench_jax import model

        self._impl = model
        self.jax_device = model.pick_device(self.device)
        model.jax.config.update("jax_default_matmul_precision", self.options["precision"])

    @property
    def ops(self) -> Any:  # the contract's Ops, available once JAX is imported
        return self._impl.JaxOps

    def environment(self) -> dict[str, Any]:
        return self._impl.environment(self)

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return self._impl.JaxModel(spec, adam, self)
