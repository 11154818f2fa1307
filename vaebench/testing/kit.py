"""A conformance kit: the contract's checks, run against any backend.

A plugin's test module subclasses :class:`BackendTests` and overrides the
``backend`` fixture; pytest then runs every check below against it::

    class TestTorch(BackendTests):
        @pytest.fixture
        def backend(self):
            return TorchBackend(device="cpu")

Tolerances are class attributes a plugin may tighten (never needs to loosen
for float32 on CPU). The checks compare against :mod:`vaebench.model.reference`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import final

import numpy as np
import pytest

from vaebench.errors import BackendError, ShapeError
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.layers import ModelSpec
from vaebench.model.loss import Objective
from vaebench.model.ops import VQTerms
from vaebench.model.reference import adam_step, decode_logits, decode_pixels, loss_and_grads
from vaebench.model.reference import encode as ref_encode
from vaebench.model.reference import evaluate as ref_evaluate
from vaebench.model.reference import recon_nll as ref_recon_nll
from vaebench.model.reference import vq_evaluate as ref_vq_evaluate
from vaebench.model.weights import init_params
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.environment import PRECISION_SETTINGS, Environment
from vaebench.run.evaluation import grid_points
from vaebench.run.prefetch import Prefetcher

#: a user's own models (``package.module:factory`` or ``vaebench.models`` entry-point names, comma-separated) the
#: kit checks beside the catalogue's, on whichever backend's tests run: ``VAEBENCH_KIT_MODELS=my_vae:make pytest ...``
USER_MODELS = tuple(name for name in os.environ.get("VAEBENCH_KIT_MODELS", "").split(",") if name)
# conv-sym: the spec's symmetric paddings, native in every framework; iwae-mlp: tanh
MODEL_NAMES = ("mlp", "conv", "blog", "conv-sym", "iwae-mlp", *USER_MODELS)
# the models a train step is checked on (blog: slow in float64, conv's layers)
STEP_MODELS = ("mlp", "conv", "conv-sym", "iwae-mlp", *USER_MODELS)
# the models with a vector-quantised bottleneck: no posterior, so checked by their own tests (codes, VQ terms)
VQ_MODELS = ("vqvae",)


def perturbed_params(name: str, seed: int = 0, latent_dim: int | None = None) -> dict[str, np.ndarray]:
    """Canonical weights with non-zero biases, so bias layouts are checked too."""
    params = init_params(get_model(name).spec.with_latent(latent_dim), seed)
    gen = np.random.default_rng(seed)
    return {k: (v + gen.normal(0, 0.05, v.shape).astype(np.float32)) if k.endswith("bias") else v for k, v in params.items()}


def sample_inputs(latent_dim: int, n: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed batch of images in [0, 1] and noise."""
    gen = np.random.default_rng(seed)
    return gen.random((n, 28, 28, 1), dtype=np.float32), gen.standard_normal((n, latent_dim), dtype=np.float32)


def assert_same_function(
    make: Callable[[dict[str, str]], Backend], name: str, default: dict[str, str], variant: dict[str, str]
) -> None:
    """A variant a profile may pick (another formulation of a layer, say) computes the default's function.

    ``make(options)`` builds the backend. Both get the same canonical weights and
    batch: the decoded probabilities must agree, and so must every gradient of
    one training step, read through the contract (after one Adam step from zero
    state, ``m = (1 - beta1) * g``).
    """
    spec = get_model(name).spec
    params = perturbed_params(name)
    x, eps = sample_inputs(spec.latent_dim, n=4)
    adam, out = AdamConfig(), []
    for options in (default, variant):
        model = make(options).build(spec, adam)
        model.load_weights(params)
        probs = model.decode(eps)
        model.fetch([model.train_step(x, eps)])
        state = model.export_optimizer_state()
        out.append((probs, {k: state[f"{k}/m"] / (1 - adam.beta1) for k in params}))
    np.testing.assert_allclose(out[1][0], out[0][0], rtol=1e-5, atol=1e-6, err_msg="decoded probabilities")
    for key, g in out[0][1].items():
        scale = float(np.abs(g).max()) or 1.0
        np.testing.assert_allclose(out[1][1][key], g, rtol=1e-4, atol=1e-4 * scale, err_msg=f"gradient {key}")


class BackendTests:
    """Every check of the contract. Subclass and override :meth:`backend`.

    The checks are ``@final``: a plugin may tighten the tolerances (class
    attributes) and add tests of its own, but overriding a check would let it
    pass the kit without meeting the contract, so defining one in a subclass is
    an error when the module is collected. Checks that need what this machine
    may lack (a GPU, a plugin's compile mode) skip with the reason, never
    silently.
    """

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for name, member in vars(BackendTests).items():
            if getattr(member, "__final__", False) and name in vars(cls):
                raise TypeError(
                    f"{cls.__name__}.{name} overrides a conformance check, which is final; "
                    "tighten a tolerance attribute or add a test of your own instead"
                )

    rtol = 1e-4  # relative tolerance of float32 forward values against the float64 reference
    atol_probs = 1e-5  # absolute tolerance of decoded probabilities
    step_atol = 1e-6  # parameters after one Adam step (lr 1e-3), where the gradient is above grad_noise
    grad_noise = 1e-5  # gradients smaller than this may change sign in float32

    @pytest.fixture
    def backend(self) -> Backend:
        raise NotImplementedError("override the `backend` fixture to return your Backend instance")

    def build(self, backend: Backend, name: str, seed: int = 0) -> Model:
        model = backend.build(get_model(name).spec, AdamConfig())
        model.load_weights(perturbed_params(name, seed))
        return model

    @final
    @pytest.mark.parametrize("name", MODEL_NAMES)
    def test_forward_matches_reference(self, backend, name):
        spec = get_model(name).spec
        params = perturbed_params(name)
        model = self.build(backend, name)
        x, eps = sample_inputs(spec.latent_dim)
        for got, want in zip(model.evaluate(x, eps), ref_evaluate(spec, params, x, eps), strict=True):
            assert got.dtype == np.float32 and got.shape == (len(x),)
            np.testing.assert_allclose(got, want, rtol=self.rtol)
        mean, logvar = model.encode(x)
        ref_mean, ref_logvar = ref_encode(spec, params, x)
        scale = np.abs(ref_mean).max() + np.abs(ref_logvar).max()
        np.testing.assert_allclose(mean, ref_mean, atol=self.rtol * scale)
        np.testing.assert_allclose(logvar, ref_logvar, atol=self.rtol * scale)
        probs = model.decode(eps)
        assert probs.shape == (len(x), 28, 28, 1)
        np.testing.assert_allclose(probs, 1 / (1 + np.exp(-decode_logits(spec, params, eps))), atol=self.atol_probs)

    @final
    @pytest.mark.parametrize("name", STEP_MODELS)
    def test_recon_nll_matches_reference(self, backend, name):
        spec = get_model(name).spec
        model = self.build(backend, name)
        x, z = sample_inputs(spec.latent_dim)
        np.testing.assert_allclose(model.recon_nll(x, z), ref_recon_nll(spec, perturbed_params(name), x, z), rtol=self.rtol)

    @final
    @pytest.mark.parametrize("name", VQ_MODELS)
    def test_vq_terms_codes_and_decoder_match_the_reference(self, backend, name):
        """A VQ model's loss terms, the code each position chose and the decoder's images, against the float64
        reference; it has no Gaussian posterior, so ``encode`` is refused, in the core's words."""
        spec, params = get_model(name).spec, perturbed_params(name)
        model = self.build(backend, name)
        x, eps = sample_inputs(spec.noise_dim)
        terms, (want_terms, want_codes) = model.evaluate(x, eps), ref_vq_evaluate(spec, params, x)
        assert isinstance(terms, VQTerms)
        for got, want, field in zip(terms, want_terms, VQTerms._fields, strict=True):
            np.testing.assert_allclose(got, want, rtol=self.rtol, err_msg=field)
        np.testing.assert_array_equal(model.codes(x), want_codes)
        z = params["quantizer/codebook"][want_codes]
        np.testing.assert_allclose(model.decode(z), decode_pixels(spec, params, z), atol=self.atol_probs)
        with pytest.raises(BackendError, match="no Gaussian posterior"):
            model.encode(x)

    @final
    @pytest.mark.parametrize("name", VQ_MODELS)
    def test_vq_train_step_matches_the_reference_step(self, backend, name):
        """The straight-through gradient, the codebook and commitment terms and the first Adam step, against the
        reference's hand-written gradient: the encoder gets the decoder's input gradient unchanged."""
        spec, params = get_model(name).spec, perturbed_params(name)
        self._check_step(self.build(backend, name), spec, params)

    @final
    @pytest.mark.parametrize("name", (*MODEL_NAMES, *VQ_MODELS))
    def test_weights_roundtrip_bit_exact(self, backend, name):
        params = perturbed_params(name)
        exported = self.build(backend, name).export_weights()
        assert set(exported) == set(params)
        for key, value in params.items():
            assert exported[key].dtype == np.float32
            np.testing.assert_array_equal(exported[key], value, err_msg=key)

    @final
    def test_train_steps_lower_the_loss_and_change_weights(self, backend):
        model = self.build(backend, "mlp")
        x, eps = sample_inputs(20, n=32)
        before = model.export_weights()
        losses = model.fetch([model.train_step(x, eps) for _ in range(20)])
        assert losses.shape == (20,) and np.all(np.isfinite(losses))
        assert losses[-1] < losses[0]
        after = model.export_weights()
        assert all(not np.array_equal(before[k], after[k]) for k in before)

    @final
    def test_first_loss_is_the_reference_neg_elbo(self, backend):
        spec = get_model("conv").spec
        model = self.build(backend, "conv")
        x, eps = sample_inputs(spec.latent_dim, n=8)
        first = model.fetch([model.train_step(x, eps)])[0]
        want = ref_evaluate(spec, perturbed_params("conv"), x, eps).neg_elbo.mean()
        assert first == pytest.approx(want, rel=self.rtol)

    @final
    @pytest.mark.parametrize("name", STEP_MODELS)
    def test_one_train_step_matches_the_reference_step(self, backend, name):
        """Loss, gradients (by hand, float64) and the first Adam update against :mod:`vaebench.model.reference`.

        Adam's first step is ``lr * g / (|g| + eps)``, about ``lr * sign(g)``: a coordinate
        whose float64 gradient is below float32 rounding (~1e-5 here) may step either way,
        so those are held only to Adam's bound ``lr``; every other coordinate to ``step_atol``.
        """
        spec, params = get_model(name).spec, perturbed_params(name)
        self._check_step(self.build(backend, name), spec, params)

    @final
    @pytest.mark.parametrize("beta", [4.0, 0.25])
    def test_beta_vae_train_step_matches_the_reference_step(self, backend, beta):
        """A spec's objective reaches the step: ``recon + beta * KL``, its value, gradients and update as the reference's."""
        spec = get_model("mlp").spec.with_objective(Objective("beta-vae", beta))
        params = perturbed_params("mlp")
        model = backend.build(spec, AdamConfig())
        model.load_weights(params)
        self._check_step(model, spec, params)

    @final
    @pytest.mark.parametrize("name", ["mlp", "conv"])
    def test_iwae_train_step_matches_the_reference_step(self, backend, name):
        """The IWAE bound (K = 5) reaches the step: noise ``(batch, K, d)``, its value and gradients as the reference's.

        The gradients are read from Adam's first moment after one step (``m = (1 - beta1) g``) and compared to
        ``1e-4`` of the largest: the softmax over K samples in float32 leaves ~1e-5 of it, enough to flip the
        sign, and so the first update, of a gradient that small (the update itself is checked by the other steps).
        """
        spec = get_model(name).spec.with_objective(Objective("iwae", samples=5))
        params, adam = perturbed_params(name), AdamConfig()
        model = backend.build(spec, adam)
        model.load_weights(params)
        x, eps = sample_inputs(spec.latent_dim, n=8 * 5)
        x, eps = x[:8], eps.reshape(8, 5, spec.latent_dim)
        loss = model.fetch([model.train_step(x, eps)])[0]
        ref_loss, grads = loss_and_grads(spec, params, x, eps)
        assert loss == pytest.approx(ref_loss, rel=self.rtol)
        state = model.export_optimizer_state()
        for key, want in grads.items():
            got, scale = state[f"{key}/m"] / (1 - adam.beta1), float(np.abs(want).max()) or 1.0
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4 * scale, err_msg=f"gradient {key}")

    @final
    def _check_step(self, model: Model, spec: ModelSpec, params: dict[str, np.ndarray]) -> None:
        x, eps = sample_inputs(spec.noise_dim, n=8)
        loss = model.fetch([model.train_step(x, eps)])[0]
        ref_loss, grads = loss_and_grads(spec, params, x, eps)
        assert loss == pytest.approx(ref_loss, rel=self.rtol)
        expected, after = adam_step(params, grads), model.export_weights()
        for key, want in expected.items():
            diff = np.abs(after[key] - want)
            settled = np.abs(grads[key]) > self.grad_noise
            # an entry whose gradient is float32 noise (under grad_noise) may take the other sign here than in the
            # reference: each moves by up to lr, in opposite directions (iwae-mlp on an AMD EPYC: a gradient of
            # -2.5e-8 moved keras by -6.0e-4 and the reference by +7.2e-4); every settled entry is checked below
            assert diff.max() <= 2e-3 * (1 + 1e-3), key
            assert np.all(diff[settled] <= self.step_atol), f"{key}: {diff[settled].max()}"

    @final
    def test_optimizer_state_roundtrip_resumes_exactly(self, backend):
        """Steps 1-3, export weights and Adam state, load them into a fresh model: steps 4-6 match."""
        x, eps = sample_inputs(2, n=16)
        first = self.build(backend, "conv")
        first.fetch([first.train_step(x, eps) for _ in range(3)])
        weights, state = first.export_weights(), first.export_optimizer_state()
        assert float(state["step"]) == 3 and set(state) == {"step"} | {f"{k}/{m}" for k in weights for m in ("m", "v")}
        assert np.any(state["encoder/0/kernel/v"] > 0)
        second = self.build(backend, "conv")
        second.load_weights(weights)
        second.load_optimizer_state(state)
        for key, value in second.export_optimizer_state().items():
            np.testing.assert_array_equal(value, state[key], err_msg=key)
        np.testing.assert_allclose(
            second.fetch([second.train_step(x, eps) for _ in range(3)]),
            first.fetch([first.train_step(x, eps) for _ in range(3)]),
            rtol=1e-6,
        )

    @final
    def test_same_seed_same_run(self, backend):
        x, eps = sample_inputs(20, n=16)
        runs = []
        for _ in range(2):
            model = self.build(backend, "mlp")
            runs.append(model.fetch([model.train_step(x, eps) for _ in range(3)]))
        np.testing.assert_array_equal(runs[0], runs[1])

    @final
    def test_batches_staged_ahead_on_the_prefetch_thread_train_as_train_step(self, backend):
        """The runner stages batch n+1 on another thread while step n runs: staging must not touch the model."""
        batches = [sample_inputs(20, n=16, seed=s) for s in range(4)]
        direct = self.build(backend, "mlp")
        expected = direct.fetch([direct.train_step(x, eps) for x, eps in batches])
        model = self.build(backend, "mlp")
        with Prefetcher(batches, lambda b: model.stage(*b), depth=3) as feed:
            got = model.fetch([model.train_staged(staged) for _, staged in feed])
        np.testing.assert_array_equal(got, expected)
        with pytest.raises(ShapeError, match="noise eps"):
            model.stage(batches[0][0], np.zeros((16, 3), np.float32))

    @final
    def test_peak_device_memory_is_the_allocators_on_a_gpu_and_none_on_a_cpu(self, backend):
        model = self.build(backend, "mlp")
        model.fetch([model.train_step(*sample_inputs(20, n=16))])
        peak = model.peak_device_memory_mb()
        if backend.environment()["device"] == "cpu":
            assert peak is None
        else:
            assert peak is None or peak > 0  # None only where the framework keeps no statistics

    @final
    def test_evaluation_leaves_weights_untouched_and_decode_is_pure(self, backend):
        model = self.build(backend, "conv")
        before = model.export_weights()
        x, eps = sample_inputs(2)
        model.evaluate(x, eps)
        model.encode(x)
        z = grid_points(2, seed=0)
        first, second = model.decode(z), model.decode(z)
        np.testing.assert_array_equal(first, second)
        after = model.export_weights()
        assert all(np.array_equal(before[k], after[k]) for k in before)

    @final
    @pytest.mark.parametrize(
        "x_shape, dtype, match",
        [
            ((4, 28, 28), np.float32, "images x has shape"),
            ((4, 1, 28, 28), np.float32, "images x has shape"),
            ((4, 28, 28, 1), np.float64, "float32"),
            ((4, 28, 28, 1), np.uint8, "float32"),
        ],
    )
    def test_bad_input_is_the_cores_error(self, backend, x_shape, dtype, match):
        model = self.build(backend, "mlp")
        with pytest.raises(ShapeError, match=match):
            model.train_step(np.zeros(x_shape, dtype), np.zeros((4, 20), np.float32))
        with pytest.raises(ShapeError, match="noise eps"):
            model.evaluate(np.zeros((4, 28, 28, 1), np.float32), np.zeros((4, 3), np.float32))
        with pytest.raises(ShapeError, match="latent z"):
            model.decode(np.zeros((4, 3), np.float32))

    @final
    def test_environment_reports_framework_and_device(self, backend):
        env = backend.environment()
        required = [f.name for f in dataclasses.fields(Environment) if f.name not in ("versions", "extra")]
        assert not [k for k in required if k not in env], "every plugin fills the core's Environment"
        assert env["device"] in ("cpu", "cuda")
        assert env.get("framework") and env.get("device_name")
        assert env.get("precision") == backend.precision == "fp32", "every plugin applies and reports the core's precision"
        assert env.get("execution"), "every row names the execution mode that produced it"
        assert list(env.get("precision_settings") or {}) == list(PRECISION_SETTINGS), "the same switches for every plugin"

    @final
    def test_tunables_are_options_the_plugin_accepts(self, backend):
        # ``--profile best`` builds every combination of these; each must be a valid setting of this plugin
        for key, values in type(backend).tunables.items():
            assert values, f"tunable {key!r} lists no values"
            if key != "compile":
                assert key in type(backend).option_defaults, f"tunable {key!r} is not one of the plugin's options"
                allowed = type(backend).option_values.get(key)
                assert allowed is None or set(values) <= set(allowed)

    # -- capabilities: checked where this machine and plugin have them, skipped with the reason elsewhere --
    def variant(self, backend: Backend, **changes: object) -> Backend:
        """The same plugin constructed again with some settings changed (a GPU, compile, a precision)."""
        settings = {
            "device": backend.device,
            "threads": backend.threads,
            "compile": backend.compile,
            "options": backend.options,
            "precision": backend.precision,
        }
        try:
            return type(backend)(**{**settings, **changes})
        except BackendError as exc:
            pytest.skip(f"{type(backend).name} with {changes}: {exc}")

    @final
    def test_compiled_step_trains_like_the_eager_one(self, backend):
        if "compile" not in type(backend).tunables:
            pytest.skip(f"{type(backend).name} has no compile mode (--compile)")
        x, eps = sample_inputs(20, n=16)
        losses = []
        for variant in (self.variant(backend, compile=False), self.variant(backend, compile=True)):
            model = self.build(variant, "mlp")
            losses.append(model.fetch([model.train_step(x, eps) for _ in range(3)]))
        np.testing.assert_allclose(losses[1], losses[0], rtol=self.rtol)

    @final
    def test_the_gpu_path_trains_and_reports_its_allocator_peak(self, backend):
        gpu = self.variant(backend, device="cuda")  # skips, with the plugin's own reason, where there is no GPU
        assert gpu.environment()["device"] == "cuda"
        model = self.build(gpu, "conv")
        before = self.build(self.variant(backend, device="cpu"), "conv")
        x, eps = sample_inputs(2, n=16)
        np.testing.assert_allclose(model.fetch([model.train_step(x, eps)]), before.fetch([before.train_step(x, eps)]), rtol=1e-3)
        peak = model.peak_device_memory_mb()
        assert peak is None or peak > 0

    @final
    def test_tf32_is_applied_and_reported(self, backend):
        if backend.environment()["device"] != "cuda":
            gpu = self.variant(backend, device="cuda")
            backend = gpu
        tf32 = self.variant(backend, precision="tf32")
        assert tf32.environment()["precision"] == "tf32"
        model = self.build(tf32, "mlp")
        x, eps = sample_inputs(20, n=16)
        assert np.isfinite(model.fetch([model.train_step(x, eps)])).all()
