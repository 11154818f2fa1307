"""``vaebench parity`` and ``vaebench bench`` take ``run``'s ``--objective``, ``--beta`` and ``--iw-samples`` (issue #28).

Parity trains every backend on the objective asked for (the IWAE bound's noise
``(batch, K, latent)``) and says which; bench times that objective's step and
each row's ``settings.objective`` names it, while a default (``vae``) row stays
as rows always were. A bad value is one line and exit 2, before anything runs.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vaebench.measure import parity
from vaebench.measure.worker import Cell, CellRequest
from vaebench.model.catalogue import get_model
from vaebench.model.costs import step_flops_per_image
from vaebench.model.loss import PLAIN, Objective
from vaebench.plugin import registry

PARITY = ("parity", "--model", "mlp", "--backends", "numpy,torch", "--steps", "2")
BENCH = ("bench", "--backends", "numpy", "--models", "mlp", "--batch-sizes", "16", "--repeats", "2", "--threads", "1")
QUIET = ("--no-inference", "--allow-busy", "--peak-seconds", "0")


def _vaebench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--objective", "iwae", "--iw-samples", "3"], "objective iwae (K=3)"),
        (["--objective", "beta-vae", "--beta", "4"], "objective beta-vae (beta 4)"),
    ],
)
def test_parity_passes_on_another_objective_and_says_which(flags, says):
    pytest.importorskip("vaebench_torch")  # nox -s core installs no framework plugin
    proc = _vaebench(*PARITY, *flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    header, _, row = proc.stdout.strip().splitlines()
    assert header.startswith(f"model mlp, {says}, 2 Adam steps") and row.startswith("numpy vs torch") and row.endswith("yes")


def _parity_header(monkeypatch, *flags: str) -> tuple[str, Objective]:
    """The first line ``vaebench parity`` prints, and the objective it handed the core (which is faked: no backend runs)."""
    from click.testing import CliRunner

    from vaebench.cli import cli
    from vaebench.measure import paritycheck

    asked: list[Objective] = []
    monkeypatch.setattr(parity, "run_parity", lambda *a, **kw: asked.append(kw["objective"]) or [{"ok": True}])
    monkeypatch.setattr(paritycheck, "table", lambda rows: ["the table"])
    result = CliRunner().invoke(cli, ["parity", "--backends", "numpy,torch", *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (objective,) = asked
    return result.output.splitlines()[0], objective


def test_parity_hands_the_objective_to_the_core_and_a_plain_header_is_unchanged(monkeypatch):
    header, objective = _parity_header(monkeypatch, "--objective", "iwae", "--iw-samples", "3")
    assert objective == Objective("iwae", samples=3) and header.startswith("model conv, objective iwae (K=3), 5 Adam steps")
    header, objective = _parity_header(monkeypatch)
    assert objective == PLAIN and header.startswith("model conv, 5 Adam steps, batch 32,")  # as before --objective


def test_each_backends_parity_process_trains_on_the_objective():
    """The worker process gets the objective: its losses are the IWAE bound's (K=3 noise), not the -ELBO's."""
    iwae = Objective("iwae", samples=3)
    plain = parity._in_subprocess("numpy", "mlp", 2, 4)
    sub = parity._in_subprocess("numpy", "mlp", 2, 4, objective=iwae)
    here = parity.compute("numpy", "mlp", 2, 4, objective=iwae)
    np.testing.assert_array_equal(sub["losses"], here["losses"])
    assert not np.allclose(sub["losses"], plain["losses"])
    np.testing.assert_array_equal(sub["neg_elbo"], plain["neg_elbo"])  # the evaluated batch stays the plain -ELBO
    beta = parity.compute("numpy", "mlp", 2, 4, objective=Objective("beta-vae", 4.0))
    assert not np.allclose(beta["losses"], plain["losses"])


@pytest.mark.skipif("jax" not in registry.installed(), reason="needs the jax plugin")
def test_conv_under_the_iwae_bound_is_at_parity_with_the_float64_reference():
    """``vaebench parity --model conv --objective iwae --iw-samples 5``'s jax pair, the worst one measured (1.90% of
    entries past the absolute tolerance, within :data:`~vaebench.measure.paritycheck.PARAM_OUTLIERS_IWAE`), passes,
    its step losses within 1e-4 like every objective's."""
    (row,) = parity.run_parity(["jax", "numpy"], "conv", 5, 32, log=lambda _: None, objective=Objective("iwae", samples=5))
    assert row["pair"] == "jax vs numpy" and row["ok"], row
    assert row["loss_rel"] < 1e-6 and row["param_outliers"] > 0


def test_the_plain_parity_batches_are_the_ones_it_always_drew():
    old = [(x, eps) for x, eps in parity._batches(20, 4, 0, 2)]
    assert all(eps.shape == (4, 20) for _, eps in old)
    iwae = parity._batches(20, 4, 0, 2, Objective("iwae", samples=3))
    assert iwae[0][1].shape == (4, 20) and [eps.shape for _, eps in iwae[1:]] == [(4, 3, 20)] * 2


@pytest.mark.parametrize("command", [PARITY, (*BENCH, *QUIET)])
@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--objective", "iwae", "--iw-samples", "0"], "error: --iw-samples must be a whole number from 1 to 10000, got 0"),
        (["--iw-samples", "0"], "error: --iw-samples must be a whole number from 1 to 10000, got 0"),
        (["--beta", "4"], "error: --beta 4.0 is the KL weight of --objective beta-vae; --objective vae has beta 1"),
        (["--objective", "nope"], "Error: Invalid value for '--objective': 'nope' is not one of 'vae', 'beta-vae', 'iwae'."),
    ],
)
def test_a_bad_objective_is_one_line_and_exit_2_before_anything_runs(tmp_path, command, flags, says):
    out = tmp_path / "b"
    proc = _vaebench(*command, *flags, *(["--out", str(out)] if command[0] == "bench" else []))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.lower().startswith("error")]
    assert errors == [says], proc.stderr
    if says.startswith("error:"):  # the core's refusal: that one line and nothing else
        assert proc.stderr.strip() == says
    assert "running" not in proc.stderr and proc.stdout == "" and not out.exists()


def test_bench_records_the_objective_it_timed(tmp_path):
    out = tmp_path / "b"
    proc = _vaebench(*BENCH, *QUIET, "--objective", "iwae", "--iw-samples", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    (row,) = json.loads((out / "bench.json").read_text())["results"]
    assert row["settings"]["objective"] == {"name": "iwae", "beta": 1.0, "iw_samples": 3, "text": "iwae (K=3)"}
    spec = get_model("mlp").spec  # the cost model decodes K = 3 latents per image: more work than the plain step
    want = step_flops_per_image(spec.with_objective(Objective("iwae", samples=3)), row["batch_size"])
    assert row["work"]["step_flops_per_image"] == pytest.approx(want)
    assert want > step_flops_per_image(spec, row["batch_size"])
    with open(out / "bench.csv", newline="") as fh:
        (line,) = csv.DictReader(fh)
    assert line["objective"] == "iwae (K=3)" and line["model"] == "mlp"


def test_a_bench_worker_trains_the_objective_and_a_plain_request_reads_as_before():
    request = CellRequest("numpy", "mlp", 4, 1, objective="iwae", iw_samples=3)
    assert CellRequest.from_json(request.to_json()) == request
    cell = Cell(request)
    try:
        assert cell.spec.objective == Objective("iwae", samples=3) and cell.batches[0][1].shape == (4, 3, 20)
    finally:
        cell.finish()
    old = CellRequest.from_json(json.dumps({"backend": "numpy", "model": "mlp", "batch_size": 4, "threads": 1}))
    assert old.training_objective == PLAIN


def test_a_plain_bench_row_has_no_objective(monkeypatch):
    from vaebench.measure import bench

    rows = []

    def fake_cell(channels, batch, *a, **k):
        return {
            b: {"train_images_per_second": {"median": 1.0}, "eval_pass_seconds": None, "grid_decode_seconds": None}
            for b in channels
        }

    monkeypatch.setattr(bench, "run_cell", fake_cell)

    class Channel:
        def close(self):
            pass

    for objective in (PLAIN, Objective("beta-vae", 4.0)):
        rows.append(
            next(bench.run_matrix(["numpy"], ["mlp"], [16], 2, threads=1, spawn=lambda r: Channel(), objective=objective))
        )
    assert "objective" not in rows[0]["settings"] and rows[0]["work"] is not None
    assert rows[1]["settings"]["objective"]["text"] == "beta-vae (beta 4)" and rows[1]["work"] is not None


def test_bench_refuses_another_objective_with_time_to_quality(tmp_path):
    out = tmp_path / "b"
    proc = _vaebench(*BENCH, *QUIET, "--objective", "iwae", "--iw-samples", "3", "--ttq-models", "mlp", "--out", str(out))
    assert proc.returncode == 2 and proc.stdout == "", proc.stdout  # refused before the table's header
    says = "error: --objective times the throughput matrix; time to quality (--ttq-models) trains the plain VAE"
    assert proc.stderr.strip() == says
    assert not (out / "bench.json").exists()


def test_parity_and_bench_help_list_the_objective_options():
    from click.testing import CliRunner

    from vaebench.cli import cli

    for command in ("run", "parity", "bench"):
        text = CliRunner().invoke(cli, [command, "--help"], terminal_width=200).output
        assert all(flag in text for flag in ("--objective [vae|beta-vae|iwae]", "--beta FLOAT", "--iw-samples INTEGER")), command
