"""Minimal hand-written Flax Linen + Optax training loops: the yardstick for the jax plugin.

What a JAX user would write: Flax modules, one jitted step, params and Adam
state donated, batches already on the device. No vaebench code inside the
step. Each network computes exactly the plugin's function (TensorFlow's 'same'
padding for ``conv``, the symmetric one for ``conv-sym``, (h, w, c)
flattening), which tests/test_yardstick_loops.py checks with shared weights:
:func:`load_canonical` puts the suite's canonical weights into the Flax tree,
:func:`canonical_grads` reads gradients back.

Flax's ``'SAME'`` is TensorFlow's rule for convolutions and transposed
convolutions alike (``lax`` pads a stride-2 3x3 by (0, 1), and the stride-2
transposed one's dilated input by (2, 1), which keeps the first ``2 * in``
pixels of the full output: the spec's crop). ``ConvTranspose`` keeps Flax's
default ``transpose_kernel=False``, a kernel applied to the dilated input as
stored: the transposed convolution of TensorFlow and PyTorch with its kernel
stored spatially flipped, so no step flips it. :func:`load_canonical` flips it
once.

``transpose="subpixel"`` is what a JAX expert does about XLA CPU's slow
transposed-convolution weight gradient: each transposed convolution as one
stride-1 convolution to ``s*s*C`` channels and a depth-to-space. The kernel
rearrangement is the derived one of :mod:`vaebench.model.subpixel` (a helper
of array code, not the plugin); the kernel stays in the canonical
``(kh, kw, in, out)`` layout, unflipped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from vaebench.model.catalogue import get_model
from vaebench.model.subpixel import SubPixel, depth_to_space, subpixel, subpixel_kernel

# TensorFlow's 'same' (conv) and the symmetric rule PyTorch computes natively (conv-sym), as lax paddings:
# a stride-2 3x3 convolution pads its input by one pixel each side; a stride-2 transposed one pads its
# stride-dilated input by kernel - 1 - crop = (1, 2), which is ConvTranspose2d(padding=1, output_padding=1)
SYMMETRIC_DOWN = ((1, 1), (1, 1))
SYMMETRIC_UP = ((1, 2), (1, 2))


class SubPixelConvTranspose(nn.Module):
    """A transposed convolution as one stride-1 convolution and a depth-to-space; kernel ``(kh, kw, in, out)``."""

    features: int
    form: SubPixel

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.form.kernel
        w = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
        b = self.param("bias", nn.initializers.zeros, (self.features,))
        z = lax.conv_general_dilated(
            x, subpixel_kernel(self.form, w, jnp), (1, 1), (self.form.padding,) * 2, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return depth_to_space(z, self.form, jnp) + b


class _VAE(nn.Module):
    """``encode`` / ``decode`` methods over submodules named after the suite's canonical layers
    (``encoder/0`` is ``encoder_0``), so :func:`load_canonical` needs no name table."""

    #: canonical names of the transposed convolutions (their kernels are stored flipped, see the module docstring)
    transposed: ClassVar[tuple[str, ...]] = ()

    def __call__(self, x: jax.Array, eps: jax.Array) -> jax.Array:
        mu, lv = self.encode(x)
        return _loss(self.decode(mu + jnp.exp(0.5 * lv) * eps), x, mu, lv)


class BlogVAE(_VAE):
    """The blog's network ('SAME' is exact here: every conv has stride 1)."""

    latent: int = 2

    def setup(self) -> None:
        conv = lambda f: nn.Conv(f, (3, 3), padding="SAME")  # noqa: E731
        self.encoder_0, self.encoder_1, self.encoder_2, self.encoder_3 = (conv(f) for f in (32, 64, 64, 64))
        self.encoder_5 = nn.Dense(32)
        self.encoder_mean, self.encoder_logvar = nn.Dense(self.latent), nn.Dense(self.latent)
        self.decoder_0 = nn.Dense(28 * 28 * 64)
        self.decoder_2, self.decoder_3, self.decoder_4, self.decoder_5, self.decoder_6 = (conv(f) for f in (64, 64, 64, 32, 1))

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x
        for conv in (self.encoder_0, self.encoder_1, self.encoder_2, self.encoder_3):
            h = conv(h)
        h = nn.relu(self.encoder_5(h.reshape(h.shape[0], -1)))
        return self.encoder_mean(h), self.encoder_logvar(h)

    def decode(self, z: jax.Array) -> jax.Array:
        h = self.decoder_0(z).reshape(-1, 28, 28, 64)
        for conv in (self.decoder_2, self.decoder_3, self.decoder_4, self.decoder_5, self.decoder_6):
            h = conv(h)
        return h


class ConvVAE(_VAE):
    """keras.io's VAE in Flax: stride-2 convolutions and transposed convolutions.

    ``symmetric=False`` (model ``conv``): TensorFlow's 'same', Flax's ``'SAME'``. ``symmetric=True``
    (model ``conv-sym``): PyTorch's ``padding=1`` / ``output_padding=1``, as explicit lax paddings.
    """

    transposed: ClassVar[tuple[str, ...]] = ("decoder/2", "decoder/3", "decoder/4")
    latent: int = 2
    symmetric: bool = False
    subpixel: bool = False  # the transposed convolutions in the sub-pixel form (canonical kernels, not flipped)

    def setup(self) -> None:
        down, up = (SYMMETRIC_DOWN, SYMMETRIC_UP) if self.symmetric else ("SAME", "SAME")
        self.encoder_0 = nn.Conv(32, (3, 3), strides=(2, 2), padding=down)
        self.encoder_1 = nn.Conv(64, (3, 3), strides=(2, 2), padding=down)
        self.encoder_3 = nn.Dense(16)
        self.encoder_mean, self.encoder_logvar = nn.Dense(self.latent), nn.Dense(self.latent)
        self.decoder_0 = nn.Dense(7 * 7 * 64)
        if self.subpixel:
            infos = {i.name: i for i in get_model("conv-sym" if self.symmetric else "conv").spec.decoder_layers()}
            self.decoder_2 = SubPixelConvTranspose(64, subpixel(infos["decoder/2"]))
            self.decoder_3 = SubPixelConvTranspose(32, subpixel(infos["decoder/3"]))
            self.decoder_4 = SubPixelConvTranspose(1, subpixel(infos["decoder/4"]))
            return
        self.decoder_2 = nn.ConvTranspose(64, (3, 3), strides=(2, 2), padding=up)
        self.decoder_3 = nn.ConvTranspose(32, (3, 3), strides=(2, 2), padding=up)
        self.decoder_4 = nn.ConvTranspose(1, (3, 3), padding="SAME")  # stride 1: (1, 1) under both rules

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.relu(self.encoder_1(nn.relu(self.encoder_0(x))))
        h = nn.relu(self.encoder_3(h.reshape(h.shape[0], -1)))
        return self.encoder_mean(h), self.encoder_logvar(h)

    def decode(self, z: jax.Array) -> jax.Array:
        h = nn.relu(self.decoder_0(z)).reshape(-1, 7, 7, 64)
        return self.decoder_4(nn.relu(self.decoder_3(nn.relu(self.decoder_2(h)))))


class MlpVAE(_VAE):
    """pytorch/examples' VAE in Flax."""

    latent: int = 20

    def setup(self) -> None:
        self.encoder_1 = nn.Dense(400)
        self.encoder_mean, self.encoder_logvar = nn.Dense(self.latent), nn.Dense(self.latent)
        self.decoder_0, self.decoder_1 = nn.Dense(400), nn.Dense(784)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = nn.relu(self.encoder_1(x.reshape(x.shape[0], -1)))
        return self.encoder_mean(h), self.encoder_logvar(h)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder_1(nn.relu(self.decoder_0(z)))


class IwaeMlpVAE(_VAE):
    """Burda et al.'s one-stochastic-layer network: 784-200-200-50, tanh, in Flax."""

    latent: int = 50

    def setup(self) -> None:
        self.encoder_1, self.encoder_2 = nn.Dense(200), nn.Dense(200)
        self.encoder_mean, self.encoder_logvar = nn.Dense(self.latent), nn.Dense(self.latent)
        self.decoder_0, self.decoder_1, self.decoder_2 = nn.Dense(200), nn.Dense(200), nn.Dense(784)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = jnp.tanh(self.encoder_2(jnp.tanh(self.encoder_1(x.reshape(x.shape[0], -1)))))
        return self.encoder_mean(h), self.encoder_logvar(h)

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder_2(jnp.tanh(self.decoder_1(jnp.tanh(self.decoder_0(z)))))


def _loss(logits: jax.Array, x: jax.Array, mu: jax.Array, lv: jax.Array) -> jax.Array:
    bce = optax.sigmoid_binary_cross_entropy(logits.reshape(x.shape[0], -1), x.reshape(x.shape[0], -1)).sum(-1)
    kl = -0.5 * jnp.sum(1 + lv - mu**2 - jnp.exp(lv), axis=-1)
    return jnp.mean(bce + kl)


BUILDERS: dict[str, Callable[[], _VAE]] = {
    "blog": BlogVAE,
    "conv": ConvVAE,
    "conv-sym": lambda: ConvVAE(symmetric=True),
    "mlp": MlpVAE,
    "iwae-mlp": IwaeMlpVAE,
}


#: the models with transposed convolutions, the only ones ``transpose="subpixel"`` changes
TRANSPOSED = ("conv", "conv-sym")


def build(model_name: str, transpose: str = "lax") -> _VAE:
    """The named network (``conv`` with TF 'same' padding, ``conv-sym`` with the symmetric one); ``transpose``:
    ``lax`` (Flax's ConvTranspose) or ``subpixel`` (:class:`SubPixelConvTranspose`, models with transposed convs)."""
    if transpose not in ("lax", "subpixel") or (transpose == "subpixel" and model_name not in TRANSPOSED):
        raise ValueError(f"transpose={transpose!r} is not a form of {model_name!r}")
    if transpose == "subpixel":
        return ConvVAE(symmetric=model_name == "conv-sym", subpixel=True)
    return BUILDERS[model_name]()


def _flipped(model: _VAE) -> tuple[str, ...]:
    """The layers whose Flax kernels are the canonical ones spatially flipped (none in the sub-pixel form)."""
    return () if getattr(model, "subpixel", False) else model.transposed


def _flip(kernel: Any, transposed: bool) -> Any:
    return kernel[::-1, ::-1] if transposed else kernel


def load_canonical(model: _VAE, params: dict[str, Any]) -> dict[str, Any]:
    """The Flax variables of ``model`` holding the suite's canonical weights (kernels ``(in, out)`` /
    ``(kh, kw, in, out)``: Flax's own layouts, but for the transposed kernels, stored flipped here)."""
    tree: dict[str, dict[str, Any]] = {}
    for key, value in params.items():
        layer, kind = key.rsplit("/", 1)
        array = _flip(np.asarray(value), kind == "kernel" and layer in _flipped(model))
        tree.setdefault(layer.replace("/", "_"), {})[kind] = jnp.asarray(np.ascontiguousarray(array))
    return {"params": tree}


def canonical_grads(model: _VAE, grads: dict[str, Any]) -> dict[str, np.ndarray]:
    """Gradients in the Flax tree of ``model`` (as :func:`jax.grad` of ``model.apply`` gives them) under
    canonical names and layouts (NumPy)."""
    out = {}
    for flax_name, leaves in grads["params"].items():
        layer = flax_name.replace("_", "/")
        for kind, g in leaves.items():
            out[f"{layer}/{kind}"] = np.ascontiguousarray(_flip(np.asarray(g), kind == "kernel" and layer in _flipped(model)))
    return out


def make_step(
    model_name: str, batches: list[tuple[Any, Any]], params: dict[str, Any] | None = None, transpose: str = "lax"
) -> tuple[Any, Any]:
    """``(step, sync)`` cycling through ``batches`` (NumPy ``x, eps`` pairs) put on the device once, up front:
    the loop's best case, with a new buffer every step as in training. ``params`` (canonical names and
    layouts) are the starting weights, so plugin and yardstick train from the same point; without them, Flax's init.
    ``transpose``: see :func:`build`."""
    model = build(model_name, transpose)
    on_device = [(jnp.asarray(x), jnp.asarray(eps)) for x, eps in batches]
    data = itertools.cycle(on_device)
    variables = load_canonical(model, params) if params is not None else model.init(jax.random.key(0), *on_device[0])
    tx = optax.adam(1e-3, b1=0.9, b2=0.999, eps=1e-8)
    state = [variables, tx.init(variables)]

    def _inner(variables, opt_state, x, eps):
        loss, grads = jax.value_and_grad(model.apply)(variables, x, eps)
        updates, opt_state = tx.update(grads, opt_state, variables)
        return optax.apply_updates(variables, updates), opt_state, loss

    jitted = jax.jit(_inner, donate_argnums=(0, 1))

    def step() -> jax.Array:
        state[0], state[1], loss = jitted(state[0], state[1], *next(data))
        return loss

    step.num_params = sum(leaf.size for leaf in jax.tree.leaves(variables))  # type: ignore[attr-defined]
    return step, jax.block_until_ready
