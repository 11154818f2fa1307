"""The backend contract: what a plugin translates, documented once, here.

A plugin provides a :class:`Backend` subclass (registered under the entry-point
group ``vaebench.backends``) whose :meth:`Backend.build` returns a
:class:`Model`. Everything crosses the boundary as NumPy:

* images ``x``: ``(batch, 28, 28, 1)`` float32 in ``[0, 1]`` (channels-last);
* noise ``eps``: ``(batch, latent_dim)`` float32 standard normal, drawn by the
  core so every backend sees the same reparameterisation noise;
* latent points ``z``: ``(n, latent_dim)`` float32;
* parameters: the canonical dict of :mod:`vaebench.model.weights`.

A model with a vector-quantised bottleneck (``spec.bottleneck == "vq"``) draws
no noise (``eps`` is ``(batch, 0)``), its latents ``z`` are quantised maps
``(n, *spec.latent_shape)``, :meth:`Model.evaluate` returns its
:class:`~vaebench.model.ops.VQTerms` and :meth:`Model.codes` its codes; it has
no Gaussian posterior, so :meth:`Model.encode` and :meth:`Model.recon_nll` refuse.

The public methods of :class:`Model` check shapes and dtypes (so a wrong input
is the core's :class:`~vaebench.errors.ShapeError`, never a framework
traceback) and call the ``_``-prefixed hooks a plugin implements. The maths a
plugin runs (reparameterisation, the loss) comes from :mod:`vaebench.model.loss`,
written once on the tiny :class:`Ops` namespace each plugin supplies.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from vaebench.errors import BackendError, ShapeError
from vaebench.model.config import AdamConfig
from vaebench.model.layers import LayerInfo, ModelSpec
from vaebench.model.layouts import Layout, convert, kernel_permutations
from vaebench.model.ops import LossTerms, VQTerms
from vaebench.model.weights import Params, check_params
from vaebench.plugin.environment import Environment

#: what :meth:`Model.layer_probe` returns, in this order
LAYER_PROBES = ("forward", "forward+grad_input", "forward+grad_weights")
#: what :meth:`Model.step_probe` returns
STEP_PROBES = ("forward", "forward+backward")


def _check(name: str, array: Any, shape: tuple[int | None, ...]) -> np.ndarray:
    if not isinstance(array, np.ndarray):
        raise ShapeError(f"{name} must be a NumPy array, got {type(array).__name__}")
    if array.dtype != np.float32:
        raise ShapeError(f"{name} must be float32, got {array.dtype}")
    if array.ndim != len(shape) or any(want is not None and got != want for got, want in zip(array.shape, shape, strict=True)):
        wanted = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise ShapeError(f"{name} has shape {array.shape}, expected {wanted}")
    return array


class Model(abc.ABC):
    """One VAE built by a backend from a :class:`ModelSpec`, with its Adam state."""

    #: The precision the backend holds its weights and Adam state in; checkpoints keep it.
    state_dtype: ClassVar[type] = np.float32
    #: How the framework lays out kernels (:mod:`vaebench.model.layouts`); the hooks see that layout.
    layout: ClassVar[Layout] = {}
    #: Where the model runs (``cpu`` or ``cuda``) and the array library under it (``torch``, ``jax``,
    #: ``tensorflow``, ``numpy``): what the core needs to ask about device memory.
    device_kind: str = "cpu"
    engine: str = "numpy"

    def __init__(self, spec: ModelSpec, adam: AdamConfig) -> None:
        self.spec = spec
        self.adam = adam
        self._perms = kernel_permutations(self.layout, spec)

    def _check_x(self, x: np.ndarray) -> np.ndarray:
        return _check("images x", x, (None, *self.spec.input_shape))

    def _check_xe(self, x: np.ndarray, eps: np.ndarray, train: bool = False) -> None:
        self._check_x(x)
        _check("noise eps", eps, (x.shape[0], *(self.spec.noise_shape if train else (self.spec.noise_dim,))))

    def _gaussian(self, what: str) -> None:
        if self.spec.quantizer is not None:
            raise BackendError(f"model {self.spec.name!r} has a vector-quantised bottleneck, no Gaussian posterior: no {what}")

    # -- weights ---------------------------------------------------------
    def load_weights(self, params: Mapping[str, np.ndarray]) -> None:
        """Replace all parameters with canonical ``params`` and reset Adam's state."""
        check_params(self.spec, params)
        self._load_weights(convert(self._perms, {k: np.asarray(v, self.state_dtype) for k, v in params.items()}, False))

    def export_weights(self, exact: bool = False) -> Params:
        """Current parameters as canonical float32 NumPy arrays (copies).

        ``exact=True`` keeps the backend's own precision (:attr:`state_dtype`),
        which is what a checkpoint needs to resume bit for bit.
        """
        params = convert(self._perms, self._export_weights(), to_canonical=True)
        check_params(self.spec, params)
        dtype = self.state_dtype if exact else np.float32
        return {k: np.array(v, dtype) for k, v in params.items()}  # copies: never alias live weights

    def export_optimizer_state(self, exact: bool = False) -> dict[str, np.ndarray]:
        """Adam's state, canonically: ``step`` (number of updates so far, a 0-d array) and, for
        every parameter ``p``, ``p/m`` and ``p/v`` (first and second moments, in ``p``'s canonical layout).

        With :meth:`load_optimizer_state` this lets a run resume bit-for-bit and
        move between backends mid-training.
        """
        state = convert(self._perms, self._export_optimizer_state(), to_canonical=True)
        self._check_optimizer_state(state)
        dtype = self.state_dtype if exact else np.float32
        return {k: np.array(v, dtype) for k, v in state.items()}

    def load_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        """Replace Adam's state with one from :meth:`export_optimizer_state` (any backend's)."""
        self._check_optimizer_state(state)
        state = {k: np.asarray(v, self.state_dtype) for k, v in state.items()}
        self._load_optimizer_state(convert(self._perms, state, to_canonical=False))

    def _check_optimizer_state(self, state: Mapping[str, np.ndarray]) -> None:
        shapes = {"step": ()} | {f"{k}/{s}": v for k, v in self.spec.param_shapes().items() for s in ("m", "v")}
        if set(state) != set(shapes) or any(tuple(np.shape(state[k])) != shape for k, shape in shapes.items()):
            raise ShapeError(f"optimizer state does not fit model {self.spec.name!r}")

    # -- training --------------------------------------------------------
    def train_step(self, x: np.ndarray, eps: np.ndarray) -> Any:
        """One Adam step on the batch mean of the -ELBO of ``x`` with noise ``eps``.

        Returns the batch-mean -ELBO *before* the update as a framework scalar
        left on the device: reading it would synchronise, so the runner reads
        many at once through :meth:`fetch`.
        """
        return self.train_staged(self.stage(x, eps))

    def stage(self, x: np.ndarray, eps: np.ndarray) -> Any:
        """The batch checked and taken into the framework, for :meth:`train_staged`.

        Split from the step so the runner can stage batch n+1 on a background
        thread while step n runs (:mod:`vaebench.run.prefetch`), as ``tf.data`` or a
        ``DataLoader`` would in a hand-written loop. Thread-safe by contract: it
        must not touch the model's state.
        """
        self._check_xe(x, eps, train=True)
        return self._stage(x, eps)

    def train_staged(self, staged: Any) -> Any:
        """:meth:`train_step` on what :meth:`stage` returned."""
        return self._train_step(*staged)

    def _stage(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
        """Framework arrays for ``_train_step``; by default the NumPy arrays themselves."""
        return x, eps

    def fetch(self, values: Sequence[Any]) -> np.ndarray:
        """Host float64 copies of scalars returned by :meth:`train_step` (synchronises)."""
        if not values:
            return np.zeros(0)
        return np.asarray(self._fetch(values), np.float64).reshape(len(values))

    # -- inference -------------------------------------------------------
    def evaluate(self, x: np.ndarray, eps: np.ndarray) -> LossTerms | VQTerms:
        """Per-example -ELBO, reconstruction and KL in nats, ``(batch,)`` float32 each; a VQ model's
        :class:`~vaebench.model.ops.VQTerms` (loss, reconstruction, codebook and commitment).

        Uses ``z = mean + exp(logvar / 2) * eps``; weights are not changed.
        """
        self._check_xe(x, eps)
        kind = VQTerms if self.spec.quantizer is not None else LossTerms
        return kind(*(np.asarray(t, np.float32) for t in self._evaluate(x, eps)))

    def encode(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior ``(mean, logvar)`` of ``x``, each ``(batch, latent_dim)`` float32."""
        self._gaussian("encode")
        self._check_x(x)
        mean, logvar = self._encode(x)
        return np.asarray(mean, np.float32), np.asarray(logvar, np.float32)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """A VQ model's nearest code for each position of ``x``'s latent map: ``(batch, h, w)`` int64."""
        if self.spec.quantizer is None:
            raise BackendError(f"model {self.spec.name!r} has a Gaussian bottleneck: it has no codes")
        self._check_x(x)
        return np.asarray(self._codes(x), np.int64).reshape(len(x), *self.spec.latent_shape[:-1])

    def recon_nll(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``-log p(x | z)`` in nats for each pair ``(x[i], z[i])``: ``(n,)`` float32.

        The building block of importance-weighted likelihoods (:mod:`vaebench.run.evaluation`).
        """
        self._gaussian("likelihood")
        self._check_x(x)
        _check("latent z", z, (x.shape[0], self.spec.latent_dim))
        return np.asarray(self._recon_nll(x, z), np.float32)

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Pixel probabilities ``sigmoid(logits)`` of ``z``: ``(n, 28, 28, 1)`` float32. A VQ model's ``z`` are
        quantised maps ``(n, *spec.latent_shape)``, and it returns its reconstruction in pixel space (unclipped)."""
        _check("latent z", z, (None, *self.spec.latent_shape))
        return np.asarray(self._decode(z.reshape(len(z), -1)), np.float32)

    def synchronize(self) -> None:
        """Block until all work queued on the device has finished (for timing)."""
        self._synchronize()

    def peak_device_memory_mb(self) -> float | None:
        """Peak accelerator memory the framework allocated so far, in MiB; ``None`` on a CPU.

        Process RSS is the memory figure on a CPU; on a GPU the allocator's own
        peak is the one that decides whether a batch size fits, so bench reports both.
        The plugin says where it runs (:attr:`device_kind`) and on which engine
        (:attr:`engine`); the query itself is the core's (:func:`vaebench.plugin.engines.peak_gpu_memory_mb`).
        """
        if self.device_kind != "cuda":
            return None
        from vaebench.plugin.engines import peak_gpu_memory_mb

        return peak_gpu_memory_mb(self.engine)

    # -- where the time goes (vaebench explain) ------------------------------
    def layer_probe(
        self, info: LayerInfo, params: Mapping[str, np.ndarray], x: np.ndarray, grad: np.ndarray
    ) -> dict[str, Callable[[], Any]]:
        """Callables that run one spec layer alone, each once per call and blocking until its result is ready.

        ``info`` is a layer with weights, ``params`` its canonical ``kernel`` and
        ``bias``, ``x`` its input ``(batch, *info.in_shape)`` and ``grad`` a
        cotangent of its output ``(batch, *info.out_shape)``, both channels-last.
        The keys are :data:`LAYER_PROBES`: the layer's forward pass (its
        activation included), and the forward pass followed by the gradient to
        the input or to the weights, each compiled the way the plugin compiles
        its step. The core times them and takes differences
        (:mod:`vaebench.measure.explain`), so a plugin only translates.
        """
        perms = {k: v for k, v in self._perms.items() if k.startswith(f"{info.name}/")}
        kernel, bias = (convert(perms, dict(params), False)[f"{info.name}/{p}"] for p in ("kernel", "bias"))
        probes = self._layer_probe(info, np.asarray(kernel, np.float32), np.asarray(bias, np.float32), x, grad)
        return self._probes(probes, LAYER_PROBES)

    def step_probe(self, x: np.ndarray, eps: np.ndarray) -> dict[str, Callable[[], Any]]:
        """Callables for the whole network at the current weights, each blocking: the loss alone (``forward``)
        and the loss with every parameter's gradient (``forward+backward``), no update (:data:`STEP_PROBES`)."""
        self._check_xe(x, eps, train=True)
        return self._probes(self._step_probe(x, eps), STEP_PROBES)

    def _probes(self, probes: Mapping[str, Callable[[], Any]], keys: tuple[str, ...]) -> dict[str, Callable[[], Any]]:
        if set(probes) != set(keys):
            raise BackendError(f"{type(self).__name__}: probes must be {', '.join(keys)}, got {', '.join(sorted(probes))}")
        return {k: probes[k] for k in keys}

    def _layer_probe(
        self, info: LayerInfo, kernel: np.ndarray, bias: np.ndarray, x: np.ndarray, grad: np.ndarray
    ) -> Mapping[str, Callable[[], Any]]:
        """The plugin's :meth:`layer_probe` with the layer's weights already in its layout."""
        raise BackendError(f"{type(self).__name__} cannot time single layers, so `vaebench explain` cannot use it")

    def _step_probe(self, x: np.ndarray, eps: np.ndarray) -> Mapping[str, Callable[[], Any]]:
        """The plugin's :meth:`step_probe`."""
        raise BackendError(f"{type(self).__name__} cannot time the loss apart from its step, so `vaebench explain` cannot use it")

    # -- what a plugin implements ------------------------------------------
    @abc.abstractmethod
    def _load_weights(self, params: Params) -> None: ...

    @abc.abstractmethod
    def _export_weights(self) -> Params: ...

    @abc.abstractmethod
    def _export_optimizer_state(self) -> dict[str, np.ndarray]: ...

    @abc.abstractmethod
    def _load_optimizer_state(self, state: dict[str, np.ndarray]) -> None: ...

    @abc.abstractmethod
    def _train_step(self, x: Any, eps: Any) -> Any:
        """One Adam step on a batch from ``_stage`` (NumPy unless the plugin stages); returns the loss."""

    @abc.abstractmethod
    def _fetch(self, values: Sequence[Any]) -> Any: ...

    @abc.abstractmethod
    def _evaluate(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any, Any]: ...

    @abc.abstractmethod
    def _encode(self, x: np.ndarray) -> tuple[Any, Any]: ...

    @abc.abstractmethod
    def _decode(self, z: np.ndarray) -> Any: ...

    @abc.abstractmethod
    def _recon_nll(self, x: np.ndarray, z: np.ndarray) -> Any: ...

    @abc.abstractmethod
    def _synchronize(self) -> None: ...

    def _codes(self, x: np.ndarray) -> Any:
        """A VQ model's codes, ``(batch * h * w,)`` integers, in the framework (``walk.Network.codes``)."""
        raise BackendError(f"{type(self).__name__} cannot run a vector-quantised model: it has no _codes")


class Backend(abc.ABC):
    """A framework plugin: resolves a device, reports its environment, builds models.

    Constructed with the run's ``device`` (``auto``, ``cpu`` or ``cuda``),
    ``threads`` (intra-op threads; ``None`` leaves the framework's choice),
    ``compile`` (the plugin's optional graph compilation), ``options``
    (plugin-specific ``key=value`` settings, checked against :attr:`option_values`)
    and ``precision`` (the core's float32 policy, :data:`vaebench.plugin.profiles.PRECISIONS`:
    ``fp32`` strict, or ``tf32`` where a GPU offers it; every plugin must apply it
    to its framework and report it as ``environment()["precision"]``).
    Constructing it may import the framework; registering it must not.

    :attr:`tunables` lists the settings ``--profile best`` may try, each with
    its candidate values (``"compile"`` stands for ``--compile``): the core
    measures every combination on the machine at hand and keeps the fastest
    (:mod:`vaebench.plugin.profiles`), so no plugin hard-codes which is faster.
    """

    name: ClassVar[str]
    #: every ``-o`` option with its allowed values, the default first: a plugin declares this one table and
    #: :attr:`option_defaults` and :attr:`option_values` are read from it (a plugin may still set those two instead)
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}
    option_defaults: ClassVar[dict[str, str]] = {}
    option_values: ClassVar[dict[str, tuple[str, ...]]] = {}
    tunables: ClassVar[dict[str, tuple[str, ...]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "choices" in vars(cls):
            cls.option_defaults = {key: values[0] for key, values in cls.choices.items()}
            cls.option_values = dict(cls.choices)

    def __init__(
        self,
        device: str = "auto",
        threads: int | None = None,
        compile: bool = False,
        options: Mapping[str, str] | None = None,
        precision: str = "fp32",
    ) -> None:
        from vaebench.plugin.profiles import PRECISIONS

        self.device = device
        self.threads = threads
        self.compile = compile
        if precision not in PRECISIONS:
            raise BackendError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self.options = self.checked_options(options)

    @classmethod
    def checked_options(cls, options: Mapping[str, str] | None) -> dict[str, str]:
        """``options`` over :attr:`option_defaults`, each key declared and each value allowed, or a :class:`BackendError`.

        A class method, so that a sweep's plan checks every run's ``-o`` before
        any starts, without constructing (and importing) the framework: the one
        rule the constructor applies too.
        """
        unknown = sorted(set(options or {}) - set(cls.option_defaults))
        if unknown:
            known = ", ".join(f"{k} (default {v})" for k, v in cls.option_defaults.items()) or "none"
            raise BackendError(f"backend {cls.name!r} has no option {unknown[0]!r}; its options: {known}")
        merged = {**cls.option_defaults, **(options or {})}
        for key, allowed in cls.option_values.items():
            if merged[key] not in allowed:
                raise BackendError(f"{cls.name} option {key} must be one of {', '.join(allowed)}, got {merged[key]!r}")
        return merged

    def resolved_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """``options`` with every value that is a rule (Keras' ``xla=auto``) replaced by what it means on this
        backend's device: how the tuning table finds which candidate ``--profile default`` runs. Values pass as given.
        """
        return dict(options)

    def environment(self) -> dict[str, Any]:
        """Framework versions, the device used and its name, thread count, settings: the same keys for every plugin."""
        env = self._environment()
        if not isinstance(env, Environment):
            raise BackendError(f"backend {self.name!r}: _environment() must return vaebench.plugin.environment.Environment")
        return env.to_dict()

    @abc.abstractmethod
    def _environment(self) -> Environment:
        """The plugin's facts, filled into the core's :class:`~vaebench.plugin.environment.Environment`."""

    @abc.abstractmethod
    def build(self, spec: ModelSpec, adam: AdamConfig) -> Model:
        """A :class:`Model` of ``spec`` with Adam ``adam``; load weights before use."""
