"""What a new user meets in the first hour (issue #27): help that says what happens, pictures without fractional
epochs, a sweep that stops at missing data before any run, and a busy machine seen during the measurement.

Each test failed on the code before its fix.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.io.fileio import atomic_write_json
from vaebench.measure import busy
from vaebench.plugin import host, registry
from vaebench.run.outputs import plots
from vaebench.sweep import cluster, plan


def test_the_command_list_cuts_no_description_short():
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1].splitlines()
    assert len([line for line in commands if line.strip()]) >= 8
    assert not [line for line in commands if line.rstrip().endswith("...")]


def test_run_threads_help_says_the_default_comes_from_the_load():
    result = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200)
    help_text = " ".join(result.output.split())
    threads = help_text.split("--threads")[1].split("--")[0]
    assert "load" in threads and "own choice" not in threads


def test_curves_put_ticks_at_whole_epochs_only(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    history = [
        {"epoch": e, "epoch_seconds": 2.0 + e, "train_neg_elbo": 200.0 - 10 * e, "test_neg_elbo": 205.0 - 9 * e}
        for e in (1, 2, 3)
    ]
    plots.save_curves(history, Path(tmp_path) / "curves.png", "torch conv")
    (fig,) = figures
    fig.canvas.draw()
    left = fig.axes[0]
    lo, hi = left.get_xlim()
    ticks = [t for t in left.get_xticks() if lo <= t <= hi]
    assert ticks and np.allclose(ticks, np.round(ticks)), ticks
    plots.pyplot().close(fig)


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process, so the one line and the exit code are what a user sees."""
    env = {k: v for k, v in os.environ.items() if k != "VAEBENCH_DATA_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, timeout=300, cwd=cwd, env=env
    )


def _one_line_exit_2(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_a_sweep_with_missing_data_stops_before_any_run_and_makes_no_folder(tmp_path):
    pytest.importorskip("ray")  # the sweep asks for Ray before it checks the data; nothing here starts it
    missing, out = tmp_path / "no-mnist", tmp_path / "sw"
    args = ["sweep", "--backends", "numpy", "--models", "mlp", "--seeds", "0-5", "--data-dir", str(missing)]
    proc = _cli([*args, "--out", str(out)], tmp_path)
    _one_line_exit_2(proc, str(missing), "no run was started")
    assert not out.exists() and not (tmp_path / "results").exists()
    dry = _cli([*args, "--dry-run"], tmp_path)  # the dry run looks for the files too, downloading nothing
    _one_line_exit_2(dry, str(missing))
    assert "runs; nothing started" not in dry.stdout and not (tmp_path / "results").exists()


def test_run_with_several_backends_checks_the_data_once_before_probing(tmp_path):
    if "torch" not in registry.installed():
        pytest.skip("needs a second backend (the torch plugin)")
    missing, out = tmp_path / "no-mnist", tmp_path / "cmp"
    proc = _cli(["run", "--backend", "numpy,torch", "--data-dir", str(missing), "--out", str(out)], tmp_path)
    _one_line_exit_2(proc, str(missing))
    assert "Probing" not in proc.stdout and not out.exists() and not (tmp_path / "results").exists()


def test_resume_takes_a_new_data_dir_and_checks_it_before_any_run(tmp_path):
    grid = plan.Grid(backends=["numpy"], models=["mlp"], seeds=[0, 1])
    record = plan.new_record(grid, grid.expand(), {"storage": "object-store", "exclusive": False, "data_dir": "/gone"})
    atomic_write_json(tmp_path / plan.SWEEP_FILE, record)
    before = (tmp_path / plan.SWEEP_FILE).read_bytes()
    moved = tmp_path / "moved"
    proc = _cli(["sweep", "--resume", str(tmp_path), "--data-dir", str(moved), "-q"], tmp_path)
    if "needs Ray" not in proc.stderr:  # without Ray installed the sweep says so first; the gate is still passed
        _one_line_exit_2(proc, str(moved), "no run was started")
    assert "keeps its own grid" not in proc.stderr
    assert (tmp_path / plan.SWEEP_FILE).read_bytes() == before and sorted(os.listdir(tmp_path)) == [plan.SWEEP_FILE]
    assert plan.resume_settings(record, "data/../mnist")["data_dir"] == str((Path.cwd() / "mnist").resolve())
    assert plan.resume_settings(record, None)["data_dir"] == "/gone"
    assert plan.RESUME_SETTINGS == ("data_dir", "address", "quiet")


def test_a_failed_runs_line_keeps_its_whole_error_with_the_fix_at_the_end():
    error = (
        "could not download train-images-idx3-ubyte.gz from any mirror ("
        + "x" * 300
        + "); offline? put the four "
        + ("mnist files in a folder and pass --data-dir or set VAEBENCH_DATA_DIR")
    )
    line = cluster.outcome_line("numpy-mlp-seed0", {"status": "failed", "error": error})
    assert line.endswith("pass --data-dir or set VAEBENCH_DATA_DIR") and "\n" not in line
    done = {"status": "completed", "test_neg_elbo": 101.234, "seconds": 12.4, "node": {"host": "h"}}
    assert cluster.outcome_line("r", done) == "completed   r  test -ELBO 101.23  12s on h"
    vq = {**done, "test_neg_elbo": None, "headline": ["test reconstruction loss", 0.041234]}
    assert cluster.outcome_line("r", vq) == "completed   r  test reconstruction loss 0.0412  12s on h"


# -- a busy machine seen during the measurement, not at two instants ---------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _sampler(readings: list, clock: _Clock) -> busy.LoadSampler:
    feed = iter(readings)
    return busy.LoadSampler(read=lambda: next(feed), clock=clock, cpus=2)


def test_the_sampler_counts_other_processes_cores_and_not_this_process_trees():
    clock = _Clock()
    sampler = _sampler([(0, 0, 0), (150, 200, 50), None, (200, 400, 100), (400, 600, 100)], clock)
    for t in (0.0, 0.5, 0.7, 1.0, 1.5):
        clock.now = t
        sampler.tick()
    # 150 busy ticks of 200, 50 of them this process tree's: 100 / 200 of 2 cpus = 1 core; a None reading is skipped
    assert sampler.samples == [(0.0, 0.5, 1.0), (0.5, 1.0, 0.0), (1.0, 1.5, 2.0)]
    assert sampler.window(0.0, 0.4) == {"samples": 1, "max": 1.0, "mean": 1.0}
    assert sampler.window(0.6, 0.9) == {"samples": 1, "max": 0.0, "mean": 0.0}
    assert sampler.window(0.2, 1.2) == {"samples": 3, "max": 2.0, "mean": 1.0}
    assert sampler.window(2.0, 3.0) == {"samples": 0, "max": None, "mean": None}


def test_the_sampler_thread_samples_until_stopped():
    count = iter(range(10**6))
    sampler = busy.LoadSampler(read=lambda: (0.0, float(next(count)), 0.0), interval=0.01).start()
    deadline = time.monotonic() + 30
    while len(sampler.samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sampler.stop()
    assert sampler._thread is None and len(sampler.samples) >= 3
    taken = len(sampler.samples)
    time.sleep(0.05)
    assert len(sampler.samples) == taken  # stopped means stopped


def test_rows_are_marked_by_their_own_windows_the_issue_case(monkeypatch):
    """Quiet at the start (0.07), 1.93 busy cores during the second cell: that cell's rows are busy, the first's not."""
    monkeypatch.setattr(host, "busy_cores", lambda: 0.07)
    clock = _Clock()
    # one reading at start, one at the end of each cell (the sampler's thread is replaced by these ticks), one at stop
    sampler = _sampler([(0, 0, 0), (100, 200, 90), (393, 400, 190), (393, 400, 190)], clock)
    sampler.start = lambda: (sampler.tick(), sampler)[1]
    sampler.stop = sampler.tick
    start = busy.check_load(False, warn=print)
    watch = busy.Watch(start, sampler)

    def cells():
        for t, batch in ((1.0, 32), (2.0, 128)):
            clock.now = t
            sampler.tick()
            for backend in ("jax", "torch"):
                yield {"backend": backend, "model": "mlp", "batch_size": batch}

    rows = list(watch.rows(cells()))
    assert watch.windows == [(0.0, 1.0), (0.0, 1.0), (1.0, 2.0), (1.0, 2.0)]
    said: list[str] = []
    end = watch.mark(rows, warn=said.append)
    assert [r["load"]["busy"] for r in rows] == [False, False, True, True]
    assert rows[0]["load"]["busy_cores_during"] == {"samples": 1, "max": 0.1, "mean": 0.1}
    assert rows[2]["load"]["busy_cores_during"] == {"samples": 1, "max": 1.93, "mean": 1.93}
    assert rows[2]["load"]["busy_cores_at_start"] == 0.07 and end["busy_cores"] == 0.07
    assert said == [
        "warning: other processes kept up to 1.9 cores busy during the measurement: 2 of 4 rows are marked busy "
        "(their timings are not a quiet machine's)"
    ]


def test_the_refusal_rounds_the_load_and_comes_before_the_table_header(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "busy_cores", lambda: 1.6)
    monkeypatch.setattr(host.os, "getloadavg", lambda: (2.97802734375, 1.0, 1.0))
    with pytest.raises(busy.BusyMachineError) as refused:
        busy.check_load(False, warn=print)
    assert "(1.6 cores in use by other processes, load average 2.98)" in str(refused.value)
    args = ["bench", "--backends", "numpy", "--models", "mlp", "--batch-sizes", "8", "--out", str(tmp_path / "b")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "this machine is busy" in result.output
    assert "img/s median" not in result.output and "2.978" not in result.output and not (tmp_path / "b").exists()
