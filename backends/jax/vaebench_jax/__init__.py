"""JAX backend for vaebench: the spec as ``jax.lax`` layers, Optax Adam, one jitted train step.

This module imports no JAX: XLA reads its thread settings from ``XLA_FLAGS``
when JAX is first imported, so :class:`JaxBackend` sets them from ``--threads``
and only then imports :mod:`vaebench_jax.model`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from vaebench.model.config import AdamConfig
from vaebench.model.layers import ModelSpec
from vaebench.plugin import engines
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.environment import Environment


class JaxBackend(Backend):
    """JAX on CPU, or CUDA when jax finds a GPU; always one ``jax.jit`` step. Precision is the core's
    ``--precision``: ``fp32`` sets matmul precision ``highest`` (full float32, as the kit's tolerances
    assume), ``tf32`` sets ``high`` (TF32 passes on GPUs)."""

    name = "jax"
    #: ``transpose``: how a transposed convolution is computed, the same function either way: ``lax``
    #: (``lax.conv_transpose``, what Flax's ConvTranspose calls) or ``subpixel`` (one stride-1 convolution to
    #: ``s*s*C`` channels and a depth-to-space, :mod:`vaebench.model.subpixel`), whose weight gradient XLA CPU
    #: computes several times faster
    option_defaults: ClassVar[dict[str, str]] = {"transpose": "lax"}
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {"transpose": ("lax", "subpixel")}
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {"transpose": ("lax", "subpixel")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        engines.prepare("jax", self.threads)  # before the first import of jax
        from vaebench_jax import model

        self._impl = model
        hint = "install vaebench-jax[cuda] on a CUDA machine, or use --device cpu"
        self.device_kind = engines.setup("jax", self, f"jax {model.jax.__version__}", hint)

    def _environment(self) -> Environment:
        jax, optax = self._impl.jax, self._impl.optax
        return engines.environment(
            "jax",
            self,
            framework="jax",
            execution="jax.jit (whole step, params and Adam state donated)",
            versions={"jaxlib": getattr(jax.lib, "__version__", jax.__version__), "optax": optax.__version__},
            extra={
                "devices": [str(d) for d in jax.devices()],
                "xla_flags": os.environ.get("XLA_FLAGS", ""),
                "transpose": self.options["transpose"],
            },
        )

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return self._impl.JaxModel(spec, adam, self)
