"""The Keras side of the plugin (imported once ``KERAS_BACKEND`` is set).

The network, the loss and evaluation are written once in Keras 3 (layers and
``keras.ops``); only the train step differs per engine, because Keras leaves a
custom step to the engine's own gradient machinery: ``tf.GradientTape`` under
``tf.function``, ``stateless_call`` + ``jax.value_and_grad`` under ``jax.jit``,
``loss.backward()`` on PyTorch. Each is the pattern of Keras' own guides to
writing a training loop from scratch on that engine.

Adam: Keras' own applies epsilon to the uncorrected second moment
(``p -= lr_t * m / (sqrt(v) + eps)``, Kingma & Ba's "efficient version", with
a default eps of 1e-7), PyTorch and Optax to the corrected one. Setting eps is
not enough: on coordinates with small gradients the two differ by up to a
few percent of a step. :class:`CoreAdam` is Keras' Adam with the core's formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

from vaebench.contract import Model
from vaebench.environment import cpu_model
from vaebench.errors import BackendError
from vaebench.loss import recon_nll, vae_terms
from vaebench.spec import AdamConfig, Conv2D, Dense, Flatten, LayerInfo, ModelSpec, Reshape

ENGINE = keras.backend.backend()


class KerasOps:
    """The contract's :class:`~vaebench.contract.Ops` on ``keras.ops``: the same on every engine."""

    exp = staticmethod(keras.ops.exp)
    log1p = staticmethod(keras.ops.log1p)
    abs = staticmethod(keras.ops.abs)
    relu = staticmethod(keras.ops.relu)
    mean = staticmethod(keras.ops.mean)

    @staticmethod
    def flatten(x: Any) -> Any:
        return keras.ops.reshape(x, (-1, math.prod(x.shape[1:])))

    @staticmethod
    def sum_per_example(x: Any) -> Any:
        return keras.ops.sum(x, axis=-1)


class CoreAdam(keras.optimizers.Adam):
    """Keras' Adam with epsilon on the bias-corrected second moment, as the core defines Adam:
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)``, i.e. Keras' update with ``eps * sqrt(1 - beta2**t)``."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        ops, dtype = keras.ops, variable.dtype
        lr, gradient = ops.cast(learning_rate, dtype), ops.cast(gradient, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, dtype), step)
        correction_2 = ops.sqrt(1 - ops.power(ops.cast(self.beta_2, dtype), step))
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        alpha = lr * correction_2 / (1 - beta_1_power)
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.sqrt(v) + self.epsilon * correction_2))


def setup_engine(backend: Any) -> str:
    """Apply threads and device choice to the engine; return ``cpu`` or ``cuda``."""
    if ENGINE == "tensorflow":
        import tensorflow as tf

        if backend.threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(backend.threads)
            except RuntimeError:  # the runtime is already up: keep its setting, environment() reports it
                pass
        tf.config.experimental.enable_tensor_float_32_execution(backend.precision == "tf32")
        gpus = tf.config.list_physical_devices("GPU")
        if gpus and backend.device == "cpu":
            tf.config.set_visible_devices([], "GPU")
            gpus = []
    elif ENGINE == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "high" if backend.precision == "tf32" else "highest")
        try:
            gpus = jax.devices("gpu")
        except RuntimeError:
            gpus = []
    else:
        import torch

        if backend.threads:
            torch.set_num_threads(backend.threads)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = backend.precision == "tf32"
        gpus = [0] if torch.cuda.is_available() else []
    if backend.device == "cuda" and not gpus:
        raise BackendError(f"--device cuda asked for, but Keras' {ENGINE} engine sees no GPU; use --device cpu")
    if ENGINE == "torch" and backend.compile:
        raise BackendError("--compile is not supported by keras-torch (Keras drives torch eagerly); drop it")
    return "cuda" if gpus and backend.device != "cpu" else "cpu"


def use_xla(backend: Any, spec: ModelSpec) -> bool:
    """TensorFlow's XLA switch. ``auto`` is Keras' own ``jit_compile="auto"`` rule for a
    compiled train step: XLA on when TensorFlow sees a GPU, off on a CPU-only machine.

    Which is faster depends on the network and the machine (on a 2-core CPU XLA
    lost on the convolutional networks and won on ``mlp``), so ``--profile best``
    measures both rather than encoding a rule here.
    """
    xla = backend.options["xla"]
    if xla != "auto":
        return xla == "1"
    return backend.device_kind == "cuda"


def environment(backend: Any) -> dict[str, Any]:
    """Keras and engine versions, device, and how the step ran."""
    import importlib

    engine = importlib.import_module(ENGINE)
    if ENGINE == "tensorflow":
        import tensorflow as tf

        threads = tf.config.threading.get_intra_op_parallelism_threads() or "tensorflow default (all usable cores)"
        xla = getattr(backend, "xla_used", None)
        execution = "tf.function, XLA " + {True: "on", False: "off", None: f"{backend.options['xla']} (set at build)"}[xla]
    elif ENGINE == "jax":
        threads = backend.threads or "xla default (all usable cores)"
        execution = "jax.jit of Keras stateless_call + stateless_apply, state donated"
    else:
        threads = engine.get_num_threads()
        execution = "eager"
    return {
        "framework": "keras",
        "keras": keras.__version__,
        "engine": ENGINE,
        ENGINE: engine.__version__,
        "device": backend.device_kind,
        "device_name": cpu_model() if backend.device_kind == "cpu" else "GPU",
        "threads": threads,
        "xla": getattr(backend, "xla_used", None) if ENGINE == "tensorflow" else ENGINE == "jax",
        "precision": backend.precision,
        "execution": execution,
    }


def _key(info: LayerInfo) -> str:
    return info.name.replace("/", "_")


def _layer(info: LayerInfo) -> keras.layers.Layer:
    layer, key = info.layer, _key(info)
    if isinstance(layer, Dense):
        return keras.layers.Dense(layer.units, activation=layer.activation, name=key)
    if isinstance(layer, Flatten):
        return keras.layers.Flatten(name=key)
    if isinstance(layer, Reshape):
        return keras.layers.Reshape(layer.shape, name=key)
    cls = keras.layers.Conv2DTranspose if layer.transpose else keras.layers.Conv2D
    return cls(layer.filters, layer.kernel, strides=layer.stride, padding="same", activation=layer.activation, name=key)


def _to_keras(info: LayerInfo, kernel: np.ndarray) -> np.ndarray:
    """Canonical kernel -> Keras layout; only Conv2DTranspose differs ((h, w, out, in))."""
    return kernel.transpose(0, 1, 3, 2) if isinstance(info.layer, Conv2D) and info.layer.transpose else kernel


class KerasModel(Model):
    """The spec as three functional Keras models sharing layers: encoder, decoder, and the loss net."""

    def __init__(self, spec: ModelSpec, adam: AdamConfig, backend: Any) -> None:
        super().__init__(spec, adam)
        self.layers: dict[str, tuple[LayerInfo, keras.layers.Layer]] = {}

        def chain(infos: list[LayerInfo], x: Any) -> Any:
            for info in infos:
                layer = _layer(info)
                if info.param_shapes:
                    self.layers[_key(info)] = (info, layer)
                x = layer(x)
            return x

        x_in = keras.Input(spec.input_shape, name="x")
        h = chain(spec.encoder_layers(), x_in)
        heads = [chain([info], h) for info in spec.head_layers()]
        self.encoder = keras.Model(x_in, heads, name="encoder")
        z_in = keras.Input((spec.latent_dim,), name="z")
        self.decoder = keras.Model(z_in, chain(spec.decoder_layers(), z_in), name="decoder")
        self.probs = keras.Model(z_in, keras.ops.sigmoid(self.decoder(z_in)), name="probs")
        x_net, eps_net = keras.Input(spec.input_shape, name="images"), keras.Input((spec.latent_dim,), name="eps")
        terms = vae_terms(KerasOps, self.encoder, self.decoder, x_net, eps_net)
        self.net = keras.Model([x_net, eps_net], keras.ops.stack(list(terms), axis=-1), name="vae")
        self.nll = keras.Model([x_net, z_in], recon_nll(KerasOps, self.decoder(z_in), x_net), name="recon_nll")
        xla = use_xla(backend, spec) if ENGINE == "tensorflow" else ENGINE == "jax"
        backend.xla_used = xla
        for m in (self.net, self.encoder, self.probs, self.nll):
            m.compile(jit_compile=xla)
        self.optimizer = CoreAdam(adam.lr, beta_1=adam.beta1, beta_2=adam.beta2, epsilon=adam.eps)
        self.optimizer.build(self.net.trainable_variables)
        self.backend = backend
        self._step = {"tensorflow": _tf_step, "jax": _jax_step, "torch": _torch_step}[ENGINE](self, xla)

    def loss(self, x: Any, eps: Any, training: bool = True) -> Any:
        """The batch-mean -ELBO through the Keras net (column 0 of its output)."""
        return keras.ops.mean(self.net([x, eps], training=training)[:, 0])

    def _load_weights(self, params: dict[str, np.ndarray]) -> None:
        self._step.pull()
        for info, layer in self.layers.values():
            layer.kernel.assign(_to_keras(info, params[f"{info.name}/kernel"]))
            layer.bias.assign(params[f"{info.name}/bias"])
        for var in self.optimizer.variables:  # a fresh Adam (step count, moments), without retracing the step
            if not var.path.endswith("learning_rate"):
                var.assign(keras.ops.zeros(var.shape, var.dtype))
        self._step.push()

    def _export_weights(self) -> dict[str, np.ndarray]:
        self._step.pull()
        out = {}
        for info, layer in self.layers.values():
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            out[f"{info.name}/kernel"] = np.ascontiguousarray(_to_keras(info, kernel))
            out[f"{info.name}/bias"] = np.array(keras.ops.convert_to_numpy(layer.bias))
        return out

    def _slots(self) -> list[tuple[str, LayerInfo, Any, Any, Any]]:
        opt, out = self.optimizer, []
        for info, layer in self.layers.values():
            for name, var in (("kernel", layer.kernel), ("bias", layer.bias)):
                index = opt._get_variable_index(var)  # Keras' own lookup for its slot variables
                out.append((f"{info.name}/{name}", info, var, opt._momentums[index], opt._velocities[index]))
        return out

    def _export_optimizer_state(self) -> dict[str, np.ndarray]:
        self._step.pull()
        out = {"step": np.asarray(keras.ops.convert_to_numpy(self.optimizer.iterations), np.float32)}
        for key, info, _, m, v in self._slots():
            convert = (lambda a, info=info: _to_keras(info, a)) if key.endswith("kernel") else (lambda a: a)
            out[f"{key}/m"] = np.ascontiguousarray(convert(keras.ops.convert_to_numpy(m)))
            out[f"{key}/v"] = np.ascontiguousarray(convert(keras.ops.convert_to_numpy(v)))
        return out

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self._step.pull()
        self.optimizer.iterations.assign(int(state["step"]))
        for key, info, _, m, v in self._slots():
            convert = (lambda a, info=info: _to_keras(info, a)) if key.endswith("kernel") else (lambda a: a)
            m.assign(convert(state[f"{key}/m"]))
            v.assign(convert(state[f"{key}/v"]))
        self._step.push()

    def _stage(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
        return self._step.stage(x, eps)

    def _train_step(self, x: Any, eps: Any) -> Any:
        return self._step(x, eps)

    def _fetch(self, values: Sequence[Any]) -> np.ndarray:
        return keras.ops.convert_to_numpy(keras.ops.stack(list(values)))

    def _evaluate(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        self._step.pull()
        out = self.net.predict_on_batch([x, eps])
        return out[:, 0], out[:, 1], out[:, 2]

    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._step.pull()
        mean, logvar = self.encoder.predict_on_batch(x)
        return mean, logvar

    def _decode(self, z: np.ndarray) -> np.ndarray:
        self._step.pull()
        return self.probs.predict_on_batch(z)

    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        self._step.pull()
        return self.nll.predict_on_batch([x, z])

    def _synchronize(self) -> None:
        self._step.sync()

    def _peak_device_memory_mb(self) -> float | None:
        if self.backend.device_kind != "cuda":
            return None
        if ENGINE == "tensorflow":
            import tensorflow as tf

            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
        if ENGINE == "jax":
            import jax

            stats = jax.devices("gpu")[0].memory_stats() or {}
            return stats["peak_bytes_in_use"] / 2**20 if "peak_bytes_in_use" in stats else None
        import torch

        return torch.cuda.max_memory_allocated() / 2**20


class _Step:
    """A compiled step plus how to move state between it and the Keras variables."""

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def __call__(self, x: Any, eps: Any) -> Any:
        return self.fn(x, eps)

    def stage(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
        """The batch as the step takes it (on the prefetch thread); NumPy unless the engine gains by converting."""
        return x, eps

    def pull(self) -> None:
        """Make the Keras variables current (only the stateless JAX step keeps state apart)."""

    def push(self) -> None:
        """Hand the Keras variables to the step after they were assigned."""

    def sync(self) -> None:
        """Wait for queued device work."""


def _tf_step(model: KerasModel, xla: bool) -> _Step:
    import tensorflow as tf

    variables = model.net.trainable_variables

    @tf.function(jit_compile=xla)
    def step(x: Any, eps: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = model.loss(x, eps)
        model.optimizer.apply(tape.gradient(loss, variables), variables)
        return loss

    out = _Step(step)
    # Converted on the prefetch thread, off the step's. mlp against the hand-written XLA loop
    # (reference_ratio.py): NumPy into the tf.function 0.87-0.93x at batch 128, tf.constant on the step's
    # thread 0.93x; staged ahead, median of 7 runs 0.970x at 128 and 0.971x at 512 (runs 0.83-1.01x on
    # this noisy machine). The compiled step called on ready tensors ran at 1.00-1.01x.
    out.stage = lambda x, eps: (tf.constant(x), tf.constant(eps))
    sync = getattr(getattr(tf.test, "experimental", None), "sync_devices", None)
    if sync is not None and model.backend.device_kind == "cuda":
        out.sync = sync
    return out


def _torch_step(model: KerasModel, xla: bool) -> _Step:
    import torch

    variables = model.net.trainable_variables

    def step(x: Any, eps: Any) -> Any:
        loss = model.loss(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(eps))
        model.net.zero_grad()
        loss.backward()
        with torch.no_grad():
            model.optimizer.apply([v.value.grad for v in variables], variables)
        return loss.detach()

    out = _Step(step)
    if model.backend.device_kind == "cuda":
        out.sync = torch.cuda.synchronize
    return out


class _JaxStep(_Step):
    """Keras' stateless API: the state lives in JAX arrays, donated to every step."""

    def __init__(self, model: KerasModel) -> None:
        import jax

        self.jax, self.model = jax, model
        net, opt = model.net, model.optimizer
        self.vars = (net.trainable_variables, net.non_trainable_variables, opt.variables)

        def step(state: Any, x: Any, eps: Any) -> Any:
            trainable, non_trainable, opt_vars = state

            def loss_fn(trainable: Any) -> Any:
                out, nt = net.stateless_call(trainable, non_trainable, [x, eps], training=True)
                return keras.ops.mean(out[:, 0]), nt

            (loss, non_trainable), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
            trainable, opt_vars = opt.stateless_apply(opt_vars, grads, trainable)
            return (trainable, non_trainable, opt_vars), loss

        self.jitted = jax.jit(step, donate_argnums=0)
        self.state: Any = None
        self.dirty = False
        self.push()

    def __call__(self, x: Any, eps: Any) -> Any:
        self.state, loss = self.jitted(self.state, self.jax.numpy.asarray(x), self.jax.numpy.asarray(eps))
        self.dirty = True
        return loss

    def push(self) -> None:
        # Copies: the step donates (deletes) its inputs, the Keras variables must survive.
        self.state = tuple([self.jax.numpy.array(v.value) for v in group] for group in self.vars)
        self.dirty = False

    def pull(self) -> None:
        if self.dirty:
            for group, values in zip(self.vars, self.state, strict=True):
                for var, value in zip(group, values, strict=True):
                    var.assign(value)
            self.push()

    def sync(self) -> None:
        self.jax.block_until_ready(self.state)


def _jax_step(model: KerasModel, xla: bool) -> _Step:
    return _JaxStep(model)
