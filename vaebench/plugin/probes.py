"""``vaebench explain``'s probes, written once per engine: a plugin hands over a function, the core differentiates it.

The torch and keras-torch plugins both called ``torch.autograd.grad`` the same way, the jax and keras-jax plugins
both wrote the same three ``jax.jit`` s of ``jax.vjp``, and every plugin wrapped each probe in the same "block until
ready". Here is the one copy per engine. A plugin passes ``f(w, x)``, the layer (or the loss) as its step computes
it, with ``w`` the framework's weights and ``x`` its input already in the framework's arrays and layout, and gets the
callables :meth:`~vaebench.plugin.contract.Model.layer_probe` and ``step_probe`` return. Each probe builds its graph
once, here, and a call runs only the framework's work and the wait for it: nothing is added inside a step.

How each engine compiles is the plugin's step's: jax always ``jax.jit``; TensorFlow ``tf.function`` with XLA as the
step has it (``xla``); torch as ``f`` comes (the plugin passes a ``torch.compile``-d ``f`` when its step is one).
Like :mod:`vaebench.plugin.engines`, this imports the engine only when a plugin (which has imported it) asks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vaebench.plugin import engines
from vaebench.plugin.contract import LAYER_PROBES, STEP_PROBES

Probe = Callable[[], Any]


def _torch(torch: Any, f: Callable, w: Any, x: Any, g: Any, xla: bool) -> tuple[Probe, ...]:
    if g is None:
        return (lambda: f(w, x)), (lambda: torch.autograd.grad(f(w, x), w))
    x = x.detach().requires_grad_(True)
    return (lambda: f(w, x)), (lambda: torch.autograd.grad(f(w, x), x, g)), (lambda: torch.autograd.grad(f(w, x), w, g))


def _jax(jax: Any, f: Callable, w: Any, x: Any, g: Any, xla: bool) -> tuple[Probe, ...]:
    forward = jax.jit(f)
    if g is None:
        grads = jax.jit(jax.value_and_grad(f))
        return (lambda: forward(w, x)), (lambda: grads(w, x))
    to_input = jax.jit(lambda w, x, g: jax.vjp(lambda x: f(w, x), x)[1](g)[0])
    to_weights = jax.jit(lambda w, x, g: jax.vjp(lambda w: f(w, x), w)[1](g)[0])
    return (lambda: forward(w, x)), (lambda: to_input(w, x, g)), (lambda: to_weights(w, x, g))


def _tensorflow(tf: Any, f: Callable, w: Any, x: Any, g: Any, xla: bool) -> tuple[Probe, ...]:
    # the weights are captured, not passed: the tape must see the very variables the network reads
    forward = tf.function(lambda x: f(w, x), jit_compile=xla)

    def gradient(to_input: bool) -> Probe:
        @tf.function(jit_compile=xla)
        def fn(x: Any, g: Any) -> Any:
            with tf.GradientTape() as tape:
                if g is not None:  # a layer's probes watch their input, the loss's do not
                    tape.watch(x)
                y = f(w, x)
            return tape.gradient(y, x if to_input else w, output_gradients=g)

        return lambda: fn(x, g)

    return (lambda: forward(x)), *((gradient(False),) if g is None else (gradient(True), gradient(False)))


_ENGINES = {"torch": _torch, "jax": _jax, "tensorflow": _tensorflow}


def _probes(engine: str, device: str, keys: tuple[str, ...], f: Callable, w: Any, x: Any, g: Any, xla: bool) -> dict[str, Probe]:
    wait = engines.waiter(engine, device)

    def ready(fn: Probe) -> Probe:
        def call() -> Any:
            out = fn()
            wait(out)
            return out

        return call

    built = _ENGINES[engine](engines.module(engine), f, w, x, g, xla)
    return {key: ready(fn) for key, fn in zip(keys, built, strict=True)}


def layer(engine: str, device: str, f: Callable[[Any, Any], Any], w: Any, x: Any, g: Any, xla: bool = False) -> dict[str, Probe]:
    """:data:`LAYER_PROBES` of one layer ``f(w, x) -> y`` on ``engine``: its forward pass, and the forward pass with
    the gradient (cotangent ``g`` of ``y``) to ``x`` or to ``w``; each call blocks until its result is ready."""
    return _probes(engine, device, LAYER_PROBES, f, w, x, g, xla)


def step(engine: str, device: str, loss: Callable[[Any, Any], Any], w: Any, x: Any, xla: bool = False) -> dict[str, Probe]:
    """:data:`STEP_PROBES` of the batch-mean loss ``loss(w, x)``: the loss alone, and with every weight's gradient."""
    return _probes(engine, device, STEP_PROBES, loss, w, x, None, xla)
