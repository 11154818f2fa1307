"""The policy `vaebench bench` and `vaebench sweep` used to hold in cli.py, now in the core, tested there.

Time to quality runs in fake subprocesses here (the real one is in
test_bench_report.py), so these say which runs the grid asks for and what
bench.json keeps of them, in a second, without training.
"""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.measure import bench, busy, ttq
from vaebench.plugin import host
from vaebench.sweep import plan


def _fake_seed(asked: list[dict]):
    def run(request: dict) -> dict:
        asked.append(request)
        return {"backend": request["backend"], "model": request["model_name"], "seed": request["seed"], "seconds": 2.0}

    return run


def test_the_ttq_grid_runs_every_seed_of_every_model_and_backend_and_keeps_the_summaries(monkeypatch):
    asked: list[dict] = []
    monkeypatch.setattr(ttq, "_in_subprocess", _fake_seed(asked))
    lines: list[str] = []
    entries = ttq.run_ttq_grid(["numpy"], ["mlp", "conv"], 2, 3, "/data", compile=True, log=lines.append)
    assert [(e["kind"], e["model"], len(e["runs"])) for e in entries] == [("ttq", "mlp", 2), ("ttq", "conv", 2)]
    assert [(r["model_name"], r["seed"]) for r in asked] == [("mlp", 0), ("mlp", 1), ("conv", 0), ("conv", 1)]
    assert asked[0]["threads"] == 3 and asked[0]["data_dir"] == "/data" and asked[0]["options"] == {}
    assert asked[0]["compile"] is False  # numpy has no compile: --compile applies only where a backend has it
    assert len(lines) == 4 and lines[0] == "time to quality numpy mlp seed 0: 2.0 s"


def test_bench_with_ttq_only_writes_the_summaries_and_the_method(tmp_path, monkeypatch):
    asked: list[dict] = []
    monkeypatch.setattr(ttq, "_in_subprocess", _fake_seed(asked))
    monkeypatch.setattr(host, "busy_cores", lambda: 0.0)
    args = ["bench", "--backends", "numpy", "--no-throughput", "--ttq-models", "mlp", "--ttq-seeds", "2", "--threads", "1"]
    result = CliRunner().invoke(cli, [*args, "--repeats", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    doc = json.loads((tmp_path / "bench.json").read_text())
    assert doc["results"] == [] and [len(e["runs"]) for e in doc["time_to_quality"]] == [2]
    method = doc["method"]
    assert method["rounds"] == 4 and method["window_seconds"] == bench.WINDOW_SECONDS and method["schedule"] == "interleaved"
    assert method["load_at_start"]["busy"] is False and "busy_cores" in method["load_at_end"]


def test_a_busy_machine_is_refused_or_warned_about_and_every_row_marked(monkeypatch):
    monkeypatch.setattr(host, "busy_cores", lambda: 2.0)
    with pytest.raises(busy.BusyMachineError, match=r"busy \(2.0 cores.*--allow-busy"):
        busy.check_load(False, warn=print)
    said: list[str] = []
    start = busy.check_load(True, warn=said.append)
    assert start["busy"] and len(said) == 1 and "every row is marked busy" in said[0]
    monkeypatch.setattr(host, "busy_cores", lambda: 0.2)
    rows: list[dict] = [{}, {}]
    end = busy.mark_load(rows, start)
    assert end["busy"] is False
    assert rows == [{"load": {"busy": True, "busy_cores_at_start": 2.0, "busy_cores_at_end": 0.2}}] * 2


def test_bench_all_is_every_installed_backend_but_numpy():
    assert "numpy" not in bench.bench_backends("all") and bench.bench_backends("numpy,torch") == ["numpy", "torch"]


def test_flags_given_override_the_toml_file_and_flags_not_given_do_not(tmp_path):
    toml = tmp_path / "sweep.toml"
    toml.write_text('backends = ["numpy"]\nmodels = ["mlp"]\nbinarize = true\nthreads = 2\nseeds = "0-1"\n')
    flags = {"binarize": False, "threads": None, "seeds": "3-4", "lr": [0.01], "out": "ignored", "options": None}
    settings = plan.merge_settings(toml, flags)
    assert settings == {"backends": ["numpy"], "models": ["mlp"], "binarize": False, "threads": 2, "seeds": [3, 4], "lr": [0.01]}
    assert plan.merge_settings(None, {"backends": ["numpy"]}) == {"backends": ["numpy"]}


def test_the_record_keeps_the_data_folder_resolved_and_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VAEBENCH_DATA_DIR", "data")
    recorded = plan.record_settings({"exclusive": None})
    assert recorded == {
        "storage": "object-store",
        "address": None,
        "exclusive": False,
        "data_dir": str((tmp_path / "data").resolve()),
        "tensorboard": True,
        "max_retries": 3,
    }
    assert plan.record_settings({"storage": "/shared", "data_dir": "/d"})["storage"] == "shared"
    assert plan.sweep_dir_for({"storage": "/shared"}, None).parent == Path("/shared")
    assert plan.sweep_dir_for({"storage": "/shared"}, "here") == Path("here")
