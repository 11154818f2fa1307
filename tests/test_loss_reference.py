"""The core's loss and NumPy reference against independent formulas."""

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm

from vaebench.model import reference
from vaebench.model.catalogue import get_model
from vaebench.model.loss import bce_with_logits, gaussian_kl, neg_elbo_terms, numpy_ops
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
