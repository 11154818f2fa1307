"""The NumPy reference as a :class:`~vaebench.contract.Model`, for inference only.

Lets the core's evaluation (IWAE, active units, pictures) be tested with no
framework installed. It has no gradients, so :meth:`train_step` raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from vaebench import reference
from vaebench.contract import Model


class NumpyModel(Model):
    """Inference through :mod:`vaebench.reference` in float64, returned as float32."""

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
        return tuple(reference.evaluate(self.spec, self.params, x, eps))

    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return reference.encode(self.spec, self.params, x)

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return 1 / (1 + np.exp(-reference.decode_logits(self.spec, self.params, z)))

    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return reference.recon_nll(self.spec, self.params, x, z)

    def _synchronize(self) -> None:
        pass
