"""Keras 3 backend for vaebench, on each of Keras' engines.

``keras`` runs on TensorFlow, ``keras-jax`` on JAX and ``keras-torch`` on
PyTorch: the same Keras model on three engines, so the suite can measure what
the Keras layer costs over each native plugin. Keras reads ``KERAS_BACKEND``
once, at import, so an engine is fixed per process: this module imports no
Keras, each backend class sets ``KERAS_BACKEND`` before the first import, and
asking for a second engine in the same process is a clear error (``vaebench
run`` is one process per run).
"""

from __future__ import annotations

import os
import sys
from typing import Any, ClassVar

from vaebench.errors import BackendError
from vaebench.model.config import AdamConfig
from vaebench.model.layers import ModelSpec
from vaebench.plugin import engines
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.environment import Environment


class KerasBackend(Backend):
    """Keras 3 on TensorFlow. Options: ``xla`` (``auto``: Keras' own ``jit_compile="auto"``
    rule, XLA off on a CPU-only machine and on with a GPU; ``1``; ``0``). ``--profile best``
    measures ``0`` against ``1`` on the machine at hand instead of trusting a rule."""

    name = "keras"
    engine: ClassVar[str] = "tensorflow"
    #: ``transpose``: Keras' ``Conv2DTranspose`` or the same function as a stride-1 convolution and a
    #: depth-to-space in ``keras.ops`` (``subpixel``, :mod:`vaebench.model.subpixel`), on every engine
    choices: ClassVar[dict[str, tuple[str, ...]]] = {"xla": ("auto", "0", "1"), "transpose": ("keras", "subpixel")}
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {"xla": ("0", "1"), "transpose": ("keras", "subpixel")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        loaded = sys.modules.get("keras")
        if loaded is not None and loaded.backend.backend() != self.engine:
            raise BackendError(
                f"Keras is already running on {loaded.backend.backend()} in this process and cannot switch to "
                f"{self.engine}; run --backend {self.name} in a process of its own"
            )
        hint = f"install it (e.g. pip install -e backends/{'jax' if self.engine == 'jax' else 'torch'})"
        engines.start(self.engine, f"--backend {self.name}", self.threads, hint)
        os.environ["KERAS_BACKEND"] = self.engine
        with engines.native_chatter_held():
            from vaebench_keras import model

        self._impl = model
        self.device_kind = engines.setup(self.engine, self, f"Keras' {self.engine} engine")
        if self.engine == "torch" and self.compile:
            raise BackendError("--compile is not supported by keras-torch (Keras drives torch eagerly); drop it")

    def use_xla(self) -> bool:
        """TensorFlow's XLA switch. ``auto`` is Keras' own ``jit_compile="auto"`` rule for a
        compiled train step: XLA on when TensorFlow sees a GPU, off on a CPU-only machine.

        Which is faster depends on the network and the machine (on a 2-core CPU XLA
        lost on the convolutional networks and won on ``mlp``), so ``--profile best``
        measures both rather than encoding a rule here.
        """
        return self.resolved_options(self.options)["xla"] == "1"

    def resolved_options(self, options: Any) -> dict[str, str]:
        """``xla=auto`` as the value Keras' rule gives on this device (``1`` with a GPU, ``0`` on a CPU)."""
        resolved = dict(options)
        if resolved.get("xla") == "auto":
            resolved["xla"] = "1" if self.device_kind == "cuda" else "0"
        return resolved

    def _environment(self) -> Environment:
        xla = getattr(self, "xla_used", None) if self.engine == "tensorflow" else self.engine == "jax"
        if self.engine == "tensorflow":
            execution = "tf.function, XLA " + {True: "on", False: "off", None: f"{self.options['xla']} (set at build)"}[xla]
        elif self.engine == "jax":
            execution = "jax.jit of Keras stateless_call + stateless_apply, state donated"
        else:
            execution = "eager"
        versions = {"keras": self._impl.keras.__version__}
        extra = {"engine": self.engine, "xla": xla, "transpose": self.options["transpose"]}
        return engines.environment(self.engine, self, "keras", execution, versions, extra=extra)

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return self._impl.KerasModel(spec, adam, self)


class KerasJaxBackend(KerasBackend):
    """Keras 3 on JAX: the step is Keras' stateless API under one ``jax.jit`` (always; ``--compile`` changes nothing)."""

    name = "keras-jax"
    engine = "jax"
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {"transpose": ("keras", "subpixel")}  # always one jax.jit


class KerasTorchBackend(KerasBackend):
    """Keras 3 on PyTorch, eagerly: Keras drives torch op by op, and ``--compile`` is refused with that reason."""

    name = "keras-torch"
    engine = "torch"
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {"transpose": ("keras", "subpixel")}  # eager torch: no compile
