"""The VQ-VAE (#28): the spec says it has a codebook, the hand-written gradient is the straight-through one, the
recipe's constant is MNIST's, its codebook figures are right, and a run scores and draws it without a posterior."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from vaebench.errors import ConfigError
from vaebench.measure.paritycheck import param_outliers
from vaebench.model import reference
from vaebench.model.catalogue import MNIST_TRAIN_VARIANCE, get_model
from vaebench.model.layers import Conv2D, ModelSpec, Quantizer
from vaebench.model.loss import Objective
from vaebench.model.weights import init_params
from vaebench.run.evaluation import code_usage

SPEC = get_model("vqvae").spec


def _params(seed: int = 0) -> dict[str, np.ndarray]:
    gen = np.random.default_rng(seed)
    return {k: v.astype(np.float64) + 0.05 * gen.standard_normal(v.shape) for k, v in init_params(SPEC, seed).items()}


def test_the_spec_says_it_has_a_codebook_and_what_it_costs():
    assert (SPEC.bottleneck, SPEC.latent_shape, SPEC.noise_shape, SPEC.noise_dim) == ("vq", (7, 7, 16), (0,), 0)
    assert SPEC.codes_per_image == 49 and SPEC.quantizer.bits == 7 and SPEC.param_shapes()["quantizer/codebook"] == (128, 16)
    assert get_model("conv").spec.bottleneck == "gaussian" and get_model("conv").spec.codes_per_image == 0
    codebook = init_params(SPEC, 0)["quantizer/codebook"]
    assert codebook.dtype == np.float32 and 0.04 < np.abs(codebook).max() <= 0.05  # keras.io's U(-0.05, 0.05)
    with pytest.raises(ConfigError, match="vector-quantised bottleneck"):
        SPEC.with_objective(Objective("iwae", samples=3))
    bad = ModelSpec("bad", (Conv2D(8, stride=2),), SPEC.decoder, latent_dim=16, quantizer=Quantizer(4))
    with pytest.raises(ConfigError, match="feature map of latent_dim = 16 channels"):
        bad.param_shapes()


def test_the_recipes_variance_is_mnists_training_set_at_unit_scale(mnist_dir):
    from vaebench.io.datasets import load_dataset

    images = load_dataset("mnist", mnist_dir).train_images
    assert len(images) == 60_000 and np.var(images / 255.0) == pytest.approx(MNIST_TRAIN_VARIANCE, rel=1e-12)


def test_the_hand_gradient_is_torchs_autograd_of_the_same_loss_in_float64():
    """The reference's hand-written straight-through gradient (encoder: the decoder's input gradient unchanged plus
    the commitment term; codebook: the codebook term through the rows chosen) against autograd of the one loss
    (:func:`~vaebench.model.loss.vq_terms` on torch, in float64), every parameter to 1e-12 of its largest entry."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("vaebench_torch")
    import torch.nn.functional as F

    from vaebench.model.config import AdamConfig
    from vaebench.model.layouts import convert
    from vaebench.model.ops import ArrayOps
    from vaebench.plugin import registry
    from vaebench_torch.model import OPS

    ops = ArrayOps(torch, torch.relu, **{k: getattr(OPS, k) for k in ("flatten", "stop_gradient", "sigmoid")})
    ops.one_hot = lambda index, n: F.one_hot(index, n).double()
    p = {k: v.astype(np.float32) for k, v in _params().items()}
    x = np.random.default_rng(1).random((3, 28, 28, 1)).astype(np.float32)
    model = registry.load("torch")[0](device="cpu").build(SPEC, AdamConfig())
    model.load_weights(p)
    for _, param in model.params:
        param.data = param.data.double()
    model.net.loss(ops, model._images(x).double(), torch.zeros(3, 0, dtype=torch.float64)).backward()
    autograd = convert(model._perms, {k: t.grad.numpy() for k, t in model.params}, to_canonical=True)
    _, grads = reference.loss_and_grads(SPEC, p, x, np.zeros((3, 0)))
    assert set(grads) == set(autograd)
    for key, want in grads.items():
        assert np.abs(autograd[key] - want).max() <= 1e-12 * np.abs(want).max(), key
    assert np.abs(grads["quantizer/codebook"]).sum(axis=1).astype(bool).sum() < 128  # rows no vector chose: no gradient


def test_code_usage_is_the_perplexity_of_the_codes_distribution():
    assert code_usage(np.array([5, 5, 0, 0])) == {
        "code_counts": [5, 5, 0, 0],
        "perplexity": pytest.approx(2.0),
        "codes_used": 0.5,
    }
    skewed = code_usage(np.array([3, 1]))
    assert skewed["perplexity"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert code_usage(np.array([0, 7, 0]))["perplexity"] == pytest.approx(1.0)
    once = code_usage(np.array([1, 0, 3]))  # a code chosen once is used; the counts stay integers
    assert once["codes_used"] == pytest.approx(2 / 3) and all(type(c) is int for c in once["code_counts"])
    assert once["perplexity"] == pytest.approx(math.exp(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75))))
    summed = code_usage(np.array([1.0, 0.0, 3.0]))  # counts added up as floats are still counts: integers
    assert summed["code_counts"] == [1, 0, 3] and all(type(c) is int for c in summed["code_counts"])


def test_parity_allows_a_vq_model_its_measured_code_flips_and_nothing_else():
    from vaebench.measure.parity import parity_kind

    assert parity_kind(SPEC, Objective()) == "vq" and parity_kind(get_model("conv").spec, Objective()) == "vae"
    assert param_outliers("vq") == 0.08 and param_outliers("vae") == 0.01


def test_a_run_scores_and_draws_a_vq_model_without_a_posterior(tmp_path):
    from vaebench.testing import make_tiny_dataset

    data = make_tiny_dataset(tmp_path / "data", n_train=64, n_test=32)
    env = {**os.environ, "MPLBACKEND": "Agg"}
    out = tmp_path / "run"
    args = ["run", "-b", "numpy", "-m", "vqvae", "--epochs", "1", "--batch-size", "32", "--data-dir", str(data), "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", *args, "--out", str(out)], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr
    assert "test reconstruction loss" in proc.stdout and "codebook perplexity" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics["final"]
    assert set(final) == {"test_loss", "test_recon", "test_vq", "train_recon", "perplexity", "codes_used", "bits_per_image"}
    assert final["bits_per_image"] == 343 and 1 <= final["perplexity"] <= 128
    assert final["test_loss"] == pytest.approx(final["test_recon"] + final["test_vq"])
    assert metrics["history"][0]["train_neg_elbo"] is None and metrics["history"][0]["train_objective"] > 0
    assert sum(metrics["evaluations"]["numpy"]["code_counts"]) == 32 * 49
    assert {"reconstructions.png", "codes.png", "curves.png"} <= {p.name for p in out.iterdir()}
    assert not (out / "grid.png").exists()
    refused = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", *args, "--objective", "iwae", "--iw-samples", "3", "--out", str(tmp_path / "no")],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert refused.returncode == 2 and "vector-quantised bottleneck" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "no").exists()
    # eval's default takes no importance samples for a VQ model; an explicit --k is refused and changes nothing
    before = (out / "metrics.json").read_bytes()
    cli = [sys.executable, "-m", "vaebench.cli", "eval", str(out), "-q"]
    asked = subprocess.run([*cli, "--k", "100"], capture_output=True, text=True, env=env, timeout=600)
    assert asked.returncode == 2 and "use --k 0" in asked.stderr and "Traceback" not in asked.stderr
    assert (out / "metrics.json").read_bytes() == before
    plain = subprocess.run(cli, capture_output=True, text=True, env=env, timeout=600)
    assert plain.returncode == 0 and "training-set reconstruction loss" in plain.stdout, plain.stderr


def _numpy_model(seed: int = 0):
    from vaebench.model.config import AdamConfig
    from vaebench.plugin.numpy_backend import NumpyBackend

    model = NumpyBackend().build(SPEC, AdamConfig())
    model.load_weights({k: v.astype(np.float32) for k, v in _params(seed).items()})
    return model


def test_the_evaluation_of_a_vq_model_is_its_terms_codes_and_training_loss():
    from vaebench.run.evaluation import TERMS, code_statistics, evaluate_split, full_evaluation

    model = _numpy_model()
    gen = np.random.default_rng(3)
    test, train = (gen.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (12, 9))
    split = evaluate_split(model, test, 5, 0)
    assert TERMS["vq"] == ("loss", "recon", "vq") and list(split) == list(TERMS["vq"])
    x = test.astype(np.float32)[..., None] / 255
    terms, codes = reference.vq_evaluate(SPEC, model.params, x)
    for name, want in zip(TERMS["vq"], terms, strict=True):
        assert split[name] == pytest.approx(float(np.mean(want)), rel=1e-6), name
    stats = code_statistics(model, test, batch_size=5)
    assert stats == {**code_usage(np.bincount(codes.ravel(), minlength=128)), "bits_per_image": 343.0}
    said = []
    result = full_evaluation(model, test, 0, 0, batch_size=5, train_images=train, log=said.append)
    assert said == ["reconstruction loss on the 9 training images"]
    assert result["train_recon"] == pytest.approx(evaluate_split(model, train, 4, 0)["recon"], rel=1e-9)
    assert result["test_loss"] == pytest.approx(split["loss"]) and result["perplexity"] == stats["perplexity"]
    assert "active_units" not in result and "test_neg_elbo" not in result
    assert 0 <= result["seconds"] < 3600
    sizes, codes_of = [], model.codes
    model.codes = lambda x: (sizes.append(len(x)), codes_of(x))[1]
    assert "train_recon" not in full_evaluation(model, test, 0, 0, batch_size=5)
    assert sizes == [5, 5, 2]  # the codes too are asked for a chunk of batch_size images at a time
    del model.codes
    for k in (1, 5):  # even one sample: there is no posterior to draw it from
        with pytest.raises(ConfigError, match="no likelihood"):
            full_evaluation(model, test, k, 0, 5)


def test_reconstructions_and_the_decoded_points_are_the_codes_and_the_codebooks_scale():
    from vaebench.run.evaluation import GRID_SIZE, decode_points, grid_points, reconstruct

    model = _numpy_model()
    x = np.random.default_rng(4).random((4, 28, 28, 1), dtype=np.float32)
    codes = reference.vq_evaluate(SPEC, model.params, x)[1]
    want = reference.decode_pixels(SPEC, model.params, model.params["quantizer/codebook"][codes])
    np.testing.assert_allclose(reconstruct(model, x), want, rtol=1e-6, atol=1e-7)
    points = decode_points(SPEC, 0)
    assert points.shape == (GRID_SIZE * GRID_SIZE, 7, 7, 16) and points.dtype == np.float32
    assert 0.04 < points.std() < 0.06 and not np.array_equal(points, decode_points(SPEC, 1))
    np.testing.assert_array_equal(decode_points(get_model("conv").spec, 0), grid_points(2, 0))
    from vaebench.seeding import rng

    want = 0.05 * rng(0, "grid").standard_normal((GRID_SIZE * GRID_SIZE, 7, 7, 16), dtype=np.float32)
    np.testing.assert_array_equal(points, want)  # the grid's own stream and the run's seed, in every backend
    # a Gaussian model's reconstruction is the decoded posterior mean
    from vaebench.model.config import AdamConfig
    from vaebench.plugin.numpy_backend import NumpyBackend

    mlp = get_model("mlp").spec
    gaussian = NumpyBackend().build(mlp, AdamConfig())
    gaussian.load_weights(init_params(mlp, 0))
    x = np.random.default_rng(5).random((3, 28, 28, 1), dtype=np.float32)
    np.testing.assert_array_equal(reconstruct(gaussian, x), gaussian.decode(gaussian.encode(x)[0]))


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_an_interrupted_vq_run_resumes_to_the_uninterrupted_history(name, tiny_dir, tmp_path, monkeypatch):
    """The codebook and its Adam moments travel in the checkpoint like every parameter: a run cut in its second
    epoch and resumed ends where the whole run ends (the float64 reference bit for bit)."""
    from click.testing import CliRunner

    from vaebench.cli import cli
    from vaebench.model.weights import load_params
    from vaebench.plugin.contract import Model

    if name == "torch":
        pytest.importorskip("vaebench_torch")
    base = ["run", "-b", name, "-m", "vqvae", "--epochs", "2", "--batch-size", "64", "-q", "--data-dir", str(tiny_dir)]
    assert CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "whole")], catch_exceptions=False).exit_code == 0
    original, steps = Model.train_staged, {"n": 0}

    def interrupt(self, staged):
        steps["n"] += 1
        if steps["n"] == 6:  # epoch 2, step 2 of 4
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, staged)

    monkeypatch.setattr(Model, "train_staged", interrupt)
    CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["status"] == "interrupted"
    resumed = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path / "cut"), "-q"])
    assert resumed.exit_code == 0, resumed.output
    a, b = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("whole", "cut"))
    assert b["status"] == "completed" and b["resumed"] == [{"epoch": 1, "step": 2}]
    exact = name == "numpy"
    for x, y in zip(a["history"], b["history"], strict=True):
        for key in ("train_objective", "test_loss", "test_recon", "test_vq"):
            assert y[key] == (x[key] if exact else pytest.approx(x[key], rel=1e-5)), (x["epoch"], key)
    wa, wb = load_params(tmp_path / "whole" / "weights.npz"), load_params(tmp_path / "cut" / "weights.npz")
    for key in wa:
        if exact:
            np.testing.assert_array_equal(wb[key], wa[key], err_msg=key)
        else:
            np.testing.assert_allclose(wb[key], wa[key], rtol=1e-4, atol=1e-6, err_msg=key)


def test_vq_terms_against_a_brute_force_formula():
    """The one VQ loss on hand-made numbers: every vector's nearest code found by trying each (a tie to the lower
    index), the decoder reading the codes, the reconstruction's MSE over the variance, and (1 + beta) times the
    mean squared distance to the codes as the VQ term's value."""
    from vaebench.model.loss import nearest_codes, numpy_ops, vq_terms

    book = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]])
    x = np.array([[0.5, 0.5, 1.4, 0.6, 0.5, 2.2], [0.5, 1.5, 0.2, 0.5, 1.0, 0.5]])  # centred: (0,0)(.9,.1)(0,1.7)...
    quantizer = Quantizer(codes=4, beta=0.25, variance=0.5)
    terms, codes = vq_terms(numpy_ops, lambda c: c, lambda _: book, lambda flat: 2.0 * flat, x, quantizer, 2)
    vectors = (x - 0.5).reshape(-1, 2)
    want = np.array([int(np.argmin([np.sum((v - e) ** 2) for e in book])) for v in vectors])
    np.testing.assert_array_equal(codes, want)
    assert list(want) == [0, 1, 3, 0, 0, 0]  # the last vector, (.5, 0), ties codes 0 and 1
    q = book[want].reshape(2, 6)
    recon = np.mean((2.0 * q - (x - 0.5)) ** 2, axis=1) / 0.5
    vq = 1.25 * np.mean((q - (x - 0.5)) ** 2, axis=1)
    np.testing.assert_allclose(terms.recon, recon, rtol=1e-12)
    np.testing.assert_allclose(terms.vq, vq, rtol=1e-12)
    np.testing.assert_allclose(terms.loss, recon + vq, rtol=1e-12)
    tie = nearest_codes(numpy_ops, np.array([[0.0, 0.5], [0.5, 0.0], [-0.5, 0.0]]), book)
    assert list(tie) == [0, 0, 0]  # (0, .5): codes 0 at .25 and 3 at 2.25; (.5, 0) ties 0 and 1, (-.5, 0) 0 and 2
    far = nearest_codes(numpy_ops, np.array([[0.0, 1.1], [-0.6, 0.0], [3.0, 3.0]]), book)
    assert list(far) == [3, 2, 3]
