"""Objectives beyond the plain ELBO (#28): beta-VAE and the IWAE bound in the core loss and the reference, tanh, iwae-mlp.

The reference's loss is checked against recon + beta * KL written out here in
NumPy (not through :mod:`vaebench.model.loss`), its hand-written gradients
against central differences, and ``vaebench run --objective beta-vae`` end to
end on the numpy backend: what it records, and what it refuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vaebench.errors import ConfigError
from vaebench.model import reference
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig, TrainConfig
from vaebench.model.costs import layer_costs
from vaebench.model.layers import Dense, Flatten, ModelSpec, Reshape
from vaebench.model.loss import MAX_SAMPLES, PLAIN, Objective
from vaebench.model.ops import LossTerms
from vaebench.model.weights import init_params
from vaebench.plugin.numpy_backend import NumpyBackend
from vaebench.run.results import comparable
from vaebench.testing.kit import perturbed_params, sample_inputs


def _independent_terms(spec: ModelSpec, params: dict, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-example reconstruction NLL and KL, written out here: Bernoulli log-likelihood via log-sigmoid, Gaussian KL."""
    mean, logvar = reference.encode(spec, params, x)
    z = mean + np.exp(logvar / 2) * eps
    logits = reference.decode_logits(spec, params, z).reshape(len(x), -1)
    t = np.asarray(x, np.float64).reshape(len(x), -1)
    log_p = -np.logaddexp(0, -logits)  # log sigmoid(l)
    log_not_p = -np.logaddexp(0, logits)  # log (1 - sigmoid(l))
    recon = -(t * log_p + (1 - t) * log_not_p).sum(axis=1)
    kl = 0.5 * (mean**2 + np.exp(logvar) - 1 - logvar).sum(axis=1)
    return recon, kl


@pytest.mark.parametrize("model", ["mlp", "iwae-mlp"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
def test_beta_vae_loss_is_recon_plus_beta_kl(model, beta):
    base = get_model(model).spec
    spec = base.with_objective(Objective("beta-vae", beta))
    params = perturbed_params(model)
    x, eps = sample_inputs(spec.latent_dim, n=5)
    recon, kl = _independent_terms(spec, params, x, eps)
    loss, _ = reference.loss_and_grads(spec, params, x, eps)
    assert loss == pytest.approx(float(np.mean(recon + beta * kl)), rel=1e-12)
    # evaluation stays the plain bound whatever the objective
    terms = reference.evaluate(spec, params, x, eps)
    np.testing.assert_allclose(terms.neg_elbo, recon + kl, rtol=1e-12)
    # and the numpy backend's train step reports the same objective
    model_ = NumpyBackend(device="cpu").build(spec, AdamConfig())
    model_.load_weights(params)
    assert model_.fetch([model_.train_step(x, eps)])[0] == pytest.approx(loss, rel=1e-6)


def test_beta_one_is_the_plain_vae_bit_for_bit():
    spec = get_model("iwae-mlp").spec
    params = perturbed_params("iwae-mlp")
    x, eps = sample_inputs(spec.latent_dim, n=4)
    plain_loss, plain_grads = reference.loss_and_grads(spec, params, x, eps)
    beta_loss, beta_grads = reference.loss_and_grads(spec.with_objective(Objective("beta-vae", 1.0)), params, x, eps)
    assert beta_loss == plain_loss
    for key, value in plain_grads.items():
        np.testing.assert_array_equal(beta_grads[key], value, err_msg=key)
    assert spec.objective == PLAIN and Objective("beta-vae", 1).plain and not Objective("beta-vae", 4).plain


def _small_tanh_spec(objective: Objective) -> ModelSpec:
    enc = (Flatten(), Dense(5, "tanh"), Dense(4, "tanh"))
    dec = (Dense(4, "tanh"), Dense(3, "relu"), Dense(784), Reshape((28, 28, 1)))
    return ModelSpec("small", enc, dec, latent_dim=3, objective=objective)


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_hand_written_gradients_match_central_differences(beta):
    """tanh's backward (``1 - y**2``) and the KL's beta weight in :func:`reference.loss_and_grads`."""
    spec = _small_tanh_spec(Objective("beta-vae", beta))
    params = {k: v.astype(np.float64) for k, v in init_params(spec, 1).items()}
    gen = np.random.default_rng(2)
    params = {k: v + gen.normal(0, 0.1, v.shape) for k, v in params.items()}
    x, eps = sample_inputs(spec.latent_dim, n=3)
    keys = ("encoder/1/kernel", "encoder/2/bias", "encoder/logvar/kernel", "encoder/mean/bias", "decoder/0/kernel")
    _assert_gradients_match_central_differences(spec, params, x, eps, keys, gen, picks=4, rel=1e-5, abs_=1e-7)


def _assert_gradients_match_central_differences(spec, params, x, eps, keys, gen, *, picks, rel, abs_):
    """The reference's hand-written gradient of ``keys`` against central differences (h = 1e-6) of its loss.

    ``picks`` entries of each parameter, drawn from ``gen`` without replacement, are bumped by ``+-h`` in turn.
    """
    _, grads = reference.loss_and_grads(spec, params, x, eps)
    h = 1e-6
    for key in keys:
        flat = params[key].reshape(-1)
        for i in gen.choice(flat.size, size=min(picks, flat.size), replace=False):
            bumped = []
            for sign in (1, -1):
                moved = {k: v.copy() for k, v in params.items()}
                moved[key].reshape(-1)[i] += sign * h
                bumped.append(reference.loss_and_grads(spec, moved, x, eps)[0])
            numeric = (bumped[0] - bumped[1]) / (2 * h)
            assert grads[key].reshape(-1)[i] == pytest.approx(numeric, rel=rel, abs=abs_), (key, i)


def test_tanh_in_the_reference_forward():
    spec = ModelSpec("t", (Flatten(), Dense(3, "tanh")), (Dense(784), Reshape((28, 28, 1))), latent_dim=2)
    params = {k: v.astype(np.float64) for k, v in init_params(spec, 0).items()}
    x, _ = sample_inputs(2, n=2)
    mean, _ = reference.encode(spec, params, x)
    h = np.tanh(x.reshape(2, -1) @ params["encoder/1/kernel"] + params["encoder/1/bias"])
    np.testing.assert_allclose(mean, h @ params["encoder/mean/kernel"] + params["encoder/mean/bias"], rtol=1e-12)


def test_iwae_mlp_is_the_papers_network():
    defaults = get_model("iwae-mlp")
    spec = defaults.spec
    dense = [(i.name, i.in_shape, i.out_shape, i.layer.activation) for i in spec.layers() if isinstance(i.layer, Dense)]
    assert dense == [
        ("encoder/1", (784,), (200,), "tanh"),
        ("encoder/2", (200,), (200,), "tanh"),
        ("encoder/mean", (200,), (50,), None),
        ("encoder/logvar", (200,), (50,), None),
        ("decoder/0", (50,), (200,), "tanh"),
        ("decoder/1", (200,), (200,), "tanh"),
        ("decoder/2", (200,), (784,), None),
    ]
    assert (
        spec.num_params() == 784 * 200 + 200 + 200 * 200 + 200 + 2 * (200 * 50 + 50) + 50 * 200 + 200 + 40_200 + 200 * 784 + 784
    )
    assert "Burda" in spec.source and defaults.batch_size == 20


def test_tanh_costs_four_elementwise_flops_per_output_and_unknown_activations_are_refused():
    costs = {c.name: c for c in layer_costs(get_model("iwae-mlp").spec)}
    assert costs["encoder/1"].elementwise_flops == 200 * (2 + 4)  # bias add and its gradient, tanh and its gradient
    assert costs["encoder/mean"].elementwise_flops == 50 * 2
    with pytest.raises(ConfigError, match="unknown activation 'gelu'"):
        ModelSpec("g", (Flatten(), Dense(3, "gelu")), (Dense(784), Reshape((28, 28, 1))), latent_dim=2)


@pytest.mark.parametrize(
    ("objective", "beta", "needle"),
    [
        ("beta-vae", -1.0, "--beta must be a finite number, 0 or more"),
        ("beta-vae", float("nan"), "--beta must be a finite number"),
        ("beta-vae", float("inf"), "--beta must be a finite number"),
        ("vae", 4.0, "--objective vae has beta 1"),
        ("iwae", 4.0, "--objective iwae has beta 1"),
        ("vq", 1.0, "unknown objective 'vq'"),
    ],
)
def test_bad_objectives_are_config_errors(objective, beta, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        TrainConfig(model="mlp", objective=objective, beta=beta).resolved()


def test_an_objective_refuses_what_is_not_a_number_of_its_kind_and_names_itself():
    for beta in (True, "4"):
        with pytest.raises(ConfigError, match="--beta must be a finite number, 0 or more"):
            Objective("beta-vae", beta)
    for k in (True, 2.0, 0, MAX_SAMPLES + 1):
        with pytest.raises(ConfigError, match=f"--iw-samples must be a whole number from 1 to {MAX_SAMPLES}, got {k}"):
            Objective("iwae", samples=k)
    assert Objective("iwae", samples=MAX_SAMPLES).noise_shape(2) == (MAX_SAMPLES, 2)
    needle = "^--iw-samples 5 is the sample count of --objective iwae; --objective beta-vae draws 1$"
    with pytest.raises(ConfigError, match=needle):
        Objective("beta-vae", 2.0, samples=5)
    with pytest.raises(ConfigError, match="^unknown objective 'vq'; choose one of vae, beta-vae, iwae$"):
        Objective("vq")
    assert Objective("iwae", samples=5).describe() == "iwae (K=5)"
    assert Objective("beta-vae", 4.0).describe() == "beta-vae (beta 4)" and PLAIN.describe() == "vae (beta 1)"


def test_per_example_is_the_neg_elbo_itself_for_the_plain_vae_and_refuses_the_iwae_bound():
    terms = LossTerms(np.array([10.0]), np.array([1.0]), np.array([2.0]))  # not recon + kl: shows which field is read
    assert PLAIN.per_example(terms) is terms.neg_elbo and Objective("beta-vae", 1).per_example(terms) is terms.neg_elbo
    np.testing.assert_array_equal(Objective("beta-vae", 4.0).per_example(terms), [9.0])
    needle = r"^the IWAE bound is not a weighting of the -ELBO's terms; use Objective\.loss_per_example$"
    with pytest.raises(ConfigError, match=needle):
        Objective("iwae", samples=2).per_example(terms)


def _metrics(**config) -> dict:
    return {"config": {"model": "mlp", "latent_dim": 20, **config}, "data": {"sha256": {"a": "1"}}}


def test_the_plain_elbo_is_one_objective_however_a_run_names_it():
    old = comparable(_metrics())  # written before --objective
    assert old["objective"] == "elbo"
    assert comparable(_metrics(objective="vae", beta=1.0)) == old
    assert comparable(_metrics(objective="beta-vae", beta=1)) == old
    four = comparable(_metrics(objective="beta-vae", beta=4.0))
    assert four["objective"] == "beta-vae beta=4" and four != old
    assert comparable(_metrics(objective="beta-vae", beta=4)) == four
    assert comparable(_metrics(objective="beta-vae", beta=0.5))["objective"] == "beta-vae beta=0.5"


def _vaebench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_run_beta_vae_records_its_objective_and_the_plain_elbo(tmp_path, tiny_dir):
    out = tmp_path / "run"
    args = ["run", "-b", "numpy", "-m", "iwae-mlp", "--epochs", "1", "--batch-size", "64", "--limit-train", "128"]
    proc = _vaebench(
        *args, "--objective", "beta-vae", "--beta", "4", "--data-dir", str(tiny_dir), "--out", str(out), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "train beta-vae (beta 4)" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["config"]["objective"] == "beta-vae" and metrics["config"]["beta"] == 4.0
    entry = metrics["history"][0]
    assert entry["train_neg_elbo"] is None and np.isfinite(entry["train_objective"])
    assert entry["test_neg_elbo"] == pytest.approx(entry["test_recon"] + entry["test_kl"], rel=1e-6)
    assert entry["test_objective"] == pytest.approx(entry["test_recon"] + 4 * entry["test_kl"], rel=1e-9)
    assert comparable(metrics)["objective"] == "beta-vae beta=4"


def test_a_plain_run_records_the_vae_objective_and_no_extra_fields(tmp_path, tiny_dir):
    out = tmp_path / "run"
    args = ["run", "-b", "numpy", "-m", "mlp", "--epochs", "1", "--batch-size", "64", "--limit-train", "64", "-q"]
    proc = _vaebench(*args, "--data-dir", str(tiny_dir), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["objective"] == "vae" and metrics["config"]["beta"] == 1.0
    entry = metrics["history"][0]
    assert np.isfinite(entry["train_neg_elbo"]) and "train_objective" not in entry and "test_objective" not in entry
    assert comparable(metrics)["objective"] == "elbo"


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--objective", "beta-vae", "--beta", "-1"], "--beta must be a finite number, 0 or more, got -1.0"),
        (["--objective", "beta-vae", "--beta", "nan"], "--beta must be a finite number, 0 or more, got nan"),
        (["--beta", "4"], "--objective vae has beta 1"),
        (["--objective", "vq"], "--objective"),
        (["--objective", "iwae", "--iw-samples", "0"], "--iw-samples must be a whole number from 1 to 10000, got 0"),
        (["--iw-samples", "5"], "--iw-samples 5 is the sample count of --objective iwae; --objective vae draws 1"),
    ],
)
def test_bad_beta_is_one_line_and_exit_2(tmp_path, tiny_dir, flags, needle):
    out = tmp_path / "run"
    proc = _vaebench("run", "-b", "numpy", "-m", "mlp", *flags, "--data-dir", str(tiny_dir), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    if needle.startswith(("--beta", "--iw-samples")):
        assert proc.stderr.strip().count("\n") == 0


# -- the IWAE bound (Burda, Grosse & Salakhutdinov 2015, eq. 8) ------------------------------------------------------


def _iwae_spec(k: int) -> ModelSpec:
    return _small_tanh_spec(Objective("iwae", samples=k))


def _perturbed64(spec: ModelSpec, seed: int = 1) -> dict[str, np.ndarray]:
    gen = np.random.default_rng(seed)
    return {k: v.astype(np.float64) + gen.normal(0, 0.1, v.shape) for k, v in init_params(spec, seed).items()}


def _independent_iwae(spec: ModelSpec, params: dict, x: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """The bound per image from the densities themselves, constants and all: log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x)."""
    mean, logvar = reference.encode(spec, params, x)
    n, k, d = eps.shape
    z = mean[:, None] + np.exp(logvar / 2)[:, None] * eps
    logits = reference.decode_logits(spec, params, z.reshape(n * k, d)).reshape(n, k, -1)
    t = np.asarray(x, np.float64).reshape(n, 1, -1)
    log_px = (t * -np.logaddexp(0, -logits) + (1 - t) * -np.logaddexp(0, logits)).sum(axis=-1)
    log_pz = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(axis=-1)
    var = np.exp(logvar)[:, None]
    log_qz = (-0.5 * (z - mean[:, None]) ** 2 / var - 0.5 * np.log(2 * np.pi * var)).sum(axis=-1)
    return np.logaddexp.reduce(log_px + log_pz - log_qz, axis=1) - np.log(k)


@pytest.mark.parametrize("k", [1, 2, 7])
def test_the_iwae_loss_is_the_bound_written_from_its_densities(k):
    spec = _iwae_spec(k)
    params = _perturbed64(spec)
    gen = np.random.default_rng(3)
    x, eps = gen.random((5, 28, 28, 1)), gen.standard_normal((5, k, 3))
    loss, _ = reference.loss_and_grads(spec, params, x, eps)
    assert loss == pytest.approx(-float(np.mean(_independent_iwae(spec, params, x, eps))), rel=1e-12)


def test_iwae_at_k_1_is_the_single_sample_elbo_and_averages_to_the_plain_bound():
    """K = 1: one importance weight, log p(x, z) - log q(z | x), the ELBO's one-sample estimate (Burda et al. sec. 3);
    its mean over noise is the analytic -ELBO the plain VAE trains on, and its gradient's mean that VAE's gradient."""
    spec = _iwae_spec(1)
    params = _perturbed64(spec)
    gen = np.random.default_rng(4)
    x = gen.random((1, 28, 28, 1))
    draws = gen.standard_normal((4000, 1, 1, 3))
    plain = spec.with_objective(PLAIN)
    iwae, vae, iwae_g, vae_g = [], [], [], []
    for eps in draws[:4000]:
        loss, grads = reference.loss_and_grads(spec, params, x, eps)
        ref_loss, ref_grads = reference.loss_and_grads(plain, params, x, eps[:, 0])
        iwae.append(loss), vae.append(ref_loss)
        if len(iwae_g) < 400:
            iwae_g.append(grads["encoder/logvar/bias"]), vae_g.append(ref_grads["encoder/logvar/bias"])
    # the same noise: the reconstructions are the same, only the KL is sampled rather than analytic
    diff = np.array(iwae) - np.array(vae)
    assert abs(diff.mean()) < 4 * diff.std() / np.sqrt(len(diff)) and diff.std() > 0
    g = np.array(iwae_g) - np.array(vae_g)
    assert np.all(np.abs(g.mean(axis=0)) < 4 * g.std(axis=0) / np.sqrt(len(g)) + 1e-12)
    # and the noise the core draws for K = 1 is the plain VAE's, number for number
    from vaebench.model.batches import train_batches

    images = (gen.random((8, 28, 28)) * 255).astype(np.uint8)
    one = next(train_batches(images, 4, (1, 3), 0, 1)).eps
    assert one.shape == (4, 1, 3) and np.array_equal(one[:, 0], next(train_batches(images, 4, 3, 0, 1)).eps)
    assert next(train_batches(images, 4, (5, 3), 0, 1)).eps.shape == (4, 5, 3)


def test_the_iwae_bound_tightens_with_k():
    """Burda et al., Theorem 1: L_1 <= L_K <= L_K' for K <= K', in expectation: over 60 images here."""
    bounds = []
    for k in (1, 5, 50):
        spec = _iwae_spec(k)
        params = _perturbed64(spec)
        gen = np.random.default_rng(5)
        x, eps = gen.random((60, 28, 28, 1)), gen.standard_normal((60, k, 3))
        bounds.append(-reference.loss_and_grads(spec, params, x, eps)[0])
    assert bounds[0] < bounds[1] < bounds[2]


def test_iwae_gradients_match_central_differences():
    spec = _iwae_spec(3)
    params = _perturbed64(spec)
    gen = np.random.default_rng(2)
    x, eps = gen.random((4, 28, 28, 1)), gen.standard_normal((4, 3, 3))
    _assert_gradients_match_central_differences(spec, params, x, eps, list(params), gen, picks=3, rel=2e-5, abs_=1e-6)


def test_the_numpy_backend_trains_on_the_iwae_bound_and_refuses_one_sample_noise():
    from vaebench.errors import ShapeError

    spec = get_model("mlp").spec.with_objective(Objective("iwae", samples=4))
    params = perturbed_params("mlp")
    x, _ = sample_inputs(spec.latent_dim, n=3)
    eps = np.random.default_rng(0).standard_normal((3, 4, spec.latent_dim), dtype=np.float32)
    model = NumpyBackend(device="cpu").build(spec, AdamConfig())
    model.load_weights(params)
    assert model.fetch([model.train_step(x, eps)])[0] == pytest.approx(reference.loss_and_grads(spec, params, x, eps)[0])
    with pytest.raises(ShapeError, match=r"expected \(3, 4, 20\)"):
        model.train_step(x, eps[:, 0])
    assert model.evaluate(x, eps[:, 0]).neg_elbo.shape == (3,)  # evaluation stays the plain bound, one sample


def test_iw_samples_travel_in_the_config_and_name_their_comparison():
    cfg = TrainConfig(model="mlp", objective="iwae", iw_samples=5).resolved()
    assert cfg.spec.objective == Objective("iwae", 1.0, 5) and cfg.noise_shape == (5, 20)
    assert TrainConfig(model="mlp").resolved().noise_shape == (20,)
    assert comparable(_metrics(objective="iwae", beta=1.0, iw_samples=5))["objective"] == "iwae k=5"
    with pytest.raises(ConfigError, match="--iw-samples must be a whole number"):
        Objective("iwae", samples=0)


def test_run_iwae_records_both_bounds_and_resumes_with_its_k(tmp_path, tiny_dir, monkeypatch):
    """The training bound per epoch (train_objective), the test -ELBO and the test IWAE-K bound; a resumed run keeps K."""
    from click.testing import CliRunner

    from vaebench.cli import cli
    from vaebench.plugin.contract import Model
    from vaebench.run import runner

    args = ["run", "-b", "numpy", "-m", "mlp", "--epochs", "2", "--batch-size", "64", "--latent-dim", "4", "-q"]
    args += ["--objective", "iwae", "--iw-samples", "3", "--data-dir", str(tiny_dir)]
    proc = _vaebench(*args, "--out", str(tmp_path / "whole"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert whole["config"]["objective"] == "iwae" and whole["config"]["iw_samples"] == 3
    for entry in whole["history"]:
        assert entry["train_neg_elbo"] is None and np.isfinite(entry["train_objective"])
        assert entry["test_neg_elbo"] == pytest.approx(entry["test_recon"] + entry["test_kl"], rel=1e-6)
        assert np.isfinite(entry["test_objective"]) and entry["test_objective"] != entry["test_neg_elbo"]
    assert comparable(whole)["objective"] == "iwae k=3"

    original, train_staged = runner.train_batches, Model.train_staged

    def batches(*a, **kw):
        batches.epoch = a[4]
        return original(*a, **kw)

    def staged_step(self, staged):
        if batches.epoch == 2:
            os.kill(os.getpid(), __import__("signal").SIGINT)
        return train_staged(self, staged)

    monkeypatch.setattr(runner, "train_batches", batches)
    monkeypatch.setattr(Model, "train_staged", staged_step)
    CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "cut")])
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "metrics.json").read_text())["status"] == "interrupted"
    proc = _vaebench("run", "--resume", str(tmp_path / "cut"), "-q", "--data-dir", str(tiny_dir), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert cut["config"]["iw_samples"] == 3 and cut["resumed"]
    for a, b in zip(whole["history"], cut["history"], strict=True):
        for key in ("train_objective", "test_neg_elbo", "test_objective"):
            assert b[key] == pytest.approx(a[key], rel=1e-9), (a["epoch"], key)
