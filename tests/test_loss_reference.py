"""The core's loss and NumPy reference against independent formulas."""

import numpy as np
import pytest
from scipy.special import expit, logsumexp
from scipy.stats import norm

from vaebench.model import reference
from vaebench.model.catalogue import get_model
from vaebench.model.loss import PLAIN, NumpyOps, Objective, bce_with_logits, gaussian_kl, iwae_bound, neg_elbo_terms, numpy_ops
from vaebench.model.weights import init_params


def test_bce_matches_the_bernoulli_log_likelihood():
    gen = np.random.default_rng(0)
    logits, targets = gen.normal(0, 4, 1000), gen.random(1000)
    p = expit(logits)
    expected = -(targets * np.log(p) + (1 - targets) * np.log1p(-p))
    assert np.allclose(bce_with_logits(numpy_ops, logits, targets), expected, rtol=1e-10)


def test_bce_is_finite_for_extreme_logits():
    out = bce_with_logits(numpy_ops, np.array([-1e4, 1e4, 0.0]), np.array([1.0, 0.0, 0.5]))
    assert np.allclose(out, [1e4, 1e4, np.log(2)])


def test_bce_hands_the_logits_and_targets_to_an_ops_fused_kernel():
    class Fused(NumpyOps):
        @staticmethod
        def bce_with_logits(logits, targets):
            return ("fused", logits, targets)

    logits, targets = np.array([0.5, -2.0]), np.array([1.0, 0.25])
    got = bce_with_logits(Fused(), logits, targets)
    assert got[0] == "fused" and got[1] is logits and got[2] is targets


def test_numpy_logsumexp_is_over_the_last_axis_and_stable_row_by_row():
    """Rows thousands of nats apart: a shift by anything but each row's own maximum underflows to -inf or overflows."""
    gen = np.random.default_rng(3)
    x = gen.normal(size=(2, 3, 4)) + np.array([0.0, -2000.0, 800.0])[None, :, None]
    np.testing.assert_allclose(numpy_ops.logsumexp(x), logsumexp(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(numpy_ops.logsumexp(x[0]), logsumexp(x[0], axis=-1), rtol=1e-12)
    assert numpy_ops.mean(np.array([[1.0, 2.0], [3.0, 6.0]])) == 3.0


class _ContractOps(NumpyOps):
    """:data:`numpy_ops` held to the :class:`~vaebench.model.ops.Ops` contract where NumPy is laxer than torch and JAX:
    ``reshape`` takes one ``-1`` at most and no other negative size (NumPy reads any negative size as the inferred one)."""

    @staticmethod
    def reshape(x, shape):
        assert all(n == -1 or n >= 0 for n in shape) and list(shape).count(-1) <= 1, shape
        return np.reshape(x, shape)


def _tiny_networks(gen, latent=2):
    """An encoder and decoder that read their inputs: images ``(B, 2, 3)``, latents ``(N, latent)``, logits ``(N, 2, 3)``."""
    w_mean, w_logvar, w_dec = gen.normal(0, 0.5, (6, latent)), gen.normal(0, 0.5, (6, latent)), gen.normal(0, 1, (latent, 6))

    def encode(x):
        flat = x.reshape(len(x), -1)
        return flat @ w_mean, 0.5 * flat @ w_logvar - 0.3

    def decode(z):
        assert z.ndim == 2 and z.shape[1] == latent, z.shape
        return (z @ w_dec + 0.1).reshape(len(z), 2, 3)

    return encode, decode


def _log_bernoulli(decode, z, targets):
    p = expit(decode(z[None])[0].reshape(-1))
    return np.sum(targets * np.log(p) + (1 - targets) * np.log1p(-p))


def _iwae_from_densities(encode, decode, x, eps):
    """Burda et al. eq. 8 image by image, sample by sample: log (1/K) sum_k p(x | z_k) N(z_k; 0, I) / N(z_k; mean, std)."""
    mean, logvar = encode(x)
    std, t = np.exp(logvar / 2), x.reshape(len(x), -1)
    bounds = []
    for b in range(len(x)):
        zs = [mean[b] + std[b] * e for e in eps[b]]
        log_w = [_log_bernoulli(decode, z, t[b]) + norm.logpdf(z).sum() - norm.logpdf(z, mean[b], std[b]).sum() for z in zs]
        bounds.append(logsumexp(log_w) - np.log(len(zs)))
    return np.array(bounds)


def _neg_elbo_from_densities(encode, decode, x, eps, beta=1.0):
    mean, logvar = encode(x)
    t = x.reshape(len(x), -1)
    rows = zip(mean, logvar, eps, t, strict=True)
    recon = np.array([-_log_bernoulli(decode, m + np.exp(lv / 2) * e, tb) for m, lv, e, tb in rows])
    return recon + beta * 0.5 * (mean**2 + np.exp(logvar) - 1 - logvar).sum(axis=1)


def test_the_iwae_bound_runs_the_encoder_on_the_images_and_the_decoder_on_every_sample():
    """Networks that read their inputs, K (3) unlike the latent size (2), and images that are not flat."""
    gen = np.random.default_rng(6)
    encode, decode = _tiny_networks(gen)
    x, eps = gen.random((4, 2, 3)), gen.standard_normal((4, 3, 2))
    bound = iwae_bound(_ContractOps(), encode, decode, x, eps)
    np.testing.assert_allclose(bound, _iwae_from_densities(encode, decode, x, eps), rtol=1e-10)


@pytest.mark.parametrize(
    "objective", [PLAIN, Objective("beta-vae", 3.0), Objective("iwae", samples=3)], ids=["vae", "beta-vae", "iwae"]
)
def test_loss_per_example_is_each_objective_on_the_networks(objective):
    gen = np.random.default_rng(7)
    encode, decode = _tiny_networks(gen)
    x, eps = gen.random((4, 2, 3)), gen.standard_normal((4, *objective.noise_shape(2)))
    got = objective.loss_per_example(_ContractOps(), encode, decode, x, eps)
    if objective.name == "iwae":
        expected = -_iwae_from_densities(encode, decode, x, eps)
    else:
        expected = _neg_elbo_from_densities(encode, decode, x, eps, objective.beta)
    assert got.shape == (4,)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_kl_matches_monte_carlo_and_vanishes_at_the_prior():
    mean, logvar = np.array([[0.5, -1.0]]), np.array([[0.3, -0.7]])
    z = mean + np.exp(0.5 * logvar) * np.random.default_rng(0).standard_normal((400_000, 2))
    mc = np.mean(norm.logpdf(z, mean, np.exp(0.5 * logvar)).sum(1) - norm.logpdf(z).sum(1))
    assert gaussian_kl(numpy_ops, mean, logvar)[0] == pytest.approx(mc, abs=5e-3)
    assert gaussian_kl(numpy_ops, np.zeros((1, 3)), np.zeros((1, 3)))[0] == 0


def test_neg_elbo_is_recon_plus_kl_per_example():
    gen = np.random.default_rng(1)
    terms = neg_elbo_terms(
        numpy_ops, gen.normal(size=(4, 28, 28, 1)), gen.random((4, 28, 28, 1)), gen.normal(size=(4, 2)), gen.normal(size=(4, 2))
    )
    assert terms.neg_elbo.shape == (4,)
    assert np.allclose(terms.neg_elbo, terms.recon + terms.kl)


def _windows_conv(x, k, stride, pad):
    """Direct loops: the definition of a padded strided cross-correlation."""
    xp = np.pad(x, ((0, 0), pad, pad, (0, 0)))
    kh = k.shape[0]
    out = (xp.shape[1] - kh) // stride + 1
    y = np.zeros((x.shape[0], out, out, k.shape[-1]))
    for i in range(out):
        for j in range(out):
            patch = xp[:, i * stride : i * stride + kh, j * stride : j * stride + kh]
            y[:, i, j] = np.tensordot(patch, k, axes=([1, 2, 3], [0, 1, 2]))
    return y


@pytest.mark.parametrize(
    "size, stride, rule", [(8, 1, "same"), (8, 2, "same"), (7, 2, "same"), (14, 2, "symmetric"), (7, 2, "symmetric")]
)
def test_reference_conv_and_its_transpose_are_adjoint(size, stride, rule):
    from vaebench.model.layers import same_padding, symmetric_padding

    gen = np.random.default_rng(2)
    x = gen.normal(size=(2, size, size, 3))
    k = gen.normal(size=(3, 3, 3, 4))
    pad = same_padding(size, 3, stride) if rule == "same" else symmetric_padding(3)
    y = reference.conv2d(x, k, stride, pad)
    assert np.allclose(y, _windows_conv(x, k, stride, pad))
    # <conv(x), v> == <x, conv_transpose(v)>, the transposed kernel stored (h, w, in=4, out=3)
    v = gen.normal(size=y.shape)
    xt = reference.conv2d_transpose(v, k.transpose(0, 1, 3, 2), stride, pad, size)
    assert xt.shape == x.shape
    assert np.vdot(y, v) == pytest.approx(np.vdot(x, xt), rel=1e-10)


@pytest.mark.parametrize("name", ["mlp", "conv", "blog", "conv-sym"])
def test_reference_forward_shapes(name):
    spec = get_model(name).spec
    params = init_params(spec, 0)
    x = np.random.default_rng(0).random((2, 28, 28, 1)).astype(np.float32)
    eps = np.zeros((2, spec.latent_dim), np.float32)
    terms = reference.evaluate(spec, params, x, eps)
    assert all(t.shape == (2,) for t in terms)
    assert np.all(terms.recon > 0) and np.all(terms.kl >= 0)


@pytest.mark.parametrize("name", ["conv", "conv-sym"])
def test_reference_gradients_match_finite_differences(name):
    """The hand-written backward pass, through every padding and crop, against central differences."""
    spec = get_model(name).spec
    gen = np.random.default_rng(1)
    params = {k: v + gen.normal(0, 0.05, v.shape) for k, v in init_params(spec, 0).items()}
    x, eps = gen.random((2, 28, 28, 1)), gen.standard_normal((2, spec.latent_dim))
    _, grads = reference.loss_and_grads(spec, params, x, eps)
    for key in ("encoder/0/kernel", "encoder/1/kernel", "decoder/2/kernel", "decoder/3/kernel", "decoder/4/kernel"):
        for index in [tuple(gen.integers(0, n) for n in params[key].shape) for _ in range(3)]:
            h, shifted = 1e-5, []
            for sign in (1, -1):
                p = dict(params)
                p[key] = params[key].copy()
                p[key][index] += sign * h
                shifted.append(reference.loss_and_grads(spec, p, x, eps)[0])
            assert grads[key][index] == pytest.approx((shifted[0] - shifted[1]) / (2 * h), rel=1e-4, abs=1e-6), (key, index)
