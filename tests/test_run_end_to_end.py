"""The whole pipeline through the CLI: tiny made-up data, then one real-MNIST epoch."""

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.model.catalogue import get_model
from vaebench.model.weights import check_params, load_params
from vaebench.plugin import registry

INSTALLED = sorted(registry.installed())


@pytest.mark.parametrize("model, latent", [("conv", 2), ("mlp", 3)])
def test_run_writes_a_complete_folder(tiny_dir, tmp_path, backend, model, latent):
    out = tmp_path / "run"
    args = f"run --backend {backend} --model {model} --epochs 2 --batch-size 32 --latent-dim {latent} --quiet --binarize"
    result = CliRunner().invoke(cli, [*args.split(), "--data-dir", str(tiny_dir), "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["schema_version"] == 1
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    for entry in metrics["history"]:
        for key in ("train_neg_elbo", "test_neg_elbo", "test_recon", "test_kl", "epoch_seconds", "train_images_per_second"):
            assert np.isfinite(entry[key]), key
        assert entry["test_neg_elbo"] == pytest.approx(entry["test_recon"] + entry["test_kl"])
    assert metrics["final"]["test_neg_elbo"] == metrics["history"][-1]["test_neg_elbo"]
    env = metrics["environment"]
    assert env["backend"]["framework"] == backend and env["backend"]["threads"] and env["cpu_model"]
    assert env["plugin"]["distribution"] == ("vaebench" if backend == "numpy" else f"vaebench-{backend}")
    assert metrics["data"]["train_used"] == 256 and metrics["timing"]["first_step_seconds"] > 0
    check_params(get_model(model).spec.with_latent(latent), load_params(out / "weights.npz"))
    evaluation = metrics["evaluations"][backend]
    assert evaluation["active_units"] == metrics["final"]["active_units"] and len(evaluation["kl_per_dim"]) == latent
    for picture in ("grid.png", "samples.png", "reconstructions.png", "latent.png", "curves.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_gives_the_same_history(tiny_dir, tmp_path, backend):
    histories = []
    for name in ("a", "b"):
        args = f"run --backend {backend} --model mlp --epochs 1 --batch-size 64 --quiet --seed 7".split()
        args += ["--data-dir", str(tiny_dir), "--out", str(tmp_path / name)]
        assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0
        histories.append(json.loads((tmp_path / name / "metrics.json").read_text())["history"][0])
    # TensorFlow's CPU kernels promise no bitwise run-to-run equality without tf.config's op determinism, which the
    # plugin does not switch on (its cost is not measured): in the full suite, two runs of keras once differed in the
    # last float32 bits of one step's loss (475.4528422355652 vs 475.45284128189087, 2e-9 relative). A wrong or
    # unused seed moves these by nats, so 1e-6 relative still catches it; every other backend is held bit for bit.
    same = (lambda a, b: a == pytest.approx(b, rel=1e-6, abs=0)) if backend == "keras" else (lambda a, b: a == b)
    assert same(histories[0]["train_neg_elbo"], histories[1]["train_neg_elbo"])
    assert same(histories[0]["test_neg_elbo"], histories[1]["test_neg_elbo"])


def test_an_existing_run_is_not_overwritten(tiny_dir, tmp_path, backend):
    out = tmp_path / "run"
    args = [*f"run --backend {backend} --model mlp --epochs 0 -q".split(), "--data-dir", str(tiny_dir), "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    before = (out / "metrics.json").read_bytes()
    proc = subprocess.run([sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "already holds a run" in proc.stderr and "Traceback" not in proc.stderr
    assert (out / "metrics.json").read_bytes() == before
    assert CliRunner().invoke(cli, [*args, "--overwrite"]).exit_code == 0


def test_batch_larger_than_the_data_is_refused(tiny_dir, tmp_path, backend):
    args = [
        *f"run --backend {backend} --model mlp --batch-size 999".split(),
        "--data-dir",
        str(tiny_dir),
        "--out",
        str(tmp_path / "r"),
    ]
    proc = subprocess.run([sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "larger than the 256 training images" in proc.stderr


def test_eval_scores_one_backends_weights_with_every_backend(tiny_dir, tmp_path):
    """Cross-loading: canonical weights trained by one backend give every backend the same test -ELBO and NLL."""
    out = tmp_path / "run"
    trainer = INSTALLED[0] if "torch" not in INSTALLED else "torch"
    args = [*f"run --backend {trainer} --model conv --epochs 1 --batch-size 32 -q".split(), "--data-dir", str(tiny_dir)]
    assert CliRunner().invoke(cli, [*args, "--out", str(out)], catch_exceptions=False).exit_code == 0
    scores = {}
    for name in (b for b in ("numpy", "torch", "jax", "keras") if b in INSTALLED):
        result = CliRunner().invoke(cli, ["eval", str(out), "--backend", name, "--k", "16", "--data-dir", str(tiny_dir), "-q"])
        assert result.exit_code == 0, result.output
        scores[name] = json.loads((out / "metrics.json").read_text())["evaluations"][name]
    first = scores[trainer]
    for name, score in scores.items():
        assert score["test_neg_elbo"] == pytest.approx(first["test_neg_elbo"], rel=1e-5), name
        assert score["test_nll"] == pytest.approx(first["test_nll"], rel=1e-5), name
        assert score["test_nll"] <= score["test_neg_elbo"] + 1.0


def test_eval_refuses_a_folder_that_is_not_a_finished_run(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "eval", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 2 and "is not a vaebench run" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("engine", ["keras-jax", "keras-torch"])
def test_keras_engines_run_in_their_own_process(tiny_dir, tmp_path, engine):
    if engine not in INSTALLED:
        pytest.skip(f"{engine} not installed")
    out = tmp_path / engine
    args = [*f"run --backend {engine} --model conv --epochs 1 --batch-size 64 -q".split(), "--data-dir", str(tiny_dir)]
    proc = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", *args, "--out", str(out)], capture_output=True, text=True, timeout=600
    )
    if "not installed" in proc.stderr:
        pytest.skip(proc.stderr.strip())
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["environment"]["backend"]["engine"] == engine.split("-")[1]


@pytest.mark.slow
def test_mlp_one_epoch_on_real_mnist(mnist_dir, tmp_path, backend):
    """One epoch of the PyTorch-examples VAE on real MNIST.

    Measured here (seeds 0, 1, 2): test -ELBO 127.7, 127.9, 128.1 nats, as the
    pytorch/examples log after its first epoch (~127); the bound leaves 4 nats.
    """
    args = [
        *f"run --backend {backend} --model mlp --epochs 1 -q".split(),
        "--data-dir",
        str(mnist_dir),
        "--out",
        str(tmp_path / "r"),
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert metrics["data"]["canonical"]
    assert 100 < metrics["final"]["test_neg_elbo"] < 132
