"""`vaebench bench` and `vaebench compare` end to end, on the framework-free numpy backend."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.measure.timing import measure
from vaebench.model.catalogue import get_model
from vaebench.model.costs import model_costs


def test_measure_interleaves_and_reports_median_and_spread():
    calls = []
    results = measure(
        {"a": (lambda: calls.append("a"), lambda _: None), "b": (lambda: calls.append("b"), lambda _: None)},
        batch_size=10,
        windows=3,
        steps=2,
        warmup=2,
    )
    assert calls[4:] == ["a", "a", "b", "b"] * 3  # after the warm-ups, windows alternate
    summary = results["a"].summary()
    assert summary["windows"] == 3 and summary["min"] <= summary["q1"] <= summary["median"] <= summary["q3"] <= summary["max"]
    assert summary["compile_seconds"] >= 0


def test_bench_then_compare_writes_tables_and_a_report(tmp_path, tiny_dir):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "vaebench.cli",
            "bench",
            "--backends",
            "numpy",
            "--models",
            "mlp",
            "--batch-sizes",
            "16",
            "--repeats",
            "3",
            "--threads",
            "1",
            "--allow-busy",  # a test asserts what is written, not how fast: a busy CI machine must not refuse it
            "--peak-seconds",
            "0.2",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    (result,) = doc["results"]
    train = result["train_images_per_second"]
    settings = result["settings"]
    assert settings["threads"] == 1 and settings["rounds"] == 3 and settings["schedule"] == "interleaved"
    assert settings["profile"] == "default" and settings["precision"] == "fp32" and result["environment"]["precision"] == "fp32"
    assert train["windows"] == 3 and len(train["samples"]) == 3 and [len(r) for r in train["rounds"]] == [1, 1, 1]
    assert train["min"] <= train["median"] <= train["max"] and result["ratio"]["text"] == "1"
    assert result["eval_pass_seconds"]["median"] > 0 and result["peak_rss_mb"] > 0 and doc["environment"]["cpu_model"]
    # the machine's measured fp32 peak sits in the machine section; each row's GFLOP/s is set against it
    peak, work = doc["environment"]["peak"], result["work"]
    assert peak["peak_gflops"] > 0 and peak["dtype"] == "float32" and "GEMM" in peak["method"]
    assert work["step_flops_per_image"] == model_costs(get_model("mlp").spec, 16)["total"]["step_flops"]
    assert work["achieved_gflops"] == pytest.approx(train["median"] * work["step_flops_per_image"] / 1e9)
    assert work["fraction_of_peak"] == pytest.approx(work["achieved_gflops"] / peak["peak_gflops"])
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert float(rows[0]["achieved_gflops"]) == pytest.approx(work["achieved_gflops"], abs=0.01)
    assert rows[0]["backend"] == "numpy" and float(rows[0]["images_per_second_median"]) > 0
    assert rows[0]["profile"] == "default" and rows[0]["precision"] == "fp32" and rows[0]["objective"] == "vae"
    again = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "bench", "--backends", "numpy", "--models", "mlp", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert again.returncode == 2 and "--overwrite" in again.stderr and json.loads((tmp_path / "bench.json").read_text()) == doc

    run = tmp_path / "run"
    args = ["run", "--backend", "numpy", "--model", "mlp", "--epochs", "2", "-q", "--data-dir", str(tiny_dir), "--out", str(run)]
    assert CliRunner().invoke(cli, args, catch_exceptions=False).exit_code == 0
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "metrics.json").write_text(json.dumps({**json.loads((run / "metrics.json").read_text()), "status": "diverged"}))
    result = CliRunner().invoke(
        cli, ["compare", str(tmp_path / "bench.json"), str(run), str(broken), "--report", str(tmp_path / "rep")]
    )
    assert result.exit_code == 0, result.output
    assert "numpy" in result.output and "diverged" in result.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "Training throughput" in md and "![curves.png](curves.png)" in md and (tmp_path / "rep" / "grids.png").exists()
    html = (tmp_path / "rep" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and 'src="http' not in html


def test_time_to_quality_stops_at_the_target_and_is_none_when_never_reached(tiny_dir, monkeypatch):
    from vaebench.measure import ttq

    monkeypatch.setitem(ttq.TTQ_TARGETS, "mlp", 1e9)  # any -ELBO reaches it: stops after epoch 1
    result = ttq.time_to_quality("numpy", "mlp", seed=0, threads=1, data_dir=str(tiny_dir))
    assert result["epochs"] == 1 and result["seconds"] > 0 and result["test_neg_elbo"] <= 1e9 and result["peak_rss_mb"] > 0
    monkeypatch.setitem(ttq.TTQ_TARGETS, "mlp", -1.0)  # never reached
    assert ttq.time_to_quality("numpy", "mlp", seed=0, threads=1, data_dir=str(tiny_dir))["seconds"] is None


def _harness_row(backend: str, batch: int, plugin: float, ref: float) -> dict:
    def summary(m: float) -> dict:
        return {"median": m, "q1": m * 0.98, "q3": m * 1.02, "min": m * 0.9, "max": m * 1.1, "windows": 5, "compile_seconds": 1.0}

    return {
        "backend": backend,
        "model": "mlp",
        "batch_size": batch,
        "options": {},
        "results": {"plugin": summary(plugin), "reference": summary(ref)},
        "fastest_reference": "reference",
        "ratio": plugin / ref,
    }


def test_harness_documents_merge_per_backend_and_the_report_states_the_cost(tmp_path):
    from vaebench.measure.documents import write_harness

    path = tmp_path / "harness.json"
    write_harness([_harness_row("torch", 128, 900.0, 1000.0)], path)
    write_harness([_harness_row("jax", 128, 1000.0, 950.0)], path)
    write_harness([_harness_row("torch", 128, 970.0, 1000.0)], path)  # a re-run replaces its row
    doc = json.loads(path.read_text())
    assert doc["kind"] == "harness" and sorted((r["backend"], r["ratio"]) for r in doc["results"]) == [
        ("jax", 1000 / 950),
        ("torch", 0.97),
    ]
    result = CliRunner().invoke(cli, ["compare", str(path), "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    assert "+3.1%" in result.output and "-5.0%" in result.output  # step-time overhead 1/ratio - 1
    report = (tmp_path / "report" / "report.md").read_text()
    assert "## What the harness costs" in report and "+3.1%" in report


def test_a_harness_path_holding_something_else_is_refused_and_kept(tmp_path):
    from vaebench.errors import BackendError
    from vaebench.measure.documents import write_harness

    path = tmp_path / "bench.json"
    path.write_text('{"kind": "bench", "results": []}')
    with pytest.raises(BackendError, match="not a harness document"):
        write_harness([_harness_row("torch", 128, 1.0, 1.0)], path)
    assert path.read_text() == '{"kind": "bench", "results": []}'


def test_bench_arguments_are_checked_before_anything_runs(tmp_path):
    for args, needle in [
        (["--batch-sizes", "abc"], "comma-separated list of ints"),
        (["--batch-sizes", "0"], "at least 1"),
        (["--repeats", "1"], "--repeats"),
        (["--threads", "0"], "--threads"),
        (["--no-throughput"], "nothing to do"),
        (["--models", "nope"], "is not a model"),
    ]:
        result = CliRunner().invoke(cli, ["bench", "--backends", "numpy", "--out", str(tmp_path / "b"), *args])
        assert result.exit_code == 2 and needle in result.output, (args, result.output)
    assert not (tmp_path / "b").exists()


def test_nothing_from_a_file_or_folder_name_reaches_report_html_unescaped(tmp_path):
    from vaebench.measure.stats import summarize
    from vaebench.report.page import write_report

    evil = "## <script>alert(1)</script>"
    row = {
        "backend": "<img src=x onerror=alert(1)>",
        "model": evil,
        "batch_size": 8,
        "train_images_per_second": {**summarize([1.0, 2.0]), "compile_seconds": 0.1},
        "ratio": {"text": "1"},
        "settings": {"profile": "default", "precision": "fp32", "schedule": "interleaved"},
        "eval_pass_seconds": None,
        "grid_decode_seconds": None,
        "peak_rss_mb": 1.0,
        "source": str(tmp_path / "![x](y)" / "bench.json"),
        "machine": "# <b>cpu</b>",
    }
    _, html_path = write_report([row], [], tmp_path / "rep")
    page = html_path.read_text()
    assert page.count("<script>") == 1 and "<script>alert" not in page  # the page's own sorting script only
    assert "<img src=x" not in page and "<b>" not in page
    assert "&lt;script&gt;" in page and page.count("<img ") == 1  # the throughput figure, nothing else


def test_compare_shows_the_nll_that_eval_added(tmp_path, tiny_dir):
    """`vaebench eval RUN --k K` stores the NLL under evaluations.<backend>; compare must show it, not nan."""
    out = tmp_path / "run"
    args = ["run", "-b", "numpy", "-m", "mlp", "--epochs", "1", "--batch-size", "32", "-q", "--data-dir", str(tiny_dir)]
    assert CliRunner().invoke(cli, [*args, "--out", str(out)]).exit_code == 0
    before = CliRunner().invoke(cli, ["compare", str(out)])
    assert before.exit_code == 0 and before.output.splitlines()[1].split()[5] == "nan"
    assert CliRunner().invoke(cli, ["eval", str(out), "--k", "8", "-q"]).exit_code == 0
    nll = json.loads((out / "metrics.json").read_text())["evaluations"]["numpy"]["test_nll"]
    after = CliRunner().invoke(cli, ["compare", str(out)])
    assert after.output.splitlines()[1].split()[5] == f"{nll:.2f}"


def _browser():
    import shutil

    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


def test_report_html_in_a_real_browser_sorts_and_shows_every_grid(tmp_path, tiny_dir):
    """Chromium, headless: the page's script runs, a table sorts on load, and the grids are pictures, not blank."""
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium): the report is not checked in a browser")
    from vaebench.report.page import write_report
    from vaebench.run.results import read_metrics

    runs = []
    for seed, backend in ((0, "numpy"), (1, "numpy"), (2, "numpy")):
        out = tmp_path / f"run{seed}"
        args = ["run", "-b", backend, "-m", "conv", "--epochs", "1", "--batch-size", "64", "-q", "--seed", str(seed)]
        assert CliRunner().invoke(cli, [*args, "--data-dir", str(tiny_dir), "--out", str(out)]).exit_code == 0
        runs.append((out, read_metrics(out)))
    _, page = write_report([], runs, tmp_path / "rep")
    url = f"file://{page}#sort=runs:4:desc"  # by test -ELBO, highest first
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,2400", "--virtual-time-budget=5000"]
    proc = subprocess.run(
        [*base, "--enable-logging=stderr", "--v=0", "--dump-dom", url], capture_output=True, text=True, timeout=120
    )
    dom = proc.stdout
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no errors, no warnings, nothing logged
    assert 'aria-sort="descending"' in dom, "the page's script did not run"
    assert 'data-images-total="4"' in dom and 'data-images-loaded="4"' in dom  # the curves and three grids decoded
    body = dom.split('id="runs"')[1].split("</tbody>")[0]
    order = [row.split('data-sort="')[1].split('"')[0] for row in body.split("<tr>")[2:]]  # first cell: the run name
    by_elbo = sorted(runs, key=lambda r: -r[1]["final"]["test_neg_elbo"])
    assert order == [p.name for p, _ in by_elbo]  # every run, in the sorted order
    assert dom.count('class="grid"') == 3
    artifacts = Path(os.environ.get("VAEBENCH_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report.png"
    subprocess.run([*base, f"--screenshot={shot}", url], capture_output=True, timeout=120)
    from matplotlib.image import imread

    pixels = imread(shot)
    assert pixels.shape[0] == 2400 and pixels[..., :3].std() > 0.05  # rendered content, not a blank page


def test_bench_refuses_a_busy_machine_unless_allowed_and_marks_the_rows(tmp_path, monkeypatch):
    from vaebench.plugin import host as environment

    monkeypatch.setattr(environment, "busy_cores", lambda: 1.4)
    args = ["bench", "--backends", "numpy", "--models", "mlp", "--batch-sizes", "8", "--repeats", "2", "--no-inference"]
    refused = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and "this machine is busy (1.4 cores" in refused.output and "--allow-busy" in refused.output
    assert not (tmp_path / "a").exists()
    allowed = CliRunner().invoke(cli, [*args, "--allow-busy", "--out", str(tmp_path / "b")])
    assert allowed.exit_code == 0, allowed.output
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    load = doc["results"][0]["load"]
    assert {k: load[k] for k in ("busy", "busy_cores_at_start", "busy_cores_at_end")} == {
        "busy": True,
        "busy_cores_at_start": 1.4,
        "busy_cores_at_end": 1.4,
    }
    assert load["busy_cores_during"]["samples"] >= 1  # sampled through the matrix, not only at its two ends
    assert doc["method"]["load_at_start"]["busy"] is True
    shown = CliRunner().invoke(cli, ["compare", str(tmp_path / "b")])
    assert "default/fp32 BUSY" in shown.output
