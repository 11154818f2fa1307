"""`vaebench bench` and `vaebench compare` end to end, on the framework-free numpy backend."""

import csv
import json
import subprocess
import sys

from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.timing import measure


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
            "2",
            "--threads",
            "1",
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
    assert result["settings"]["threads"] == 1 and result["train_images_per_second"]["windows"] == 2
    assert result["eval_pass_seconds"]["median"] > 0 and result["peak_rss_mb"] > 0 and doc["environment"]["cpu_model"]
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert rows[0]["backend"] == "numpy" and float(rows[0]["images_per_second_median"]) > 0

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


def test_time_to_quality_counts_from_the_data_and_trims_extremes(tiny_dir, monkeypatch):
    from vaebench import bench

    monkeypatch.setitem(bench.TTQ_TARGETS, "mlp", 1e9)  # any -ELBO reaches it: stops after epoch 1
    result = bench.time_to_quality("numpy", "mlp", seed=0, threads=1, data_dir=str(tiny_dir))
    assert result["epochs"] == 1 and result["seconds"] > 0 and result["test_neg_elbo"] <= 1e9
    monkeypatch.setitem(bench.TTQ_TARGETS, "mlp", -1.0)  # never reached
    assert bench.time_to_quality("numpy", "mlp", seed=0, threads=1, data_dir=str(tiny_dir))["seconds"] is None
    runs = [{"seconds": s} for s in (5.0, 1.0, 3.0, None, 4.0)]
    assert bench.trimmed_ttq(runs) == {"median": 3.5, "min": 3.0, "max": 4.0, "seeds": 5, "reached": 4}
