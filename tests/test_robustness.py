"""Runs that survive: resume, signals, divergence, bad input, and a fuzzed IDX reader."""

import gzip
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaebench.cli import cli
from vaebench.errors import DataError
from vaebench.io.datasets import read_idx
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.weights import load_params
from vaebench.plugin import registry
from vaebench.plugin.contract import Model
from vaebench.run import runner
from vaebench.testing import idx_bytes

INSTALLED = sorted(registry.installed())


def _run(args, **kw):
    return subprocess.run([sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, timeout=600, **kw)


def _interrupt_at(monkeypatch, epoch_step):
    """Deliver a real SIGINT to this process just before the given (epoch, step) is trained.

    Counted where the step is trained, not where its batch is drawn: batches are
    drawn ahead, on the prefetch thread.
    """
    original, train_staged = runner.train_batches, Model.train_staged
    at = {"epoch": 0, "step": 0}

    def batches(images, batch_size, latent_dim, seed, epoch, dynamic_binarize=False):
        at.update(epoch=epoch, step=0)
        return original(images, batch_size, latent_dim, seed, epoch, dynamic_binarize)

    def staged_step(self, staged):
        at["step"] += 1
        if (at["epoch"], at["step"]) == epoch_step:
            os.kill(os.getpid(), signal.SIGINT)
        return train_staged(self, staged)

    monkeypatch.setattr(runner, "train_batches", batches)
    monkeypatch.setattr(Model, "train_staged", staged_step)


def test_resume_reproduces_the_uninterrupted_history(tiny_dir, tmp_path, monkeypatch, backend):
    base = [*f"run --backend {backend} --model mlp --epochs 3 --batch-size 32 -q --binarize".split(), "--data-dir", str(tiny_dir)]
    assert CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "whole")], catch_exceptions=False).exit_code == 0

    _interrupt_at(monkeypatch, (2, 3))
    result = CliRunner().invoke(cli, [*base, "--out", str(tmp_path / "cut")])
    assert isinstance(result.exception, SystemExit) or result.exit_code != 0
    cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert cut["status"] == "interrupted" and len(cut["history"]) == 1
    monkeypatch.undo()

    resumed = CliRunner().invoke(cli, ["run", "--resume", str(tmp_path / "cut"), "--data-dir", str(tiny_dir), "-q"])
    assert resumed.exit_code == 0, resumed.output
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    assert b["status"] == "completed" and b["resumed"] == [{"epoch": 1, "step": 3}]
    for x, y in zip(a["history"], b["history"], strict=True):
        for key in ("train_neg_elbo", "test_neg_elbo", "test_recon", "test_kl"):
            assert y[key] == pytest.approx(x[key], rel=1e-5), (x["epoch"], key)
    wa, wb = load_params(tmp_path / "whole" / "weights.npz"), load_params(tmp_path / "cut" / "weights.npz")
    for key in wa:
        np.testing.assert_allclose(wb[key], wa[key], rtol=1e-4, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_real_signal_stops_checkpoints_and_says_how_to_resume(tiny_dir, tmp_path, sig, code):
    if "torch" not in INSTALLED:
        pytest.skip("uses the torch backend")
    out = tmp_path / "run"
    args = [*"run --backend torch --model conv --epochs 500 --batch-size 16 -q".split(), "--data-dir", str(tiny_dir)]
    proc = subprocess.Popen([sys.executable, "-m", "vaebench.cli", *args, "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if json.loads((out / "metrics.json").read_text())["history"]:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err
    assert "Traceback" not in err and f"vaebench run --resume {out}" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "interrupted"
    assert (out / "checkpoint.npz").exists() and not (out / "weights.npz").exists()


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(tiny_dir, tmp_path, monkeypatch, backend):
    model_cls = type(registry.load(backend)[0](device="cpu").build(get_model("mlp").spec, AdamConfig()))
    calls = {"n": 0}
    original = model_cls._fetch

    def fetch(self, values):
        out = np.array(original(self, values), dtype=np.float64)
        calls["n"] += len(values)
        if calls["n"] > 12:  # epoch 2 of 8 steps each
            out[-1] = np.nan
        return out

    monkeypatch.setattr(model_cls, "_fetch", fetch)
    out = tmp_path / "run"
    args = [*f"run --backend {backend} --model mlp --epochs 4 --batch-size 32 -q".split(), "--data-dir", str(tiny_dir)]
    result = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert result.exit_code != 0
    metrics = json.loads((out / "metrics.json").read_text())  # strict JSON: no NaN anywhere
    assert metrics["status"] == "diverged" and "epoch 2, step" in metrics["error"] and "last finite" in metrics["error"]
    assert [h["epoch"] for h in metrics["history"]] == [1]
    with np.load(out / "checkpoint.npz") as ckpt:
        assert json.loads(bytes(ckpt["meta"]).decode())["epoch"] == 1
        assert all(np.all(np.isfinite(ckpt[k])) for k in ckpt.files if k != "meta")


def test_divergence_exit_code_and_message_from_the_cli(tiny_dir, tmp_path):
    if "torch" not in INSTALLED:
        pytest.skip("uses the torch backend")
    proc = _run(
        [
            *"run --backend torch --model mlp --epochs 5 --batch-size 32 --lr 1e30 -q".split(),
            "--data-dir",
            str(tiny_dir),
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert proc.returncode == 1 and "training diverged at epoch" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["status"] == "diverged"


def test_resume_refuses_what_is_not_a_resumable_run(tmp_path, tiny_dir):
    proc = _run(["run", "--resume", str(tmp_path)])
    assert proc.returncode == 2 and "not a vaebench run" in proc.stderr
    (tmp_path / "metrics.json").write_text(json.dumps({"schema_version": 999}))
    proc = _run(["run", "--resume", str(tmp_path)])
    assert proc.returncode == 2 and "schema version 999" in proc.stderr


def test_unwritable_output_is_one_line_exit_2(tmp_path, tiny_dir):
    """An --out that cannot be created (here: below a file; as root, permissions would not stop it)."""
    (tmp_path / "afile").write_text("x")
    proc = _run(["run", "-b", "numpy", "--model", "mlp", "--data-dir", str(tiny_dir), "--out", str(tmp_path / "afile" / "r")])
    assert proc.returncode == 2 and "cannot create" in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch):
    from vaebench.io import fileio

    target = tmp_path / "metrics.json"
    fileio.atomic_write_json(target, {"epoch": 1})

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(fileio.VaebenchError, match="No space left"):
        fileio.atomic_write_json(target, {"epoch": 2})
    assert json.loads(target.read_text()) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_idx_files_fail_only_with_the_cores_error(tmp_path, data):
    """Random bytes, mutated valid files, lying headers: DataError or a correct array; never a hang or a huge allocation."""
    valid = idx_bytes(np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28))
    kind = data.draw(st.sampled_from(["random", "mutated", "header"]))
    if kind == "random":
        payload = data.draw(st.binary(max_size=4000))
    elif kind == "mutated":
        payload = bytearray(valid)
        for _ in range(data.draw(st.integers(1, 8))):
            payload[data.draw(st.integers(0, len(payload) - 1))] = data.draw(st.integers(0, 255))
        payload = bytes(payload[: data.draw(st.integers(0, len(payload)))])
    else:
        dims = data.draw(st.lists(st.integers(0, 2**32 - 1), min_size=3, max_size=3))
        payload = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in dims) + data.draw(st.binary(max_size=3000))
    compress = data.draw(st.booleans())
    path = tmp_path / "fuzz.idx"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    try:
        array, _ = read_idx(path, 3, (28, 28))
    except DataError:
        return
    assert array.dtype == np.uint8 and array.shape[1:] == (28, 28)
    assert array.nbytes + 16 == len(payload)
