"""The JAX side of the plugin (imported by :class:`~vaebench_jax.JaxBackend`).

Why Linen rather than NNX: the train step must be one pure function of
``(params, opt_state, x, eps)`` under ``jax.jit`` with the state donated.
Linen's ``apply`` is exactly such a function of a plain parameter dict, so
the canonical weights map onto it one to one and nothing is traversed in
Python per step; ``nnx.jit`` walks the object graph on every call unless the
model is split into the same kind of pure state anyway.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import partial
from typing import Any, ClassVar

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from vaebench.model.config import AdamConfig
from vaebench.model.layers import Dense, Flatten, LayerInfo, ModelSpec, Reshape
from vaebench.model.layouts import adam_state
from vaebench.model.loss import recon_nll, vae_terms
from vaebench.plugin import engines
from vaebench.plugin.contract import Model
from vaebench.plugin.environment import Environment


class JaxOps:
    """The contract's :class:`~vaebench.model.ops.Ops` on ``jax.numpy`` arrays."""

    exp = staticmethod(jnp.exp)
    log1p = staticmethod(jnp.log1p)
    abs = staticmethod(jnp.abs)
    relu = staticmethod(jax.nn.relu)
    mean = staticmethod(jnp.mean)

    @staticmethod
    def flatten(x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def sum_per_example(x: jax.Array) -> jax.Array:
        return jnp.sum(x, axis=-1)


def _layer(info: LayerInfo) -> nn.Module:
    """The Flax layer of a spec layer; Flax is NHWC, so shapes pass through unchanged."""
    layer, key = info.layer, info.key
    if isinstance(layer, Dense):
        return nn.Dense(layer.units, name=key)
    k, s, (before, after) = layer.kernel, layer.stride, info.padding
    if layer.transpose:
        # The gradient of a 'same' conv: stride-dilate the input, pad it so the full
        # (h-1)*s+k output is cropped to [before, before+out), flip the kernel.
        full = (info.in_shape[0] - 1) * s + k
        pad = (k - 1 - before, k - 1 - (full - before - info.out_shape[0]))
        return nn.ConvTranspose(layer.filters, (k, k), (s, s), padding=(pad, pad), transpose_kernel=True, name=key)
    return nn.Conv(layer.filters, (k, k), s, padding=((before, after), (before, after)), name=key)


class Chain(nn.Module):
    """A run of spec layers, parameters named by canonical layer name."""

    infos: tuple[LayerInfo, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for info in self.infos:
            if isinstance(info.layer, Flatten):
                x = x.reshape(x.shape[0], -1)
            elif isinstance(info.layer, Reshape):
                x = x.reshape(x.shape[0], *info.layer.shape)
            else:
                x = _layer(info)(x)
                x = jax.nn.relu(x) if info.layer.activation == "relu" else x
        return x


class Networks:
    """The VAE as pure functions of a flat ``{layer_key: {kernel, bias}}`` dict."""

    def __init__(self, spec: ModelSpec) -> None:
        self.infos = {i.key: i for i in spec.layers() if i.param_shapes}
        self.trunk = Chain(tuple(spec.encoder_layers()))
        self.mean, self.logvar = (Chain((h,)) for h in spec.head_layers())
        self.decoder = Chain(tuple(spec.decoder_layers()))

    def encode(self, params: dict, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.trunk.apply({"params": params}, x)
        return self.mean.apply({"params": params}, h), self.logvar.apply({"params": params}, h)

    def decode(self, params: dict, z: jax.Array) -> jax.Array:
        return self.decoder.apply({"params": params}, z)

    def terms(self, params: dict, x: jax.Array, eps: jax.Array) -> Any:
        return vae_terms(JaxOps, partial(self.encode, params), partial(self.decode, params), x, eps)

    def loss(self, params: dict, x: jax.Array, eps: jax.Array) -> jax.Array:
        return jnp.mean(self.terms(params, x, eps).neg_elbo)


def device(kind: str) -> jax.Device:
    """The first GPU for ``cuda``, else the CPU."""
    return jax.devices("gpu")[0] if kind == "cuda" else jax.devices("cpu")[0]


def environment(backend: Any) -> Environment:
    """Versions, device and the settings that change numbers or speed."""
    versions = {"jax": jax.__version__, "jaxlib": getattr(jax.lib, "__version__", jax.__version__)}
    return Environment(
        framework="jax",
        versions={**versions, "flax": flax.__version__, "optax": optax.__version__},
        device=backend.device_kind,
        device_name=engines.device_name("jax", backend.device_kind),
        threads=engines.threads("jax", backend.threads),
        precision=backend.precision,
        float32_matmul_precision=engines.matmul_precision("jax"),
        execution="jax.jit (whole step, params and Adam state donated)",
        extra={"devices": [str(d) for d in jax.devices()], "xla_flags": os.environ.get("XLA_FLAGS", "")},
    )


class JaxModel(Model):
    """Parameters and Adam state live on the device; every step is one jitted call."""

    layout: ClassVar[dict[str, tuple[int, ...]]] = {"conv_transpose": (0, 1, 3, 2)}  # Flax: (h, w, out, in)
    engine = "jax"

    def __init__(self, spec: ModelSpec, adam: AdamConfig, backend: Any) -> None:
        super().__init__(spec, adam)
        self.device_kind = backend.device_kind
        self.device = device(backend.device_kind)
        self.nets = Networks(spec)
        self.tx = optax.adam(adam.lr, b1=adam.beta1, b2=adam.beta2, eps=adam.eps)
        nets, tx = self.nets, self.tx

        def step(params, opt_state, x, eps):
            loss, grads = jax.value_and_grad(nets.loss)(params, x, eps)
            updates, opt_state = tx.update(grads, opt_state, params)
            return optax.apply_updates(params, updates), opt_state, loss

        self.step = jax.jit(step, donate_argnums=(0, 1))
        self.eval_fn = jax.jit(nets.terms)
        self.encode_fn = jax.jit(nets.encode)
        self.decode_fn = jax.jit(lambda params, z: jax.nn.sigmoid(nets.decode(params, z)))
        self.recon_fn = jax.jit(lambda params, x, z: recon_nll(JaxOps, nets.decode(params, z), x))
        self.params: dict | None = None
        self.opt_state: Any = None

    def _put(self, a: np.ndarray) -> jax.Array:
        return jax.device_put(a, self.device)

    # -- weights and Adam state (arrays arrive and leave in Flax's layout) --
    def _tree(self, arrays: dict[str, np.ndarray], suffix: str = "") -> dict:
        """Canonical ``<layer>/kernel`` names -> Flax's ``{layer_key: {kernel, bias}}``."""
        return {k: {p: arrays[f"{i.name}/{p}{suffix}"] for p in ("kernel", "bias")} for k, i in self.nets.infos.items()}

    def _flat(self, tree: dict) -> dict[str, np.ndarray]:
        return {f"{i.name}/{p}": np.asarray(tree[k][p]) for k, i in self.nets.infos.items() for p in ("kernel", "bias")}

    def _load_weights(self, params: dict[str, np.ndarray]) -> None:
        self.params = jax.device_put(self._tree(params), self.device)
        self.opt_state = jax.device_put(self.tx.init(self.params), self.device)  # committed: one compile, not two

    def _export_weights(self) -> dict[str, np.ndarray]:
        return self._flat(jax.device_get(self.params))

    def _adam_index(self) -> int:
        return next(i for i, part in enumerate(self.opt_state) if isinstance(part, optax.ScaleByAdamState))

    def _export_optimizer_state(self) -> dict[str, np.ndarray]:
        adam = jax.device_get(self.opt_state[self._adam_index()])
        m, v = self._flat(adam.mu), self._flat(adam.nu)
        return adam_state(adam.count, ((key, m[key], v[key]) for key in m))

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        i = self._adam_index()
        count = np.asarray(state["step"], np.int32)
        adam = optax.ScaleByAdamState(count=count, mu=self._tree(state, "/m"), nu=self._tree(state, "/v"))
        self.opt_state = jax.device_put((*self.opt_state[:i], adam, *self.opt_state[i + 1 :]), self.device)

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

    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.asarray(self.recon_fn(self.params, self._put(x), self._put(z)))

    def _synchronize(self) -> None:
        jax.block_until_ready((self.params, self.opt_state))
