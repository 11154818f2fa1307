"""``vaebench run --profile best``: the run's backend tuned by bench's tuner, trained with the winner, and recorded."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vaebench.model.config import TrainConfig
from vaebench.plugin import registry
from vaebench.plugin.profiles import choose
from vaebench.sweep import local

NUMPY = ["run", "--backend", "numpy", "--model", "mlp", "--epochs", "1", "--batch-size", "32", "--threads", "1"]


def _cli(*args: object, module: str = "vaebench.cli") -> subprocess.CompletedProcess:
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, timeout=600, env=env)


def _metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("profile best:")]


@pytest.fixture(scope="module")
def keras_best(tiny_dir, tmp_path_factory):
    """A keras run with ``-o transpose=keras`` fixed: only ``xla`` 0/1 is left to tune."""
    if "keras" not in registry.installed():
        pytest.skip("keras not installed")
    out = tmp_path_factory.mktemp("best") / "run"
    args = ["--model", "mlp", "--epochs", "1", "--threads", "1", "--eval-k", "0", "-q", "--data-dir", tiny_dir]
    proc = _cli("run", "--backend", "keras", *args, "--profile", "best", "-o", "transpose=keras", "--out", out)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_best_tunes_the_free_setting_and_trains_with_the_winner(keras_best):
    out, proc = keras_best
    metrics = _metrics(out)
    execution = metrics["execution"]
    tuning = execution["tuning"]
    assert execution["profile"] == "best"
    labels = [c["label"] for c in tuning["candidates"]]
    assert sorted(labels) == ["transpose=keras, xla=0", "transpose=keras, xla=1"]  # the user's -o is fixed, not tuned
    for c in tuning["candidates"]:
        assert c["median"] > 0 and c["windows"] >= 2
        assert c["vs_default"]["low"] <= c["vs_default"]["value"] <= c["vs_default"]["high"] and c["vs_default"]["text"]
    # the rule of profiles.choose: the fastest whose whole interval lies above 1x, else the default (which of the
    # two happens is the machine's to say; the run must follow the rule either way)
    winner = choose(tuning["candidates"], tuning["default"])
    assert tuning["chosen"] == winner["label"]
    assert tuning["default"] == "transpose=keras, xla=0"  # Keras' xla=auto on a CPU
    default = next(c for c in tuning["candidates"] if c["label"] == tuning["default"])
    assert default["vs_default"]["value"] == 1.0
    # the run trained the winner: its config and its declared execution say so
    assert metrics["config"]["options"] == winner["options"] and metrics["config"]["compile"] == winner["compile"]
    assert execution["variant"] == {"compile": winner["compile"], "options": winner["options"]}
    assert f"XLA {winner['options']['xla']}" in execution["execution"]
    (line,) = _lines(proc)  # one line for the one backend, even under -q
    other = next(c for c in tuning["candidates"] if c["label"] != tuning["default"])
    if winner["label"] == tuning["default"]:
        assert "keras trains with its default (transpose=keras, xla=0)" in line and "none of the other 1 variants" in line
        assert f"the fastest other: {other['label']} at {other['vs_default']['text']}x" in line
    else:
        assert f"keras trains with {winner['label']}" in line and winner["vs_default"]["text"] in line
        assert "the default (transpose=keras, xla=0)" in line and "the 1 of 1 other variants whose interval" in line


def test_resume_of_a_best_run_keeps_the_choice_and_never_retunes(keras_best, tmp_path):
    done, _ = keras_best
    run_dir = tmp_path / "run"
    shutil.copytree(done, run_dir)
    recorded = _metrics(run_dir)
    recorded.update(status="running", final=None)  # killed during its final evaluation: the checkpoint is there
    (run_dir / "metrics.json").write_text(json.dumps(recorded))
    proc = _cli("run", "--resume", run_dir, "--profile", "default")  # a flag given with --resume changes nothing
    assert proc.returncode == 0, proc.stderr
    assert not _lines(proc) and "resuming" in proc.stdout
    after = _metrics(run_dir)
    assert after["status"] == "completed"
    assert after["execution"]["profile"] == "best"
    assert after["execution"]["tuning"] == recorded["execution"]["tuning"]
    assert after["execution"]["variant"] == recorded["execution"]["variant"]
    assert after["config"]["options"] == recorded["config"]["options"]


def test_numpy_has_nothing_to_tune_and_trains_its_default(tiny_dir, tmp_path):
    out = tmp_path / "np"
    proc = _cli(*NUMPY, "--profile", "best", "--data-dir", tiny_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    (line,) = _lines(proc)
    assert "numpy has nothing to tune" in line and "plugin defaults" in line
    execution = _metrics(out)["execution"]
    assert execution["profile"] == "best" and execution["variant"] == {"compile": False, "options": {}}
    assert execution["tuning"]["nothing_to_tune"] is True and execution["tuning"]["candidates"] == []


def test_the_default_profile_runs_as_before(tiny_dir, tmp_path):
    out = tmp_path / "np"
    proc = _cli(*NUMPY, "--data-dir", tiny_dir, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert not _lines(proc)
    execution = _metrics(out)["execution"]
    assert execution["profile"] == "default" and "tuning" not in execution


def test_an_unknown_profile_is_one_error_exit_2(tiny_dir, tmp_path):
    proc = _cli(*NUMPY, "--profile", "fastest", "--data-dir", tiny_dir, "--out", tmp_path / "x")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if "Error" in line]
    assert "--profile" in error and "'fastest'" in error and "best" in error
    assert not (tmp_path / "x").exists()


def test_several_backends_pass_the_profile_to_each_run(tiny_dir, tmp_path):
    """``run --backend a,b --profile best``: each backend's run process tunes before it trains."""
    seen = []

    def train(cfg, run_dir, options):
        seen.append(options["profile"])
        return subprocess.CompletedProcess([], 0)

    cfg = TrainConfig(backend="numpy", model="mlp").resolved()
    local.run_backends(cfg, ["a", "b"], tmp_path, log=lambda _m: None, train=train, profile="best")
    assert seen == ["best", "best"]
    # the run process itself (what train_one starts) tunes on "profile": "best"
    run_cfg = TrainConfig(backend="numpy", model="mlp", epochs=1, batch_size=32, threads=1).resolved()
    spec = {"config": dataclasses.asdict(run_cfg), "run_dir": str(tmp_path / "numpy"), "data_dir": str(tiny_dir)}
    proc = _cli(json.dumps({**spec, "progress": False, "tensorboard": False, "profile": "best"}), module="vaebench.sweep.local")
    assert proc.returncode == 0, proc.stderr
    assert len(_lines(proc)) == 1 and _metrics(tmp_path / "numpy")["execution"]["profile"] == "best"


def test_the_tuning_line_says_a_kept_default_was_kept_and_names_what_it_beat():
    from vaebench.measure.tune import tuning_line

    def cand(label, median, value, low, high):
        return {
            "label": label,
            "median": median,
            "vs_default": {"value": value, "low": low, "high": high, "text": f"{value:.1f} ({low:.1f}-{high:.1f})"},
        }

    default, slow = cand("a", 1000, 1.0, 1.0, 1.0), cand("b", 900, 0.9, 0.8, 1.0)
    near = cand("c", 1100, 1.1, 0.9, 1.3)
    kept = {"tuning": {"chosen": "a", "default": "a", "candidates": [slow, default, near]}}
    assert tuning_line("keras", kept) == (
        "profile best: keras trains with its default (a): 1000 img/s; none of the other 2 variants is faster "
        "with its whole interval above 1x (the fastest other: c at 1.1 (0.9-1.3)x)"
    )
    fast, faster = cand("c", 1200, 1.2, 1.05, 1.3), cand("d", 1300, 1.3, 1.1, 1.5)
    taken = {"tuning": {"chosen": "d", "default": "a", "candidates": [default, fast, slow, faster]}}
    assert tuning_line("keras", taken) == (
        "profile best: keras trains with d: 1300 img/s, 1.3 (1.1-1.5)x the default (a); the fastest of the 2 of 3 "
        "other variants whose interval lies above 1x"
    )
