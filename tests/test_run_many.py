"""``vaebench run --backend a,b``: the cost estimate's arithmetic, the backend list, and a real two-backend run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaebench.errors import BackendError, ConfigError
from vaebench.model.config import TrainConfig
from vaebench.sweep import local


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"backend": "jax", "model": "conv", **kw}).resolved()


def test_estimate_arithmetic_from_an_injected_probe():
    probe = local.Probe("jax", startup_seconds=5.0, first_step_seconds=3.0, step_seconds=0.5, steps=4, threads=2)
    cfg = _cfg(epochs=5, batch_size=128)
    est = local.estimate(probe, cfg, train_images=60_000, test_images=10_000)
    steps = 60_000 // 128  # the last partial batch is dropped
    evaluation = 10_000 * 0.5 / 128 / 3
    assert est.images_per_second == pytest.approx(256.0)
    assert est.epoch_seconds == pytest.approx(steps * 0.5 + evaluation)
    assert est.total_seconds == pytest.approx(5.0 + (3.0 - 0.5) + 5 * (steps * 0.5 + evaluation) + evaluation)


def test_the_issue_case_jax_conv_at_44_images_per_second_is_about_two_hours():
    probe = local.Probe("jax", 8.0, 20.0, 128 / 44, 2, 2)
    est = local.estimate(probe, _cfg(epochs=5), 60_000, 10_000)
    assert 1.8 * 3600 < est.total_seconds < 2.2 * 3600
    assert local.duration(est.total_seconds) == "2.0 h"


def test_limit_train_and_eval_k_enter_the_estimate():
    probe = local.Probe("torch", 0.0, 0.1, 0.1, 10, 1)
    short = local.estimate(probe, _cfg(epochs=2, batch_size=100, limit_train=1000), 60_000, 10_000)
    evaluation = 10_000 * 0.1 / 100 / 3
    assert short.epoch_seconds == pytest.approx(10 * 0.1 + evaluation)
    scored = local.estimate(probe, _cfg(epochs=2, batch_size=100, limit_train=1000, eval_k=100), 60_000, 10_000)
    assert scored.total_seconds - short.total_seconds == pytest.approx(100 * evaluation)


def test_the_table_has_every_backend_and_the_total():
    cfg = _cfg(epochs=5)
    ests = [local.Estimate("torch", 1200.0, 60.0, 320.0), local.Estimate("jax", 44.0, 1437.0, 7200.0)]
    lines = local.estimate_lines(ests, cfg)
    assert lines[0].startswith("Estimated cost: conv, 5 epochs")
    body = {line.split()[0]: line.split() for line in lines[2:-1]}
    assert body["torch"][1:] == ["1,200", "60", "s", "5.3", "min"]
    assert body["jax"][-2:] == ["2.0", "h"]
    assert body["total"][-2:] == ["2.1", "h"]  # 7,520 s
    assert local.duration(4.25) == "4.2 s" and local.duration(42) == "42 s" and local.duration(300) == "5.0 min"


def test_backend_lists():
    installed = ["numpy", "torch", "jax", "keras"]
    assert local.parse_backends("all", installed) == ["jax", "keras", "torch"]  # the float64 reference is left out
    assert local.parse_backends("torch, jax", installed) == ["torch", "jax"]
    with pytest.raises(BackendError, match="keras-torch"):
        local.parse_backends("torch,keras-torch", installed)
    with pytest.raises(ConfigError, match="twice"):
        local.parse_backends("torch,torch", installed)
    with pytest.raises(BackendError, match="no framework"):
        local.parse_backends("all", ["numpy"])


def test_a_failed_backend_does_not_stop_the_others_and_ctrl_c_stops_the_rest(tmp_path):
    codes = {"a": 0, "b": 2, "c": 0}
    trained = []

    def train(cfg, run_dir, options):
        trained.append(cfg.backend)
        return subprocess.CompletedProcess([], codes[cfg.backend])

    outcomes = local.run_backends(_cfg(), ["a", "b", "c"], tmp_path, log=lambda _m: None, train=train)
    assert trained == ["a", "b", "c"]
    assert [o.error is None for o in outcomes] == [True, False, True]
    assert outcomes[1].run_dir == tmp_path / "b"
    codes["b"] = 130
    trained.clear()
    outcomes = local.run_backends(_cfg(), ["a", "b", "c"], tmp_path, log=lambda _m: None, train=train)
    assert trained == ["a", "b"] and outcomes[-1].error == "interrupted"


def _vaebench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_two_backends_one_folder_one_report(tmp_path, tiny_dir):
    from vaebench.plugin import registry

    if "torch" not in registry.installed():
        pytest.skip("torch not installed")
    out = tmp_path / "cmp"
    common = ["--model", "mlp", "--epochs", "1", "--data-dir", str(tiny_dir), "--out", str(out), "--threads", "1", "-q"]
    proc = _vaebench("run", "--backend", "numpy,torch", *common, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert text.index("Estimated cost") < text.index("[1/2] numpy") < text.index("[2/2] torch")
    assert "total" in text and "report.html" in text
    for name in ("numpy", "torch"):
        assert json.loads((out / name / "metrics.json").read_text())["status"] == "completed"
    page = (out / "report.html").read_text()
    assert page.count("<figure>") == 2  # both grids, side by side
    assert "numpy" in page and "torch" in page

    again = _vaebench("run", "--backend", "numpy,torch", *common, cwd=tmp_path)  # refused before any probe
    assert again.returncode == 2 and "Probing" not in again.stdout
    assert again.stderr.strip().count("\n") == 0 and "--overwrite" in again.stderr


def test_dry_run_trains_nothing_and_bad_names_are_one_line(tmp_path, tiny_dir):
    out = tmp_path / "cmp"
    proc = _vaebench(
        "run", "-b", "numpy,numpy", "-m", "mlp", "--data-dir", str(tiny_dir), "--out", str(out), "--dry-run", cwd=tmp_path
    )
    assert proc.returncode == 2 and "twice" in proc.stderr and "Traceback" not in proc.stderr
    proc = _vaebench(
        "run", "-b", "numpy,", "-m", "mlp", "--epochs", "2", "--data-dir", str(tiny_dir), "--out", str(out), "--dry-run",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Estimated cost: mlp, 2 epochs" in proc.stdout and not out.exists()


def test_every_nll_in_the_runs_table_names_its_k():
    from vaebench.report.tables import runs_rows

    def run(k, where):
        m = {
            "config": {"backend": "torch", "model": "conv"},
            "history": [],
            "status": "completed",
            "final": {"test_neg_elbo": 99.0},
        }
        if where == "final":
            m["final"].update(test_nll=90.0, iwae_k=k)
        elif where == "eval":  # what `vaebench eval` adds
            m["evaluations"] = {"torch": {"test_nll": 90.0, "iwae_k": k}}
        return m

    table = runs_rows([(Path(f"r{k}"), run(k, w)) for k, w in ((10, "final"), (5000, "eval"))] + [(Path("none"), run(0, "none"))])
    assert table.header[5] == "NLL (IWAE k)"
    cells = [row[5][0] for row in table.rows]
    assert cells == ["90.00 (k=10)", "90.00 (k=5000)", "nan"]
    assert [row[5][1] for row in table.rows][:2] == [90.0, 90.0]  # sorted by value, not by text
