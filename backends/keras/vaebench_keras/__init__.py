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

from vaebench import engines
from vaebench.contract import Backend, Model
from vaebench.environment import Environment
from vaebench.errors import BackendError
from vaebench.spec import AdamConfig, ModelSpec

_ENGINE_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


class KerasBackend(Backend):
    """Keras 3 on TensorFlow. Options: ``xla`` (``auto``: Keras' own ``jit_compile="auto"``
    rule, XLA off on a CPU-only machine and on with a GPU; ``1``; ``0``). ``--profile best``
    measures ``0`` against ``1`` on the machine at hand instead of trusting a rule."""

    name = "keras"
    engine: ClassVar[str] = "tensorflow"
    option_defaults: ClassVar[dict[str, str]] = {"xla": "auto"}
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {"xla": ("auto", "0", "1")}
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {"xla": ("0", "1")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        loaded = sys.modules.get("keras")
        if loaded is not None and loaded.backend.backend() != self.engine:
            raise BackendError(
                f"Keras is already running on {loaded.backend.backend()} in this process and cannot switch to "
                f"{self.engine}; run --backend {self.name} in a process of its own"
            )
        try:
            __import__(_ENGINE_MODULES[self.engine])
        except ImportError:
            raise BackendError(
                f"--backend {self.name} needs {self.engine}, which is not installed; install it "
                f"(e.g. pip install -e backends/{'jax' if self.engine == 'jax' else 'torch'})"
            ) from None
        os.environ["KERAS_BACKEND"] = self.engine
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter is not for our users
        engines.prepare(self.engine, self.threads)  # before the engine's first import
        from vaebench_keras import model

        self._impl = model
        self.device_kind = model.setup_engine(self)

    def _environment(self) -> Environment:
        return self._impl.environment(self)

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return self._impl.KerasModel(spec, adam, self)


class KerasJaxBackend(KerasBackend):
    """Keras 3 on JAX: the step is Keras' stateless API under one ``jax.jit``."""

    name = "keras-jax"
    engine = "jax"
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {}  # always one jax.jit


class KerasTorchBackend(KerasBackend):
    """Keras 3 on PyTorch: eager, or ``torch.compile`` with ``--compile``."""

    name = "keras-torch"
    engine = "torch"
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {}  # Keras drives torch eagerly; no compile
