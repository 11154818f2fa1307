"""The JAX side of the plugin (imported by :class:`~vaebench_jax.JaxBackend`).

The train step is one pure function of ``(params, opt_state, x, eps)`` under
``jax.jit`` with the state donated. The parameters are the canonical dict
itself (``<layer>/kernel`` -> array, in the layouts :attr:`JaxModel.layout`
names), so there is no name mapping; the layers are the ``jax.lax`` calls
Flax's ``Dense``, ``Conv`` and ``ConvTranspose`` make, written out, with the
spec's paddings: ``info.padding`` for a convolution, ``info.dilated_padding``
(the crop in XLA's convention) for a transposed one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from vaebench.model.config import AdamConfig
from vaebench.model.layers import LayerInfo, ModelSpec
from vaebench.model.layouts import adam_state
from vaebench.model.loss import recon_nll
from vaebench.model.ops import ArrayOps
from vaebench.model.subpixel import SubPixel, depth_to_space, subpixel, subpixel_kernel
from vaebench.plugin import engines, probes, walk
from vaebench.plugin.contract import Model

OPS = ArrayOps(jnp, jax.nn.relu, one_hot=jax.nn.one_hot, stop_gradient=lax.stop_gradient, sigmoid=jax.nn.sigmoid)
_NHWC = ("NHWC", "HWIO", "NHWC")


def _bias(y: jax.Array, b: jax.Array) -> jax.Array:
    return y + b.reshape((1,) * (y.ndim - 1) + (-1,))


def _subpixel(x: jax.Array, w: jax.Array, form: SubPixel) -> jax.Array:
    """A transposed convolution in the sub-pixel form of :mod:`vaebench.model.subpixel` (``w``: ``(h, w, out, in)``)."""
    kernel = subpixel_kernel(form, w.transpose(0, 1, 3, 2), jnp)
    z = lax.conv_general_dilated(x, kernel, (1, 1), (form.padding,) * 2, dimension_numbers=_NHWC)
    return depth_to_space(z, form, jnp)


class Layers:
    """The spec's layers as ``jax.lax`` functions of NHWC arrays, reading their weights from ``params``."""

    relu = staticmethod(jax.nn.relu)
    tanh = staticmethod(jnp.tanh)

    def __init__(self, params: dict[str, jax.Array], transpose: str = "lax") -> None:
        self.params, self.transpose = params, transpose

    def _weights(self, info: LayerInfo) -> tuple[jax.Array, jax.Array]:
        return self.params[f"{info.name}/kernel"], self.params[f"{info.name}/bias"]

    def dense(self, info: LayerInfo) -> Any:
        w, b = self._weights(info)
        return lambda x: _bias(lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ()))), b)

    def conv(self, info: LayerInfo) -> Any:
        (w, b), s, pad = self._weights(info), info.layer.stride, info.padding
        return lambda x: _bias(lax.conv_general_dilated(x, w, (s, s), (pad, pad), dimension_numbers=_NHWC), b)

    def conv_transpose(self, info: LayerInfo) -> Any:
        (w, b), s, pad = self._weights(info), info.layer.stride, info.dilated_padding
        if self.transpose == "subpixel":
            return lambda x: _bias(_subpixel(x, w, subpixel(info)), b)
        return lambda x: _bias(lax.conv_transpose(x, w, (s, s), (pad, pad), transpose_kernel=True), b)

    @staticmethod
    def flatten(info: LayerInfo) -> Any:
        return lambda x: x.reshape(x.shape[0], -1)

    @staticmethod
    def reshape(info: LayerInfo) -> Any:
        return lambda x: x.reshape(x.shape[0], *info.layer.shape)

    def codebook(self, info: LayerInfo) -> Any:
        book = self.params[f"{info.name}/codebook"]
        return lambda features: book


class JaxModel(Model):
    """Parameters and Adam state live on the device; every step is one jitted call."""

    layout: ClassVar[dict[str, tuple[int, ...]]] = {"conv_transpose": (0, 1, 3, 2)}  # transpose_kernel: (h, w, out, in)
    engine = "jax"

    def __init__(self, spec: ModelSpec, adam: AdamConfig, backend: Any) -> None:
        super().__init__(spec, adam)
        self.device_kind, self.transpose = backend.device_kind, backend.options["transpose"]
        self.device = jax.devices("gpu")[0] if backend.device_kind == "cuda" else jax.devices("cpu")[0]
        self._wait = engines.waiter("jax", backend.device_kind)
        self.tx = tx = optax.adam(adam.lr, b1=adam.beta1, b2=adam.beta2, eps=adam.eps)

        transpose = backend.options["transpose"]

        def net(params: dict) -> walk.Network:
            return walk.network(spec, Layers(params, transpose))  # plain Python, run once per trace

        def step(params, opt_state, x, eps):
            loss, grads = jax.value_and_grad(lambda p: net(p).loss(OPS, x, eps))(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.loss = lambda params, x, eps: net(params).loss(OPS, x, eps)
        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.eval_fn = jax.jit(lambda params, x, eps: net(params).terms(OPS, x, eps))
        self.encode_fn = jax.jit(lambda params, x: net(params).encode(x))
        self.decode_fn = jax.jit(lambda params, z: net(params).pixels(OPS, z))
        self.codes_fn = jax.jit(lambda params, x: net(params).codes(OPS, x))
        self.recon_fn = jax.jit(lambda params, x, z: recon_nll(OPS, net(params).decode(z), x))
        self.params: dict | None = None
        self.opt_state: Any = None

    def _put(self, a: np.ndarray) -> jax.Array:
        return jax.device_put(a, self.device)

    # -- weights and Adam state (arrays arrive and leave in this layout, under canonical names) --
    def _load_weights(self, params: dict[str, np.ndarray]) -> None:
        self.params = jax.device_put(dict(params), self.device)
        self.opt_state = jax.device_put(self.tx.init(self.params), self.device)  # committed: one compile, not two

    def _export_weights(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in jax.device_get(self.params).items()}

    def _adam_index(self) -> int:
        return next(i for i, part in enumerate(self.opt_state) if isinstance(part, optax.ScaleByAdamState))

    def _export_optimizer_state(self) -> dict[str, np.ndarray]:
        adam = jax.device_get(self.opt_state[self._adam_index()])
        return adam_state(adam.count, ((key, adam.mu[key], adam.nu[key]) for key in adam.mu))

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        i, keys = self._adam_index(), list(self.params)
        count = np.asarray(state["step"], np.int32)
        m, v = ({k: state[f"{k}/{s}"] for k in keys} for s in ("m", "v"))
        adam = optax.ScaleByAdamState(count=count, mu=m, nu=v)
        self.opt_state = jax.device_put((*self.opt_state[:i], adam, *self.opt_state[i + 1 :]), self.device)

    # -- the step and inference --
    def _train_step(self, x: np.ndarray, eps: np.ndarray) -> jax.Array:
        self.params, self.opt_state, loss = self.step(self.params, self.opt_state, self._put(x), self._put(eps))
        return loss

    def _fetch(self, values: Sequence[jax.Array]) -> np.ndarray:
        return np.asarray(jax.device_get(list(values)))

    def _evaluate(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(t) for t in self.eval_fn(self.params, self._put(x), self._put(eps)))

    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, logvar = self.encode_fn(self.params, self._put(x))
        return np.asarray(mean), np.asarray(logvar)

    def _decode(self, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.decode_fn(self.params, self._put(z)))

    def _codes(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.codes_fn(self.params, self._put(x)))

    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.recon_fn(self.params, self._put(x), self._put(z)))

    def _synchronize(self) -> None:
        self._wait(self.params, self.opt_state)

    # -- where the time goes (vaebench explain): the layer or the loss alone, each one jitted call --
    def _layer_probe(self, info: LayerInfo, kernel: np.ndarray, bias: np.ndarray, x: np.ndarray, grad: np.ndarray) -> dict:
        w = {f"{info.name}/kernel": self._put(kernel), f"{info.name}/bias": self._put(bias)}

        def f(w: dict, x: jax.Array) -> jax.Array:
            return walk.layer(Layers(w, self.transpose), info)(x)

        return probes.layer("jax", self.device_kind, f, w, self._put(x), self._put(grad))

    def _step_probe(self, x: np.ndarray, eps: np.ndarray) -> dict:
        params = {k: jnp.array(v) for k, v in self.params.items()}  # a copy: the timed steps donate the live ones
        return probes.step("jax", self.device_kind, lambda w, x: self.loss(w, *x), params, (self._put(x), self._put(eps)))
