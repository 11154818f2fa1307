"""Hardening, round two (issue #26): each test drives the real ``vaebench`` process and failed on the code before it.

No result is attached to the wrong run, no comparison pairs runs that are not
comparable, no position or number that cannot be is accepted, settings that
cannot work are refused up front, and no status is left ``running``. Every
refusal is exit 2, one line, no traceback, and what was there before is intact.
Runs use the numpy backend, which the core ships, so they hold with no framework.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from test_hardening import QUICK, _cli, _one_line_exit_2, _train  # the one copy of the round's helpers


def _edit_metrics(run_dir: Path, **changes) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(changes)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return metrics


@pytest.fixture
def done_run(tiny_dir, tmp_path):
    out = tmp_path / "run-a"
    _train(tiny_dir, out)
    return out


# -- 1. an evaluation is attached only to the run it scored ---------------------------------------------------

RACE = """
import json, os, shutil, subprocess, sys
from vaebench import cli
from vaebench.run import rescore

scored = rescore.full_evaluation

def racing(*args, **kw):  # `run --overwrite` replaces the folder while the old weights are being scored
    result = scored(*args, **kw)
    subprocess.run([sys.executable, "-m", "vaebench.cli", *json.loads(os.environ["RACE"])], check=True)
    shutil.copyfile(os.environ["RUN"] + "/metrics.json", os.environ["SNAPSHOT"])  # what the new run wrote
    return result

rescore.full_evaluation = racing
sys.argv = ["vaebench", *sys.argv[1:]]
cli.main()
"""


def test_eval_racing_run_overwrite_is_refused_and_the_new_run_keeps_no_foreign_score(tiny_dir, done_run, tmp_path):
    snapshot = tmp_path / "new-run-metrics.json"
    overwrite = [*QUICK.split(), "--seed", "7", "--data-dir", str(tiny_dir), "--out", str(done_run), "--overwrite"]
    proc = subprocess.run(
        [sys.executable, "-c", RACE, "eval", str(done_run), "--k", "0", "-q"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RACE": json.dumps(overwrite), "RUN": str(done_run), "SNAPSHOT": str(snapshot)},
    )
    _one_line_exit_2(proc, "was replaced by another run", "vaebench eval")
    new = json.loads((done_run / "metrics.json").read_text())
    assert new["config"]["seed"] == 7 and new["status"] == "completed"
    assert new == json.loads(snapshot.read_text())  # the old weights' score is not in the new run's record


# -- 3, 4. compare groups only comparable runs, and each run once -------------------------------------------


def _copy_as_other_run(src: Path, dst: Path, **config) -> None:
    """A copy of ``src`` that is another run: a run id of its own, and the given config changes."""
    shutil.copytree(src, dst)
    metrics = json.loads((dst / "metrics.json").read_text())
    metrics["run_id"] = uuid.uuid4().hex
    metrics["config"].update(config)
    (dst / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def two_seeds(tiny_dir, tmp_path):
    a, b = tmp_path / "run-a", tmp_path / "run-b"
    _train(tiny_dir, a)
    _train(tiny_dir, b, "--seed 1")
    return a, b


def test_compare_does_not_pair_runs_trained_on_different_data_and_names_the_field(two_seeds, tmp_path):
    others = []
    for src in two_seeds:  # "torch" seeds on altered data, 318 nats worse
        dst = tmp_path / f"other-{src.name}"
        _copy_as_other_run(src, dst, backend="torch")
        metrics = json.loads((dst / "metrics.json").read_text())
        metrics["data"]["sha256"] = {name: "0" * 64 for name in metrics["data"]["sha256"]}
        metrics["final"]["test_neg_elbo"] += 318.0
        (dst / "metrics.json").write_text(json.dumps(metrics))
        others.append(dst)
    proc = _cli(["compare", *two_seeds, *others])
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    assert "numpy - torch" not in out  # no verdict across different data
    assert "differ in data" in out and "not seeds of one comparison" in out, out


def test_the_same_run_named_twice_or_copied_counts_once(two_seeds, tmp_path):
    a, b = two_seeds
    copy = tmp_path / "run-a-copy"
    shutil.copytree(a, copy)  # the same run_id: the same run
    proc = _cli(["compare", a, f"{a}/", "./run-a", copy, b, f"{b}/"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.startswith("run-")]
    names = [line.split()[0] for line in rows]
    assert sorted(names) == ["run-a", "run-b"], proc.stdout
    seeds = [line for line in proc.stdout.splitlines() if line.startswith("mlp") and " numpy " in line]
    assert len(seeds) == 1 and seeds[0].split()[seeds[0].split().index("numpy") + 1] == "2", proc.stdout


# -- 6. checkpoint positions are range-checked ---------------------------------------------------------------


def _set_position(run_dir: Path, **position) -> bytes:
    path = run_dir / "checkpoint.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    meta.update(position)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


@pytest.mark.parametrize(
    "position, needle",
    [
        ({"epoch": 5}, "epoch 5 is outside 0..1"),  # an epoch beyond the config
        ({"epoch": 0, "step": 99, "losses": [1.0] * 99, "history": []}, "step 99 is outside 0..7"),  # past the epoch
        ({"epoch": 0, "step": -3, "losses": [], "history": []}, "step -3 is outside"),  # negative
    ],
)
def test_a_checkpoint_position_the_run_cannot_have_reached_is_refused(done_run, position, needle):
    written = _set_position(done_run, **position)
    _edit_metrics(done_run, status="interrupted", final=None)
    proc = _cli(["run", "--resume", done_run, "-q"])
    _one_line_exit_2(proc, "checkpoint.npz", needle)
    assert json.loads((done_run / "metrics.json").read_text())["status"] == "interrupted"  # never "completed"
    assert (done_run / "checkpoint.npz").read_bytes() == written  # kept as it was


# -- 7. numbers out of range and non-canonical dtypes are refused --------------------------------------------


def test_1e400_in_metrics_json_is_refused_not_read_as_inf(done_run):
    metrics = json.loads((done_run / "metrics.json").read_text())
    metrics["final"]["test_neg_elbo"] = 123456.5
    text = json.dumps(metrics).replace("123456.5", "1e400")
    (done_run / "metrics.json").write_text(text)
    _one_line_exit_2(_cli(["compare", done_run]), "metrics.json", "out of range")
    assert (done_run / "metrics.json").read_text() == text


def test_float16_weights_are_refused(done_run):
    path = done_run / "weights.npz"
    with np.load(path) as f:
        half = {k: f[k].astype(np.float16) for k in f.files}
    np.savez(path, **half)
    before = (done_run / "metrics.json").read_text()
    _one_line_exit_2(_cli(["eval", done_run, "--k", "0", "-q"]), "weights.npz", "float16", "float32")
    assert (done_run / "metrics.json").read_text() == before  # no score from precision the run never had


# -- settings that cannot work are refused up front ----------------------------------------------------------


def test_eval_k_that_cannot_fit_in_memory_is_refused_before_anything_runs(done_run):
    before = (done_run / "metrics.json").read_text()
    proc = _cli(["eval", done_run, "--k", "1000000000", "-q"], timeout=120)
    _one_line_exit_2(proc, "--k 1000000000", "memory", "use at most")
    assert (done_run / "metrics.json").read_text() == before


def test_a_latent_size_that_cannot_fit_is_refused_and_leaves_no_folder(tiny_dir, tmp_path):
    out = tmp_path / "huge"
    proc = _cli([*QUICK.split(), "--latent-dim", "1000000", "--data-dir", tiny_dir, "--out", out], timeout=120)
    _one_line_exit_2(proc, "--latent-dim 1000000", "this machine's", "GiB", "largest latent size")
    assert not out.exists()


def test_threads_no_machine_has_are_refused(tiny_dir, tmp_path):
    out = tmp_path / "threads"
    proc = _cli([*QUICK.split(), "--threads", "100000", "--data-dir", tiny_dir, "--out", out], timeout=120)
    _one_line_exit_2(proc, "--threads 100000", "at most")
    assert not out.exists()


@pytest.mark.parametrize("flag", ["--models", "--batch-sizes"])
def test_an_empty_bench_list_is_refused(tmp_path, flag):
    proc = _cli(["bench", "--backends", "numpy", flag, "", "--out", tmp_path / "b"], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]  # click's usage error: the usage, then one line saying what is wrong
    assert error.startswith("Error:") and flag in error and "empty" in error, proc.stderr
    assert not (tmp_path / "b").exists()


# -- malformed parts of metrics.json are one line -----------------------------------------------------------


@pytest.mark.parametrize("where", ["environment", "placement", "environment.backend"])
def test_compare_on_a_metrics_json_whose_record_is_not_a_mapping(done_run, tmp_path, where):
    metrics = json.loads((done_run / "metrics.json").read_text())
    if where == "environment.backend":
        metrics["environment"]["backend"] = "x"
    else:
        metrics[where] = "x"
    (done_run / "metrics.json").write_text(json.dumps(metrics))
    proc = _cli(["compare", done_run, "--report", tmp_path / "report"])
    _one_line_exit_2(proc, "metrics.json", where.split(".")[-1])


# -- 9. a setup that fails never leaves "running" ----------------------------------------------------------------


def test_a_tensorboard_folder_that_cannot_be_written_refuses_the_resume_and_leaves_no_running_status(done_run, tmp_path):
    _edit_metrics(done_run, status="interrupted", final=None)
    shutil.rmtree(done_run / "tb")
    (done_run / "tb").symlink_to(tmp_path / "nowhere")
    proc = _cli(["run", "--resume", done_run, "-q"])
    _one_line_exit_2(proc, "TensorBoard", "--no-tensorboard")
    metrics = json.loads((done_run / "metrics.json").read_text())
    assert metrics["status"] != "running", metrics["status"]
    assert (done_run / "checkpoint.npz").exists() and (done_run / "weights.npz").exists()


# -- 5. one backend named twice is one backend -----------------------------------------------------------------


def test_bench_with_a_backend_named_twice_measures_it_once(tmp_path):
    out = tmp_path / "b"
    args = ["bench", "--backends", "numpy,numpy", "--models", "mlp", "--batch-sizes", "32", "--repeats", "2"]
    proc = _cli([*args, "--threads", "1", "--no-inference", "--allow-busy", "--out", out])
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "bench.json").read_text())["results"]
    assert [r["backend"] for r in results] == ["numpy"]


# -- 11. a report is written as a whole, or not at all -------------------------------------------------------


def _limited(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_report_that_fails_half_way_leaves_the_old_report_whole(done_run, tmp_path):
    fresh = tmp_path / "fresh"
    assert _cli(["compare", done_run, "--report", fresh]).returncode == 0
    sizes = {p.name: p.stat().st_size for p in fresh.iterdir()}
    biggest = max(sizes.values())
    assert sum(1 for s in sizes.values() if s == biggest) == 1 and len(sizes) >= 3, sizes
    old = tmp_path / "old"
    old.mkdir()
    for name in sizes:
        (old / name).write_text(f"old {name}")
    # the largest part cannot be written (a file-size limit): nothing of the new report may replace the old one
    proc = _cli(["compare", done_run, "--report", old], preexec_fn=_limited(biggest - 1))
    _one_line_exit_2(proc, "cannot write")
    assert {p.name: p.read_text() for p in old.iterdir()} == {name: f"old {name}" for name in sizes}


# -- names from a file cannot break out of report.md's code block or draw on the terminal -----------------------


def test_a_backend_name_with_a_newline_and_a_code_fence_stays_inside_its_cell(done_run, tmp_path):
    _edit_metrics(done_run, config={**json.loads((done_run / "metrics.json").read_text())["config"], "backend": "np\n```\n# x"})
    proc = _cli(["compare", done_run, "--report", tmp_path / "rep"])
    assert proc.returncode == 0, proc.stderr
    assert not any(line.startswith(("```", "# x")) for line in proc.stdout.splitlines()), proc.stdout
    md = (tmp_path / "rep" / "report.md").read_text().splitlines()
    assert "# x" not in md and md.count("```") % 2 == 0, md
    assert any("np\\n\\`\\`\\`\\n# x" in line for line in md)  # shown, escaped, inside the table


# -- 2. bench checks --out before the first worker starts ------------------------------------------------------


def test_bench_with_an_unwritable_out_is_refused_before_anything_is_measured(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args = ["bench", "--backends", "numpy", "--models", "mlp", "--batch-sizes", "32", "--repeats", "2", "--threads", "1"]
    proc = _cli([*args, "--no-inference", "--allow-busy", "--peak-seconds", "0", "--out", blocker / "out"], timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("Error:") and "--out" in error and "cannot write there" in error, proc.stderr
    assert "numpy" not in proc.stdout and "img/s" not in proc.stdout  # no table: nothing was measured and lost


# -- 10. when the write that records a failure fails too, the status is still recorded -----------------------------


def _run_under_size_limit(tiny_dir, out, limit):
    args = [sys.executable, "-m", "vaebench.cli", *QUICK.split(), "--no-tensorboard"]
    args += ["--data-dir", str(tiny_dir), "--out", str(out)]
    return subprocess.run(args, capture_output=True, text=True, timeout=600, preexec_fn=_limited(limit))


def test_a_failure_whose_record_is_too_large_to_write_is_still_recorded_naming_the_first_cause(tiny_dir, tmp_path):
    # a file-size limit no checkpoint fits under: the run fails at its first checkpoint, and says so
    roomy = _run_under_size_limit(tiny_dir, tmp_path / "run-1", 100_000)
    _one_line_exit_2(roomy, "checkpoint.npz")
    record = (tmp_path / "run-1" / "metrics.json").stat().st_size  # the failure's record, indented
    # now the indented record of that failure does not fit either (the record written at the start does)
    proc = _run_under_size_limit(tiny_dir, tmp_path / "run-2", record - 60)
    _one_line_exit_2(proc, "checkpoint.npz", "File too large")
    assert "metrics.json" not in proc.stderr  # the first cause, not the write that recorded it
    metrics = json.loads((tmp_path / "run-2" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "checkpoint.npz" in metrics["error"]


# -- 9. MLflow that cannot be used refuses the run fast, before it trains, and leaves no "running" ----------------


@pytest.mark.parametrize("store", ["unreachable", "unwritable"])
def test_an_mlflow_store_that_cannot_be_used_refuses_the_run_in_seconds(tiny_dir, tmp_path, store):
    pytest.importorskip("mlflow")
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    uri = "http://127.0.0.1:9" if store == "unreachable" else (blocker / "mlruns").as_uri()
    out = tmp_path / "run"
    proc = _cli([*QUICK.split(), "--mlflow", uri, "--data-dir", tiny_dir, "--out", out], timeout=120)
    _one_line_exit_2(proc, "MLflow", "without --mlflow")
    if (out / "metrics.json").exists():
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["status"] != "running" and not metrics["history"], metrics["status"]


# -- a bench.json whose medians no measurement gives is one line ---------------------------------------------------


def test_a_bench_json_whose_medians_are_0_is_refused(tmp_path):
    from vaebench.measure.documents import write_bench

    def row(backend: str, ips: float) -> dict:
        summary = {"median": ips, "q1": ips, "q3": ips, "min": ips, "max": ips, "windows": 3, "compile_seconds": 0.1}
        variant = {"compile": False, "options": {}}
        return {
            "backend": backend,
            "model": "mlp",
            "batch_size": 32,
            "train_images_per_second": summary,
            "settings": {"profile": "default", "precision": "fp32", "schedule": "interleaved", "threads": 1, "variant": variant},
            "environment": {},
            "ratio": {"text": "1", "value": 1.0, "low": 1.0, "high": 1.0},
            "peak_rss_mb": 1.0,
        }

    json_path, _ = write_bench([row("torch", 0.0), row("jax", 0.0)], tmp_path)
    before = json_path.read_text()
    _one_line_exit_2(_cli(["compare", json_path]), "bench.json", "median of 0.0", "run vaebench bench again")
    assert json_path.read_text() == before


# -- smaller: oversubscribed threads are said, shape errors name their file ------------------------------------------


def test_more_threads_than_usable_cores_is_a_warning_and_recorded(tiny_dir, tmp_path):
    from vaebench.plugin.host import usable_cores

    threads = usable_cores() * 32
    out = tmp_path / "run"
    loud = [a for a in QUICK.split() if a != "-q"]  # a warning is a log line; -q keeps only the result
    proc = _cli([*loud, "--no-tensorboard", "--threads", threads, "--data-dir", tiny_dir, "--out", out])
    assert proc.returncode == 0, proc.stderr
    assert f"warning: --threads {threads} on {usable_cores()} usable core" in proc.stdout + proc.stderr, proc.stdout
    recorded = json.loads((out / "metrics.json").read_text())["environment"]["threads"]
    assert recorded["oversubscribed"] == {"threads": threads, "usable_cores": usable_cores()}


def test_weights_of_the_wrong_shape_name_the_file(done_run):
    path = done_run / "weights.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    name = sorted(arrays)[0]
    arrays[name] = np.zeros((3, 3), np.float32)
    np.savez(path, **arrays)
    _one_line_exit_2(_cli(["eval", done_run, "--k", "0", "-q"]), str(path), repr(name), "train the run again")
