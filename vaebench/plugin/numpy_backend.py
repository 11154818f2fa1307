"""The NumPy reference as a complete backend: the smallest one that passes the conformance kit.

Float64 arithmetic, hand-written gradients (:func:`vaebench.model.reference.loss_and_grads`)
and the core's Adam (:func:`vaebench.model.reference.adam_update`). Slow, exact, and
with no framework at all: the ground truth of ``vaebench parity`` and the
worked example for plugin authors (``vaebench run --backend numpy`` works too).
Registered by the core distribution under the entry-point name ``numpy``.

:class:`NumpyModel` is the same network for inference only (no gradients): it
lets the core's evaluation be tested with no framework installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from vaebench.errors import BackendError
from vaebench.model import reference
from vaebench.model.config import AdamConfig
from vaebench.model.layers import ModelSpec
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.environment import Environment
from vaebench.plugin.host import cpu_model


class NumpyModel(Model):
    """Inference through :mod:`vaebench.model.reference` in float64, returned as float32."""

    params: dict[str, np.ndarray]

    def _load_weights(self, params: dict[str, np.ndarray]) -> None:
        self.params = {k: v.copy() for k, v in params.items()}

    def _export_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.params.items()}

    def _export_optimizer_state(self) -> dict[str, np.ndarray]:
        zeros = {f"{k}/{m}": np.zeros_like(v) for k, v in self.params.items() for m in ("m", "v")}
        return {"step": np.zeros((), np.float32), **zeros}

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        raise NotImplementedError("the NumPy reference model has no optimizer")

    def _train_step(self, x: np.ndarray, eps: np.ndarray) -> Any:
        raise NotImplementedError("the NumPy reference model has no gradients: it evaluates, it does not train")

    def _fetch(self, values: Sequence[Any]) -> np.ndarray:
        return np.asarray(values)

    def _evaluate(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        if self.spec.quantizer is not None:
            return tuple(reference.vq_evaluate(self.spec, self.params, x)[0])
        return tuple(reference.evaluate(self.spec, self.params, x, eps))

    def _codes(self, x: np.ndarray) -> np.ndarray:
        return reference.vq_evaluate(self.spec, self.params, x)[1]

    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return reference.encode(self.spec, self.params, x)

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return reference.decode_pixels(self.spec, self.params, z)

    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return reference.recon_nll(self.spec, self.params, x, z)

    def _synchronize(self) -> None:
        pass


class NumpyTrainModel(NumpyModel):
    """:class:`NumpyModel` plus a train step and Adam state."""

    state_dtype = np.float64

    def _load_weights(self, params: dict[str, np.ndarray]) -> None:
        self.params = {k: v.astype(np.float64) for k, v in params.items()}
        self.step = 0
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}

    def _export_weights(self) -> dict[str, np.ndarray]:
        return {k: v.copy() for k, v in self.params.items()}

    def _export_optimizer_state(self) -> dict[str, np.ndarray]:
        state = {f"{k}/{name}": moments[k].copy() for k in self.params for name, moments in (("m", self.m), ("v", self.v))}
        return {"step": np.asarray(self.step, np.float64), **state}

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self.step = int(state["step"])
        self.m = {k: state[f"{k}/m"].astype(np.float64) for k in self.params}
        self.v = {k: state[f"{k}/v"].astype(np.float64) for k in self.params}

    def _train_step(self, x: np.ndarray, eps: np.ndarray) -> Any:
        loss, grads = reference.loss_and_grads(self.spec, self.params, x, eps)
        self.step += 1
        a = self.adam
        for key in self.params:
            self.params[key], self.m[key], self.v[key] = reference.adam_update(
                self.params[key], grads[key], self.m[key], self.v[key], self.step, a.lr, a.beta1, a.beta2, a.eps
            )
        return loss

    def _fetch(self, values: Sequence[Any]) -> np.ndarray:
        return np.asarray(values, np.float64)


class NumpyBackend(Backend):
    """NumPy, float64, CPU: the reference implementation of the contract."""

    name = "numpy"
    option_defaults: ClassVar[dict[str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.device == "cuda":
            raise BackendError("the numpy backend runs on the CPU only; use --device cpu")

    def _environment(self) -> Environment:
        return Environment(
            framework="numpy",
            versions={"numpy": np.__version__},
            device="cpu",
            device_name=cpu_model(),
            threads="BLAS default",
            precision=self.precision,
            float32_matmul_precision="float64",
            execution="eager NumPy, float64",
        )

    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        return NumpyTrainModel(spec, adam)
