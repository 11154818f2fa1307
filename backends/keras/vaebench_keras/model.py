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
from typing import Any, ClassVar

import keras
import numpy as np

from vaebench.model.config import AdamConfig
from vaebench.model.layers import LayerInfo, ModelSpec
from vaebench.model.layouts import adam_state
from vaebench.model.loss import recon_nll, vae_terms
from vaebench.model.ops import ArrayOps
from vaebench.model.subpixel import depth_to_space, subpixel, subpixel_kernel
from vaebench.plugin import engines, probes, walk
from vaebench.plugin.contract import Model

ENGINE = keras.backend.backend()


_tensor = keras.ops.convert_to_tensor


def _fused_bce(logits: Any, targets: Any) -> Any:
    """Keras' BCE from logits, which on PyTorch is ``binary_cross_entropy_with_logits(reduction="none")``: the core's
    unclipped formula in one kernel and its backward in another. Eager PyTorch runs the written-out formula as six
    kernels and six backward nodes; keras-torch's mlp step spent its gap to Keras' guide loop there. On JAX and
    TensorFlow the formula stays the core's (XLA or the graph fuses it; Keras' JAX form is another formula)."""
    return keras.ops.binary_crossentropy(targets, logits, from_logits=True)


OPS = ArrayOps(
    keras.ops,
    keras.ops.relu,
    flatten=lambda x: keras.ops.reshape(x, (-1, math.prod(x.shape[1:]))),
    transpose=keras.ops.transpose,  # a TensorFlow tensor has no .T
    **({"bce_with_logits": _fused_bce} if ENGINE == "torch" else {}),
)


class Layers:
    """The spec's layers as Keras layers (NHWC on every engine). Keras' ``'same'`` is TensorFlow's rule, so a
    layer under the spec's ``same`` rule uses it; any other padding or crop is a ZeroPadding2D or Cropping2D."""

    relu = staticmethod(keras.ops.relu)
    tanh = staticmethod(keras.ops.tanh)

    @staticmethod
    def dense(info: LayerInfo) -> Any:
        return keras.layers.Dense(info.layer.units, name=info.key)

    @staticmethod
    def conv(info: LayerInfo) -> Any:
        layer = info.layer
        if layer.padding == "same":
            return keras.layers.Conv2D(layer.filters, layer.kernel, strides=layer.stride, padding="same", name=info.key)
        conv = keras.layers.Conv2D(layer.filters, layer.kernel, strides=layer.stride, padding="valid", name=info.key)
        return _Around(conv, before=keras.layers.ZeroPadding2D((info.padding, info.padding), name=f"{info.key}_pad"))

    def __init__(self, transpose: str = "keras") -> None:
        self.transpose = transpose

    def conv_transpose(self, info: LayerInfo) -> Any:
        layer, cls = info.layer, keras.layers.Conv2DTranspose
        if self.transpose == "subpixel":
            return _SubPixelTranspose(info)
        if layer.padding == "same":
            return cls(layer.filters, layer.kernel, strides=layer.stride, padding="same", name=info.key)
        conv = cls(layer.filters, layer.kernel, strides=layer.stride, padding="valid", name=info.key)
        return _Around(conv, after=keras.layers.Cropping2D((info.crop, info.crop), name=f"{info.key}_crop"))

    @staticmethod
    def flatten(info: LayerInfo) -> Any:
        return keras.layers.Flatten(name=info.key)

    @staticmethod
    def reshape(info: LayerInfo) -> Any:
        return keras.layers.Reshape(info.layer.shape, name=info.key)

    @staticmethod
    def codebook(info: LayerInfo) -> Any:
        return _Codebook(info)


class _Codebook(keras.layers.Layer):
    """A VQ model's codebook ``(K, D)`` as a layer's ``kernel``: called on the encoder's features, it returns the
    codebook, so the functional models hold the weight where the core's loss reads it."""

    def __init__(self, info: LayerInfo) -> None:
        super().__init__(name=info.key)
        self.shape = info.param_shapes[f"{info.name}/codebook"]

    def build(self, input_shape: Any) -> None:
        self.kernel = self.add_weight(shape=self.shape, initializer="zeros", name="kernel")

    def call(self, features: Any) -> Any:
        return keras.ops.convert_to_tensor(self.kernel)


class _Around:
    """A Keras convolution with the spec's padding (before) or crop (after) as layers of their own."""

    def __init__(self, layer: Any, before: Any = None, after: Any = None) -> None:
        self.layer, self.before, self.after = layer, before or (lambda x: x), after or (lambda x: x)

    def __call__(self, x: Any) -> Any:
        return self.after(self.layer(self.before(x)))

    kernel = property(lambda self: self.layer.kernel)
    bias = property(lambda self: self.layer.bias)


class _SubPixelTranspose(keras.layers.Layer):
    """Conv2DTranspose's function as one stride-1 convolution to ``s*s*C`` channels and a depth-to-space, in
    ``keras.ops`` (every engine), its kernel in Conv2DTranspose's ``(h, w, out, in)`` layout and gathered into the
    stride-1 kernel as :mod:`vaebench.model.subpixel` derives."""

    def __init__(self, info: LayerInfo) -> None:
        super().__init__(name=info.key)
        self.form, self.filters, self.channels = subpixel(info), info.layer.filters, info.in_shape[-1]

    def build(self, input_shape: Any) -> None:
        k = self.form.kernel
        self.kernel = self.add_weight(shape=(k, k, self.filters, self.channels), initializer="glorot_uniform", name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, x: Any) -> Any:
        ops, f = keras.ops, self.form
        (before, after), size = f.padding, x.shape[1]  # a negative pad is a crop, which keras.ops.pad cannot say
        x = ops.pad(x, ((0, 0), (max(before, 0), max(after, 0)), (max(before, 0), max(after, 0)), (0, 0)))
        lo, hi = max(-before, 0), max(before, 0) + size + max(after, 0) - max(-after, 0)
        z = ops.conv(x[:, lo:hi, lo:hi], subpixel_kernel(f, ops.transpose(self.kernel, (0, 1, 3, 2)), ops), padding="valid")
        return depth_to_space(z, f, ops) + self.bias


class CoreAdam(keras.optimizers.Adam):
    """Keras' Adam with epsilon on the bias-corrected second moment, as the core defines Adam:
    ``p -= lr * m_hat / (sqrt(v_hat) + eps)``, i.e. Keras' update with ``eps * sqrt(1 - beta2**t)``."""

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        ops = keras.ops
        gradient, (alpha, eps) = ops.cast(gradient, variable.dtype), _core_adam_scales(self, learning_rate, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1 - self.beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), 1 - self.beta_2))
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.sqrt(v) + eps))


def _core_adam_scales(optimizer: Any, learning_rate: Any, dtype: Any) -> tuple[Any, Any]:
    """This step's ``(alpha, eps_hat)`` for the core's Adam written on uncorrected moments, as both of this plugin's
    Adams apply it: ``p -= alpha * m / (sqrt(v) + eps_hat)`` with ``alpha = lr * sqrt(1 - beta2**t) / (1 - beta1**t)``
    and ``eps_hat = eps * sqrt(1 - beta2**t)``, which is ``lr * m_hat / (sqrt(v_hat) + eps)`` exactly."""
    ops = keras.ops
    step = ops.cast(optimizer.iterations + 1, dtype)
    beta_1_power = ops.power(ops.cast(optimizer.beta_1, dtype), step)
    correction_2 = ops.sqrt(1 - ops.power(ops.cast(optimizer.beta_2, dtype), step))
    return ops.cast(learning_rate, dtype) * correction_2 / (1 - beta_1_power), optimizer.epsilon * correction_2


def _torch_core_adam() -> type:
    """:class:`CoreAdam` for Keras on PyTorch: Keras' own PyTorch Adam (its ``torch._foreach`` update of every variable
    at once, which Keras swaps in for ``keras.optimizers.Adam`` only, never for a subclass), epsilon moved onto the
    corrected second moment as in :class:`CoreAdam`. Per variable in eager Keras ops the update cost keras-torch's
    ``mlp`` step ~0.8 ms of ~12.5 at batch 128 against Keras' guide loop."""
    import torch
    from keras.src.backend.torch.optimizers.torch_adam import Adam as TorchAdam

    class TorchCoreAdam(TorchAdam):
        def _parallel_update_step(self, grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
            alpha, eps = _core_adam_scales(self, learning_rate, variables[0].dtype)
            m = [self._momentums[self._get_variable_index(v)].value for v in variables]
            v = [self._velocities[self._get_variable_index(var)].value for var in variables]
            torch._foreach_mul_(m, self.beta_1)
            torch._foreach_add_(m, grads, alpha=1 - self.beta_1)
            torch._foreach_mul_(v, self.beta_2)
            torch._foreach_add_(v, torch._foreach_mul(grads, grads), alpha=1 - self.beta_2)
            denominator = torch._foreach_add(torch._foreach_sqrt(v), eps)
            update = torch._foreach_div(torch._foreach_mul(m, alpha), denominator)
            torch._foreach_add_([var.value for var in variables], update, alpha=-1)

    return TorchCoreAdam


class KerasModel(Model):
    """The spec as functional Keras models sharing layers: encoder, decoder, the training loss, the evaluation terms."""

    layout: ClassVar[dict[str, tuple[int, ...]]] = {"conv_transpose": (0, 1, 3, 2)}  # Conv2DTranspose: (h, w, out, in)
    engine = ENGINE

    def __init__(self, spec: ModelSpec, adam: AdamConfig, backend: Any) -> None:
        super().__init__(spec, adam)
        self.device_kind = backend.device_kind
        self.layers = Layers(backend.options["transpose"])
        self.walk = net = walk.network(spec, self.layers)
        x_in = keras.Input(spec.input_shape, name="x")
        x_net, eps_net = keras.Input(spec.input_shape, name="images"), keras.Input((spec.noise_dim,), name="eps")
        eps_step = keras.Input(spec.noise_shape, name="eps_step")  # (K, d) under the IWAE bound, (0,) for a VQ model
        z_in = keras.Input((math.prod(spec.latent_shape),), name="z")
        self.decoder = keras.Model(z_in, net.decode(z_in), name="decoder")
        self.probs = keras.Model(z_in, net.pixels(OPS, keras.ops.convert_to_tensor(z_in)), name="probs")
        if spec.quantizer is None:
            self.encoder = keras.Model(x_in, list(net.encode(x_in)), name="encoder")
            terms = vae_terms(OPS, self.encoder, self.decoder, x_net, eps_net)
            step_loss = net.objective.loss_per_example(OPS, self.encoder, self.decoder, x_net, eps_step)
            self.nll = keras.Model([x_net, z_in], recon_nll(OPS, self.decoder(z_in), x_net), name="recon_nll")
            self.encoder_or_codes = self.encoder
        else:
            terms, step_loss = net.terms(OPS, x_net, eps_net), net.loss_per_example(OPS, x_net, eps_step)
            self.encoder_or_codes = keras.Model(x_in, net.codes(OPS, x_in), name="codes")
        self.net = keras.Model([x_net, eps_step], step_loss, name="vae")  # what training differentiates
        self.terms = keras.Model([x_net, eps_net], keras.ops.stack(list(terms), axis=-1), name="vae_terms")
        self.xla = backend.use_xla() if ENGINE == "tensorflow" else ENGINE == "jax"
        backend.xla_used = self.xla
        for m in (self.net, self.terms, self.encoder_or_codes, self.probs, *([self.nll] if spec.quantizer is None else [])):
            m.compile(jit_compile=self.xla)
        adam_cls = _torch_core_adam() if ENGINE == "torch" else CoreAdam
        self.optimizer = adam_cls(adam.lr, beta_1=adam.beta1, beta_2=adam.beta2, epsilon=adam.eps)
        self.optimizer.build(self.net.trainable_variables)
        self._step = STEPS[ENGINE](self)
        self._wait = engines.waiter(ENGINE, self.device_kind)

    def loss(self, x: Any, eps: Any, training: bool = True) -> Any:
        """The batch-mean -ELBO through the Keras net."""
        return keras.ops.mean(self.net([x, eps], training=training))

    # -- weights and Adam state (arrays arrive and leave in Keras' layout) --
    def _variables(self) -> list[tuple[str, Any]]:
        return self.walk.parameters()

    def _load_weights(self, params: dict[str, np.ndarray]) -> None:
        self._step.pull()
        for key, var in self._variables():
            var.assign(params[key])
        for var in self.optimizer.variables:  # a fresh Adam (step count, moments), without retracing the step
            if not var.path.endswith("learning_rate"):
                var.assign(keras.ops.zeros(var.shape, var.dtype))
        self._step.push()

    def _export_weights(self) -> dict[str, np.ndarray]:
        self._step.pull()
        return {key: keras.ops.convert_to_numpy(var) for key, var in self._variables()}

    def _slots(self) -> list[tuple[str, Any, Any]]:
        """``(canonical name, m, v)``: Adam's slot variables, found with Keras' own lookup."""
        opt = self.optimizer
        indices = [(key, opt._get_variable_index(var)) for key, var in self._variables()]
        return [(key, opt._momentums[i], opt._velocities[i]) for key, i in indices]

    def _export_optimizer_state(self) -> dict[str, np.ndarray]:
        self._step.pull()
        numpy = keras.ops.convert_to_numpy
        return adam_state(numpy(self.optimizer.iterations), ((k, numpy(m), numpy(v)) for k, m, v in self._slots()))

    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None:
        self._step.pull()
        self.optimizer.iterations.assign(int(state["step"]))
        for key, m, v in self._slots():
            m.assign(state[f"{key}/m"])
            v.assign(state[f"{key}/v"])
        self._step.push()

    def _stage(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
        return self._step.stage(x, eps)

    def _train_step(self, x: Any, eps: Any) -> Any:
        return self._step(x, eps)

    def _fetch(self, values: Sequence[Any]) -> np.ndarray:
        return keras.ops.convert_to_numpy(keras.ops.stack(list(values)))

    def _evaluate(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
        self._step.pull()
        out = self.terms.predict_on_batch([x, eps])
        return out[:, 0], out[:, 1], out[:, 2]

    def _encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self._step.pull()
        mean, logvar = self.encoder.predict_on_batch(x)
        return mean, logvar

    def _codes(self, x: np.ndarray) -> np.ndarray:
        self._step.pull()
        return self.encoder_or_codes.predict_on_batch(x)

    def _decode(self, z: np.ndarray) -> np.ndarray:
        self._step.pull()
        return self.probs.predict_on_batch(z)

    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        self._step.pull()
        return self.nll.predict_on_batch([x, z])

    def _synchronize(self) -> None:
        self._wait(self._step.state)

    # -- where the time goes (vaebench explain): the layer or the loss alone, compiled as the step is --
    def _layer_probe(self, info: LayerInfo, kernel: np.ndarray, bias: np.ndarray, x: np.ndarray, grad: np.ndarray) -> dict:
        built: dict[str, Any] = {}
        x_in = keras.Input(info.in_shape)
        net = keras.Model(x_in, walk.layer(self.layers, info, built)(x_in))
        built[info.name].kernel.assign(kernel), built[info.name].bias.assign(bias)
        f, w = self._step.function(net)
        return probes.layer(ENGINE, self.device_kind, f, w, _tensor(x), _tensor(grad), self.xla)

    def _step_probe(self, x: np.ndarray, eps: np.ndarray) -> dict:
        self._step.pull()
        f, w = self._step.function(self.net)
        loss = lambda w, x: keras.ops.mean(f(w, x))  # noqa: E731
        return probes.step(ENGINE, self.device_kind, loss, w, [_tensor(x), _tensor(eps)], self.xla)


class _Step:
    """A compiled step plus how to move state between it and the Keras variables (the defaults: nothing to move)."""

    #: what the step keeps apart from the Keras variables, for the wait (:meth:`KerasModel._synchronize`)
    state: Any = None

    def __init__(self, model: KerasModel) -> None:
        self.model, self.variables = model, model.net.trainable_variables

    def __call__(self, x: Any, eps: Any) -> Any:
        raise NotImplementedError

    def stage(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
        """The batch as the step takes it (on the prefetch thread); NumPy unless the engine gains by converting."""
        return x, eps

    def pull(self) -> None:
        """Make the Keras variables current (only the stateless JAX step keeps state apart)."""

    def push(self) -> None:
        """Hand the Keras variables to the step after they were assigned."""

    def function(self, net: Any) -> tuple[Callable[[Any, Any], Any], list[Any]]:
        """``net`` as ``f(w, x)`` and its weights ``w`` as the step computes it, for explain's probes
        (:mod:`vaebench.plugin.probes`): the engine's own variables, read by the network itself."""
        return (lambda w, x: net(x, training=True)), [v.value for v in net.trainable_variables]


class _TfStep(_Step):
    """``tf.GradientTape`` under one ``tf.function`` (XLA as the backend decided)."""

    def __init__(self, model: KerasModel) -> None:
        import tensorflow as tf

        super().__init__(model)
        self.tf = tf

        @tf.function(jit_compile=model.xla)
        def step(x: Any, eps: Any) -> Any:
            with tf.GradientTape() as tape:
                loss = model.loss(x, eps)
            model.optimizer.apply(tape.gradient(loss, self.variables), self.variables)
            return loss

        self.fn = step

    def __call__(self, x: Any, eps: Any) -> Any:
        return self.fn(x, eps)

    def stage(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
        # Converted on the prefetch thread, off the step's. mlp against the hand-written XLA loop
        # (tests/benchmarks/harness_ratio.py): NumPy into the tf.function 0.87-0.93x at batch 128, tf.constant on the step's
        # thread 0.93x; staged ahead, median of 7 runs 0.970x at 128 and 0.971x at 512 (runs 0.83-1.01x on
        # this noisy machine). The compiled step called on ready tensors ran at 1.00-1.01x.
        return self.tf.constant(x), self.tf.constant(eps)


class _TorchStep(_Step):
    """``loss.backward()`` and Keras' optimizer on torch tensors, eagerly."""

    def __init__(self, model: KerasModel) -> None:
        import torch

        super().__init__(model)
        self.torch = torch

    def __call__(self, x: Any, eps: Any) -> Any:
        model = self.model
        loss = model.loss(keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(eps))
        model.net.zero_grad()
        loss.backward()
        with self.torch.no_grad():
            model.optimizer.apply([v.value.grad for v in self.variables], self.variables)
        return loss.detach()

    def stage(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
        # Keras' convert_to_tensor copies a NumPy array (np.array, then torch.as_tensor): ~0.7 ms of keras-torch's
        # mlp step at batch 128, moved here to the prefetch thread.
        return keras.ops.convert_to_tensor(x), keras.ops.convert_to_tensor(eps)


class _JaxStep(_Step):
    """Keras' stateless API: the state lives in JAX arrays, donated to every step."""

    def __init__(self, model: KerasModel) -> None:
        import jax

        super().__init__(model)
        self.jax = jax
        net, opt = model.net, model.optimizer
        self.vars = (net.trainable_variables, net.non_trainable_variables, opt.variables)

        def step(state: Any, x: Any, eps: Any) -> Any:
            trainable, non_trainable, opt_vars = state

            def loss_fn(trainable: Any) -> Any:
                out, nt = net.stateless_call(trainable, non_trainable, [x, eps], training=True)
                return keras.ops.mean(out), nt

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

    def function(self, net: Any) -> tuple[Callable[[Any, Any], Any], list[Any]]:
        """``net`` as the stateless call the step differentiates, on copies of its weights."""
        jnp = self.jax.numpy
        fixed = [jnp.array(v.value) for v in net.non_trainable_variables]
        return (lambda w, x: net.stateless_call(w, fixed, x, training=True)[0]), [
            jnp.array(v.value) for v in net.trainable_variables
        ]


STEPS: dict[str, type[_Step]] = {"tensorflow": _TfStep, "jax": _JaxStep, "torch": _TorchStep}
