"""JAX backend for vaebench: the spec as ``jax.lax`` layers, Optax Adam, one jitted train step.

This module imports no JAX: XLA reads its thread settings from ``XLA_FLAGS``
when JAX is first imported, so :class:`JaxBackend` sets them from ``--threads``
and only then imports :mod:`vaebench_jax.model`.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from vaebench.errors import BackendError
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
    #: computes several times faster.
    #: ``xla_cpu_onednn``: XLA CPU's oneDNN kernels, ``XLA_FLAGS=--xla_cpu_use_onednn=true|false`` (``1``, ``0``), or
    #: ``default`` (the flag not set: jaxlib's own choice). Offered only where the installed jaxlib knows the flag
    #: (:func:`~vaebench.plugin.engines.xla_flag_known`); elsewhere asking for it is an error. It is not a tunable:
    #: ``--profile best`` builds its variants in one process, and XLA reads its flags once per process, so variants
    #: differing in it would all run with the first one's flags. Compare it in separate runs (``-o``).
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"transpose": ("lax", "subpixel"), "xla_cpu_onednn": ("default", "0", "1")}
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {"transpose": ("lax", "subpixel")}
    ONEDNN_FLAG = "--xla_cpu_use_onednn"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        flags = []
        if self.options["xla_cpu_onednn"] != "default":
            flag = f"{self.ONEDNN_FLAG}={'true' if self.options['xla_cpu_onednn'] == '1' else 'false'}"
            if not engines.xla_flag_known(flag):
                raise BackendError(f"option xla_cpu_onednn: this jaxlib does not know {self.ONEDNN_FLAG}; leave it at default")
            flags.append(flag)
        engines.prepare("jax", self.threads, flags)  # before the first import of jax
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
            },
        )

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return self._impl.JaxModel(spec, adam, self)
