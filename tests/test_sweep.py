"""`vaebench sweep`'s plan and record without Ray: the grid, the TOML file, --dry-run, sweep.json, compare.

What needs Ray (executing, faults, Ctrl-C) is in test_sweep_ray.py. These hold
in a session with no framework and no Ray installed: the runs use the numpy backend.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.errors import ConfigError, VaebenchError
from vaebench.io.fileio import atomic_write_json
from vaebench.report.inputs import load_inputs
from vaebench.report.tables import equivalence_rows, seed_rows
from vaebench.sweep import plan


def test_seeds_parse_ranges_and_lists():
    assert plan.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert plan.parse_seeds("7,0-2,2") == [0, 1, 2, 7]
    for bad in ("4-0", "a", "1-", "-1", "0-99999"):
        with pytest.raises(ConfigError):
            plan.parse_seeds(bad)


def test_the_grid_expands_in_order_with_names_that_say_what_differs():
    grid = plan.Grid(backends=["numpy", "torch"], models=["mlp"], seeds=[0, 1], batch_sizes=[64, 128], run={"limit_train": 9})
    runs = grid.expand()
    assert len(runs) == 8
    assert runs[0].name == "numpy-mlp-bs64-lr0.001-ep10-seed0"
    assert runs[-1].name == "torch-mlp-bs128-lr0.001-ep10-seed1"
    assert all(r.config.limit_train == 9 for r in runs)
    assert len({r.name for r in runs}) == 8
    # the model's default batch size given explicitly is the same run, not a second one
    assert len(plan.Grid(backends=["numpy"], models=["mlp"], batch_sizes=[None, 128]).expand()) == 1


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "x" * 80])
def test_a_backend_name_that_cannot_name_a_folder_is_refused(name):
    with pytest.raises(ConfigError, match="cannot name a folder"):
        plan.Grid(backends=[name], models=["mlp"]).expand()


def test_a_bad_setting_fails_the_whole_sweep_before_any_run():
    with pytest.raises(ConfigError, match="--lr"):
        plan.Grid(backends=["numpy"], models=["mlp"], lrs=[1e-3, -1.0]).expand()


def test_toml_keys_take_dashes_or_underscores_and_flags_override_them(tmp_path, monkeypatch):
    monkeypatch.setattr("vaebench.sweep.preflight.device_line", lambda _name: "device     cuda: a GPU")  # --device cuda below
    toml = tmp_path / "sweep.toml"
    toml.write_text('backends = ["numpy"]\nmodels = "mlp"\nseeds = "0-2"\nbatch-sizes = [32, 64]\nlimit_train = 100\n')
    result = CliRunner().invoke(cli, ["sweep", str(toml), "--dry-run", "--seeds", "5", "--lr", "0.01"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[:2] == ["numpy-mlp-bs32-lr0.01-ep10-seed5  (1 CPU)", "numpy-mlp-bs64-lr0.01-ep10-seed5  (1 CPU)"]
    assert lines[-1] == "2 runs; nothing started (--dry-run)"
    exclusive = CliRunner().invoke(cli, ["sweep", str(toml), "--dry-run", "--exclusive", "--device", "cuda"])
    assert "(a whole node + 1 GPU)" in exclusive.output
    assert not (Path("results") / "sweeps").exists() or not any((Path("results") / "sweeps").iterdir())


@pytest.mark.parametrize(
    "text, needle",
    [
        ('backends = ["numpy"]\nmodels = ["mlp"]\nbatchsize = 3\n', "unknown key 'batchsize'"),
        ('backends = ["numpy"]\nmodels = ["mlp"]\nthreads = "two"\n', "threads = 'two' is not int"),
        ('backends = ["numpy"]\nmodels = ["mlp"]\nbinarize = 1\n', "binarize = 1 is not bool"),
        ('backends = ["numpy"]\nmodels = ["mlp"]\nlr = ["fast"]\n', "'fast' is not float"),
        ('backends = ["numpy"\n', "is not valid TOML"),
        ('models = ["mlp"]\n', "no backends"),
    ],
)
def test_a_bad_toml_file_is_one_line_exit_2(tmp_path, text, needle):
    toml = tmp_path / "sweep.toml"
    toml.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "sweep", str(toml), "--dry-run"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr


def test_without_ray_the_sweep_says_how_to_install_it_and_writes_nothing(tmp_path):
    code = "import sys; sys.modules['ray'] = None; from vaebench.cli import main; main()"
    out = tmp_path / "sw"
    args = ["sweep", "--backends", "numpy", "--models", "mlp", "--out", str(out)]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert 'pip install -e ".[sweep]"' in proc.stderr and "ray==2.60.0" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "results").exists()
    dry = subprocess.run([sys.executable, "-c", code, *args, "--dry-run"], capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0 and "1 runs; nothing started" in dry.stdout, dry.stderr  # planning needs no Ray


def test_resume_takes_no_new_grid(tmp_path):
    result = CliRunner().invoke(cli, ["sweep", "--resume", str(tmp_path), "--seeds", "3"])
    assert result.exit_code == 2 and "keeps its own grid" in result.output


def _record(tmp_path: Path) -> Path:
    grid = plan.Grid(backends=["numpy"], models=["mlp"], seeds=[0, 1])
    record = plan.new_record(grid, grid.expand(), {"storage": "object-store", "exclusive": False})
    atomic_write_json(tmp_path / plan.SWEEP_FILE, record)
    return tmp_path


def test_the_record_round_trips_and_refuses_a_folder_pointing_elsewhere(tmp_path):
    sweep_dir = _record(tmp_path)
    record = plan.read_record(sweep_dir)
    assert plan.counts(record)["pending"] == 2
    assert record["grid"]["seeds"] == [0, 1] and record["runs"][1]["config"]["seed"] == 1
    for field, value in (("folder", "../../etc"), ("folder", "/etc"), ("status", "done"), ("name", "../x")):
        bad = json.loads(json.dumps(record))
        bad["runs"][0][field] = value
        atomic_write_json(sweep_dir / plan.SWEEP_FILE, bad)
        with pytest.raises(VaebenchError, match="not one vaebench wrote"):
            plan.read_record(sweep_dir)
    (sweep_dir / plan.SWEEP_FILE).write_text('{"runs": 3}')
    with pytest.raises(VaebenchError, match="malformed"):
        plan.read_record(sweep_dir)


def _fake_run(folder: Path, backend: str, seed: int, neg_elbo: float, exclusive: bool = False) -> None:
    """A completed run's metrics.json, as a sweep leaves it (only what compare reads)."""
    cfg = {"backend": backend, "model": "mlp", "dataset": "mnist", "epochs": 1, "batch_size": 128, "latent_dim": 20}
    cfg.update(lr=0.001, seed=seed, binarize=False, device="cpu", limit_train=256, threads=1, compile=False, options={})
    metrics = {
        "schema_version": 1,
        "status": "completed",
        "config": {**cfg, "eval_batch_size": 1000, "eval_k": 0, "precision": "fp32"},
        "history": [{"epoch": 1, "test_neg_elbo": neg_elbo, "epoch_seconds": 1.0, "train_images_per_second": 1000.0 + seed}],
        "final": {"test_neg_elbo": neg_elbo, "active_units": 3},
        "placement": {"exclusive": exclusive, "node": {"host": "h"}},
    }
    atomic_write_json(folder / "metrics.json", metrics)


def test_compare_over_a_sweep_folder_gives_seeds_and_a_verdict_per_pair(tmp_path):
    grid = plan.Grid(backends=["numpy", "other"], models=["mlp"], seeds=[0, 1, 2], epochs=[1], run={"limit_train": 256})
    record = plan.new_record(grid, grid.expand(), {"storage": "object-store", "exclusive": False})
    values = {"numpy": [100.0, 101.0, 99.5], "other": [100.1, 101.2, 99.4]}
    for entry in record["runs"]:
        backend, seed = entry["config"]["backend"], entry["config"]["seed"]
        entry.update(status="completed", folder=f"runs/{entry['name']}")
        _fake_run(tmp_path / entry["folder"], backend, seed, values[backend][seed])
    atomic_write_json(tmp_path / plan.SWEEP_FILE, record)
    (tmp_path / "runs" / "stray").mkdir()  # a folder the record does not list is not read

    _bench, runs = load_inputs([tmp_path])
    assert len(runs) == 6
    seeds = seed_rows(runs).lines()
    assert "numpy" in seeds[1] and "100.17" in seeds[1] and "0.76" in seeds[1] and "packed" in seeds[1], seeds
    verdicts = equivalence_rows(runs).lines()
    assert "numpy - other" in verdicts[1] and "equivalent (±0.5)" in verdicts[1], verdicts
    assert "-0.067" in verdicts[1], verdicts
    strict = equivalence_rows(runs, margin=0.05).lines()
    assert "inconclusive (±0.05)" in strict[1], strict

    result = CliRunner().invoke(cli, ["compare", str(tmp_path), "--margin", "0.05", "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "Over seeds" in result.output and "TOST at ±0.05 nats" in result.output
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Same quality?" in page and 'id="equivalence"' in page


def test_a_run_in_a_folder_of_its_own_shows_no_seed_tables(tmp_path):
    (tmp_path / "r").mkdir()
    _fake_run(tmp_path / "r", "numpy", 0, 100.0)
    result = CliRunner().invoke(cli, ["compare", str(tmp_path / "r")])
    assert result.exit_code == 0 and "Over seeds" not in result.output, result.output


def test_a_sweep_command_that_cannot_start_leaves_no_half_sweep(tmp_path, monkeypatch):
    """--out over an existing sweep is refused before anything is touched."""
    pytest.importorskip("ray")
    sweep_dir = _record(tmp_path / "sw")
    before = (sweep_dir / plan.SWEEP_FILE).read_bytes()
    args = ["sweep", "--backends", "numpy", "--models", "mlp", "--out", str(sweep_dir)]
    proc = subprocess.run([sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--resume" in proc.stderr, proc.stderr
    assert (sweep_dir / plan.SWEEP_FILE).read_bytes() == before
    assert os.listdir(sweep_dir) == [plan.SWEEP_FILE]
