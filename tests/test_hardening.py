"""The README's promises against hostile files, races and faults (issue #13): each test failed on the code before it.

Nothing they wrote is lost, nothing they did not ask for is overwritten, and
every refusal is one line saying what to do: exit 2 for what the user can fix.
Runs here use the numpy backend, which the core ships, so they hold in a
session with no framework installed.
"""

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaebench.cli import cli
from vaebench.errors import DataError, VaebenchError
from vaebench.io import fileio
from vaebench.io.datasets import FILES, MAX_ITEMS, read_idx
from vaebench.io.fileio import atomic_write_json, read_json, read_npz
from vaebench.model.weights import load_params, save_params
from vaebench.run import runner
from vaebench.run.outputs import pictures
from vaebench.run.outputs.plots import save_grid
from vaebench.run.results import RunLock, config_of, read_metrics
from vaebench.testing import idx_bytes, make_tiny_dataset

QUICK = "run --backend numpy --model mlp --epochs 1 --batch-size 32 -q"


def _cli(args, timeout=600, **kw):
    """The real entry point in a fresh process: exit codes and stderr exactly as a user sees them.

    The one copy: the later hardening rounds (test_hardening2.py, test_hardening3.py) import it from here.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **kw.pop("env", {})}
    return subprocess.run(
        [sys.executable, "-m", "vaebench.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )


def _one_line_exit_2(proc, *needles):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def _train(tiny_dir, out, extra=""):
    result = CliRunner().invoke(cli, [*f"{QUICK} {extra}".split(), "--data-dir", str(tiny_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text())


@pytest.fixture
def done_run(tiny_dir, tmp_path):
    out = tmp_path / "run"
    _train(tiny_dir, out)
    return out


# -- 2. --overwrite never splices two runs ------------------------------------------------------------------


def test_overwrite_clears_the_old_run_before_the_new_one_writes(tiny_dir, done_run, monkeypatch):
    """A new run that dies before its first checkpoint must not leave the old checkpoint to be resumed."""

    def dies(*_a, **_k):
        raise RuntimeError("killed before the first checkpoint")

    monkeypatch.setattr(runner, "init_params", dies)
    args = [*f"{QUICK} --seed 7 --epochs 3 --overwrite".split(), "--data-dir", str(tiny_dir), "--out", str(done_run)]
    assert CliRunner().invoke(cli, args).exit_code != 0
    left = {p.name for p in done_run.iterdir()} - {".lock"}
    assert left == set(), left  # nothing of the old run, nothing new yet
    monkeypatch.undo()
    proc = _cli(["run", "--resume", done_run])
    _one_line_exit_2(proc, "not a vaebench run")


def test_overwrite_refuses_to_delete_what_vaebench_did_not_write(tiny_dir, done_run):
    (done_run / "notes.txt").write_text("mine")
    proc = _cli([*f"{QUICK} --overwrite".split(), "--data-dir", tiny_dir, "--out", done_run])
    _one_line_exit_2(proc, "did not write", "notes.txt")
    assert (done_run / "notes.txt").read_text() == "mine" and (done_run / "weights.npz").exists()


def test_without_overwrite_even_a_partial_run_is_kept(tiny_dir, done_run):
    (done_run / "metrics.json").unlink()  # what is left is still a run's
    proc = _cli([*QUICK.split(), "--data-dir", tiny_dir, "--out", done_run])
    _one_line_exit_2(proc, "already holds a run")
    assert (done_run / "checkpoint.npz").exists()


# -- 3. one run folder, one writer ---------------------------------------------------------------------------


def test_a_second_process_on_a_held_folder_is_refused_naming_the_holder(tiny_dir, tmp_path):
    out = tmp_path / "held"
    args = ["run", "-b", "numpy", "-m", "conv", "--epochs", "50", "--batch-size", "32", "-q", "--data-dir", tiny_dir]
    first = subprocess.Popen([sys.executable, "-m", "vaebench.cli", *map(str, args), "--out", str(out)], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert (out / "metrics.json").exists()
        for second in ([*map(str, args), "--out", str(out), "--overwrite"], ["run", "--resume", str(out)]):
            proc = _cli(second)
            _one_line_exit_2(proc, "in use by another vaebench", f"pid {first.pid} on ")
        assert json.loads((out / "metrics.json").read_text())["status"] == "running"
    finally:
        first.kill()  # SIGKILL: the kernel drops the lock with the process
        first.wait(timeout=60)
    RunLock(out).acquire().release()  # no stale lock after a kill -9


def test_the_lock_excludes_within_one_process_too(tmp_path):
    held = RunLock(tmp_path).acquire()
    with pytest.raises(VaebenchError, match=f"pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    held.release()
    RunLock(tmp_path).acquire().release()


# -- 4. resume and eval use the run's own data, or say so ----------------------------------------------------


def _crashed_in_final_eval(run_dir: Path) -> None:
    """What a run killed during its final evaluation looks like: status running, checkpoint after the last epoch."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(status="running", final=None)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))


def test_resume_refuses_other_data_and_keeps_the_provenance(done_run, tmp_path):
    recorded = json.loads((done_run / "metrics.json").read_text())["data"]
    other = make_tiny_dataset(tmp_path / "other", seed=1)
    _crashed_in_final_eval(done_run)
    proc = _cli(["run", "--resume", done_run, "--data-dir", other])
    _one_line_exit_2(proc, "different data", "--accept-data-change")
    assert json.loads((done_run / "metrics.json").read_text())["data"] == recorded

    proc = _cli(["run", "--resume", done_run, "--data-dir", other, "--accept-data-change", "-q"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads((done_run / "metrics.json").read_text())["data"]
    assert data["sha256"] == recorded["sha256"]  # the run's own provenance stays
    assert data["changes"][0]["source"] == str(other) and data["changes"][0]["epoch"] == 1


def test_resume_and_eval_find_the_recorded_data_and_eval_reads_only_the_test_files(tiny_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dir, data)
    out = tmp_path / "run"
    _train(data, out)
    (data / f"{FILES['train_images']}.gz").write_bytes(b"not gzip at all")  # eval must not need it
    proc = _cli(["eval", out, "--k", "4", "-q"])  # no --data-dir, no VAEBENCH_DATA_DIR (conftest), no network
    assert proc.returncode == 0, proc.stderr
    assert "numpy" in json.loads((out / "metrics.json").read_text())["evaluations"]


# -- 5. the IDX reader is bounded by the file's real size ----------------------------------------------------


def _bomb(path: Path, items: int) -> Path:
    """A valid-looking gzip IDX header declaring ``items`` 28x28 images, followed by that many zeros."""
    with gzip.open(path, "wb", compresslevel=9) as fh:
        fh.write(idx_bytes(np.zeros((0, 28, 28), np.uint8))[:4] + np.array([items, 28, 28], ">u4").tobytes())
        zeros = bytes(1 << 20)
        left = items * 784
        while left > 0:
            fh.write(zeros[: min(left, len(zeros))])
            left -= len(zeros)
    return path


def test_a_decompression_bomb_is_refused_before_it_is_inflated(tmp_path):
    bomb = _bomb(tmp_path / "bomb.gz", 200_000)  # 157 MB of zeros in ~150 kB
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="decompression bomb"):
            read_idx(bomb, 3, (28, 28))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, peak


def test_a_header_claiming_more_items_than_any_such_data_set_is_refused(tmp_path):
    path = tmp_path / "huge"
    path.write_bytes(bytes([0, 0, 8, 3]) + np.array([MAX_ITEMS + 1, 28, 28], ">u4").tobytes())
    with pytest.raises(DataError, match="more than any such data set"):
        read_idx(path, 3, (28, 28))


def test_a_corrupt_file_in_a_users_folder_is_not_offered_for_download(tiny_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_dir, data)
    (data / f"{FILES['test_labels']}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x05ab"))
    proc = _cli([*QUICK.split(), "--data-dir", data, "--out", tmp_path / "r"])
    _one_line_exit_2(proc, "truncated", "replace it with a good copy")
    assert "download" not in proc.stderr and not (tmp_path / "r").exists()


# -- 6. non-finite values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("lr", ["inf", "nan", "-1"])
def test_a_non_finite_learning_rate_is_refused_before_any_folder_exists(tiny_dir, tmp_path, lr):
    proc = _cli([*QUICK.split(), "--lr", lr, "--data-dir", tiny_dir, "--out", tmp_path / "r"])
    _one_line_exit_2(proc, "--lr must be a positive number")
    assert not (tmp_path / "r").exists()


def test_weights_that_blow_up_in_evaluation_end_as_diverged_with_a_valid_metrics_json(tiny_dir, tmp_path, monkeypatch):
    """One step per epoch, and the first evaluation is NaN: before, writing NaN to JSON crashed and left 'running'."""
    monkeypatch.setattr(runner, "evaluate_split", lambda *a, **k: {"neg_elbo": float("nan"), "recon": np.inf, "kl": 1.0})
    out = tmp_path / "r"
    args = [*f"{QUICK} --limit-train 32".split(), "--data-dir", str(tiny_dir), "--out", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "diverged in epoch 1" in str(result.exception)
    assert "no epoch finished, so there is no checkpoint" in str(result.exception)
    metrics = read_metrics(out)
    assert metrics["status"] == "diverged" and metrics["history"] == []


def test_nan_in_a_document_becomes_null_instead_of_losing_the_file(tmp_path):
    atomic_write_json(tmp_path / "m.json", {"a": float("nan"), "b": [1.0, float("-inf")], "c": {"d": np.float64("inf")}})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [1.0, None], "c": {"d": None}}


def test_eval_of_nan_weights_is_one_line(done_run):
    weights = load_params(done_run / "weights.npz")
    weights[sorted(weights)[0]][...] = np.nan
    save_params(weights, done_run / "weights.npz")
    _one_line_exit_2(_cli(["eval", done_run, "--k", "0"]), "NaN or infinite")


# -- 7. signals in the final evaluation and the pictures -----------------------------------------------------


def test_sigterm_during_the_final_evaluation_marks_the_run_interrupted_and_it_resumes(tiny_dir, tmp_path):
    out = tmp_path / "r"
    args = [*f"{QUICK} --eval-k 3000".replace(" -q", "").split(), "--data-dir", str(tiny_dir), "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaebench.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in proc.stdout:
        if line.startswith("importance-weighted NLL"):
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, err
    assert "during the final evaluation" in err and f"vaebench run --resume {out}" in err and "Traceback" not in err
    assert read_metrics(out)["status"] == "interrupted"
    resumed = _cli(["run", "--resume", out, "-q"])
    assert resumed.returncode == 0, resumed.stderr
    metrics = read_metrics(out)
    assert metrics["status"] == "completed" and metrics["final"]["iwae_k"] == 3000 and len(metrics["history"]) == 1


def test_a_signal_while_the_pictures_are_drawn_stops_cleanly(tiny_dir, tmp_path, monkeypatch):
    drawn = []
    original = pictures.save_reconstructions

    def reconstructions(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal, to the handler the run installed
        drawn.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(pictures, "save_reconstructions", reconstructions)
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, [*QUICK.split(), "--data-dir", str(tiny_dir), "--out", str(out)])
    assert drawn and result.exit_code != 0
    assert "SIGTERM during the final evaluation" in str(result.exception)
    assert result.exception.exit_code == 143
    assert read_metrics(out)["status"] == "interrupted" and not (out / "latent.png").exists()


def test_sigterm_before_the_training_loop_is_a_clean_exit_143(tiny_dir, tmp_path):
    """Outside the loop (here: while the process starts), SIGTERM unwinds with a message instead of dying silently."""
    code = (
        "import os, signal, sys; sys.argv = ['vaebench', 'backends']\n"
        "import vaebench.cli as c\n"
        "c.cli.commands['backends'].callback = lambda **k: os.kill(os.getpid(), signal.SIGTERM) or __import__('time').sleep(5)\n"
        "c.main()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143 and "interrupted" in proc.stderr and "Traceback" not in proc.stderr


# -- 8. tracebacks where one line is promised ----------------------------------------------------------------


@pytest.mark.parametrize("damage", ["empty", "truncated", "bitflip", "not-zip"])
def test_damaged_weights_are_one_line_exit_2(done_run, damage):
    path = done_run / "weights.npz"
    data = path.read_bytes()
    damaged = {
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "bitflip": data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
        "not-zip": b"hello" * 100,
    }[damage]
    path.write_bytes(damaged)
    _one_line_exit_2(_cli(["eval", done_run, "--k", "0"]), str(path))


@pytest.mark.parametrize("damage", ["empty", "extra-meta-key", "nan-weights"])
def test_damaged_checkpoints_are_one_line_exit_2(done_run, damage):
    path = done_run / "checkpoint.npz"
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(bytes(arrays["meta"]).decode())
    if damage == "extra-meta-key":
        arrays["meta"] = np.frombuffer(json.dumps({**meta, "surprise": 1}).encode(), np.uint8)
    if damage == "nan-weights":
        key = next(k for k in arrays if k.startswith("param/"))
        arrays[key] = np.full_like(arrays[key], np.nan)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(b"" if damage == "empty" else buffer.getvalue())
    _crashed_in_final_eval(done_run)
    _one_line_exit_2(_cli(["run", "--resume", done_run]), str(path))


@pytest.mark.parametrize(
    "doc, needle",
    [
        ([1, 2], "not an object"),
        ({"schema_version": 1, "status": "interrupted"}, "config is missing"),
        ("config-batch-string", "batch_size is str"),
        ({"schema_version": 1, "status": "odd", "config": {}, "history": []}, "malformed"),
    ],
)
@pytest.mark.parametrize("command", ["resume", "compare", "eval"])
def test_malformed_metrics_json_is_one_line_exit_2(done_run, doc, needle, command):
    if doc == "config-batch-string":
        doc = json.loads((done_run / "metrics.json").read_text())
        doc["config"]["batch_size"] = "32"
    (done_run / "metrics.json").write_text(json.dumps(doc))
    args = {"resume": ["run", "--resume", done_run], "compare": ["compare", done_run], "eval": ["eval", done_run]}[command]
    proc = _cli(args)
    _one_line_exit_2(proc, needle if doc != [1, 2] else "schema version")


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[1, 2]", "not a vaebench bench.json"),
        ('{"kind": "bench", "schema_version": 2}', "results is missing"),
        ('{"kind": "bench", "schema_version": 9, "results": []}', "schema version 9"),
        ('{"kind": "bench", "schema_version": 2, "results": [{"backend": "x"}]}', "results[0].model is missing"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"kind": "bench", "schema_version": 2, "results": [], "x": NaN}', "not valid JSON"),
    ],
)
def test_malformed_bench_json_is_one_line_exit_2(tmp_path, text, needle):
    (tmp_path / "bench.json").write_text(text)
    _one_line_exit_2(_cli(["compare", tmp_path / "bench.json"]), needle)


def test_a_read_only_destination_is_one_line(tmp_path, monkeypatch):
    """On a read-only filesystem the temporary file cannot be created, nor unlinked: before, the cleanup raised again."""

    def read_only(*_a, **_k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(fileio, "open", read_only, raising=False)
    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(VaebenchError, match="Read-only file system"):
        fileio.atomic_write_bytes(tmp_path / "x.json", b"{}")


def test_a_backend_name_that_looks_like_tex_draws(tmp_path):
    save_grid(np.zeros((4, 28, 28, 1), np.float32), tmp_path / "g.png", r"$\frac{$ \sqrt{ ^_^", None)
    assert (tmp_path / "g.png").stat().st_size > 0


# -- hypothesis: the JSON and npz readers fail only with the core's error, boundedly -------------------------


def _valid_npz() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, a=np.arange(64, dtype=np.float32).reshape(8, 8), meta=np.frombuffer(b'{"x": 1}', np.uint8))
    return buffer.getvalue()


VALID_NPZ = _valid_npz()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    cut=st.integers(0, len(VALID_NPZ)),
    flips=st.lists(st.tuples(st.integers(0, len(VALID_NPZ) - 1), st.integers(1, 255)), max_size=4),
)
def test_fuzzed_npz_files_fail_only_with_the_cores_error(tmp_path, cut, flips):
    data = bytearray(VALID_NPZ[:cut] if cut < len(VALID_NPZ) else VALID_NPZ)
    for at, mask in flips:
        if at < len(data):
            data[at] ^= mask
    path = tmp_path / "f.npz"
    path.write_bytes(bytes(data))
    try:
        arrays = read_npz(path, "fix")
    except VaebenchError as exc:
        assert str(path) in str(exc)
    else:
        assert all(a.dtype != object for a in arrays.values())


def test_an_npz_whose_member_claims_a_huge_array_is_refused_unread(tmp_path):
    header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
    header["shape"] = (10**12,)
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, header)
    member.write(b"\0" * 16)
    path = tmp_path / "huge.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", member.getvalue())
    with pytest.raises(VaebenchError, match="declares more data than it holds"):
        read_npz(path, "fix")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
        lambda kids: (
            st.lists(kids, max_size=4)
            | st.dictionaries(
                st.sampled_from(["schema_version", "status", "config", "history", "final", "data", "batch_size", "epoch"]),
                kids,
                max_size=6,
            )
        ),
        max_leaves=20,
    )
)
def test_fuzzed_metrics_json_fails_only_with_the_cores_error(tmp_path, doc):
    if isinstance(doc, dict):
        doc = {"schema_version": 1, **doc}
    (tmp_path / "metrics.json").write_text(json.dumps(doc))
    try:
        metrics = read_metrics(tmp_path)
    except VaebenchError:
        return
    from vaebench.report.tables import runs_table  # a document that passes has every key its readers use

    try:
        config_of(metrics, tmp_path)
    except VaebenchError:
        pass
    runs_table([(tmp_path, metrics)])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_fuzzed_json_bytes_fail_only_with_the_cores_error(tmp_path, raw):
    (tmp_path / "x.json").write_bytes(raw)
    try:
        read_json(tmp_path / "x.json", "fix")
    except VaebenchError:
        pass


# -- 9. smaller ones -----------------------------------------------------------------------------------------


def test_numpy_resume_is_bit_exact(tiny_dir, tmp_path, monkeypatch):
    """The checkpoint keeps the backend's own precision (float64 for numpy)."""
    whole = tmp_path / "whole"
    _train(tiny_dir, whole, "--epochs 2")
    cut = tmp_path / "cut"
    original = runner.evaluate_split
    calls = {"n": 0}

    def second_epoch_killed(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # after epoch 1's checkpoint
        return original(*args, **kwargs)

    monkeypatch.setattr(runner, "evaluate_split", second_epoch_killed)
    CliRunner().invoke(cli, [*f"{QUICK} --epochs 2".split(), "--data-dir", str(tiny_dir), "--out", str(cut)])
    monkeypatch.undo()
    assert read_metrics(cut)["status"] == "interrupted"
    assert _cli(["run", "--resume", cut, "-q"]).returncode == 0
    a, b = load_params(whole / "weights.npz"), load_params(cut / "weights.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert read_metrics(whole)["history"][1]["test_neg_elbo"] == read_metrics(cut)["history"][1]["test_neg_elbo"]


def test_orphaned_temporary_files_are_cleaned_when_the_folder_is_next_held(done_run):
    orphan = done_run / ".checkpoint.npz.99999.tmp"
    orphan.write_bytes(b"half a checkpoint")
    _crashed_in_final_eval(done_run)
    assert _cli(["run", "--resume", done_run, "-q"]).returncode == 0
    assert not orphan.exists()


def test_epochs_0_names_only_what_it_wrote(tiny_dir, tmp_path):
    proc = _cli([*f"{QUICK} --epochs 0".split(), "--data-dir", tiny_dir, "--out", tmp_path / "r"])
    assert proc.returncode == 0, proc.stderr
    assert "grid.png" in proc.stdout and "curves.png" not in proc.stdout and not (tmp_path / "r" / "curves.png").exists()


def test_backends_devices_asks_each_backend_in_its_own_process():
    proc = _cli(["backends", "--devices"])
    assert proc.returncode == 0, proc.stderr
    assert "unusable" not in proc.stdout, proc.stdout
    assert "device     cpu" in proc.stdout


# -- a busy machine (issue #16): fewer threads, said and recorded ---------------------------------------------


def test_busy_cores_is_the_other_processes_share_of_the_cpus(monkeypatch):
    from vaebench.plugin import host as environment

    samples = iter([(1000, 4000), (1150, 4200)])  # 150 of 200 jiffies busy while vaebench slept
    monkeypatch.setattr(environment.os, "cpu_count", lambda: 2)
    assert environment.busy_cores(0.0, lambda: next(samples)) == pytest.approx(1.5)
    assert environment.busy_cores(0.0, lambda: None) == 0.0


@pytest.mark.parametrize("usable, busy, threads", [(2, 0.1, 2), (2, 0.6, 1), (2, 1.9, 1), (2, 5.0, 1), (16, 3.4, 13)])
def test_default_threads_leave_the_busy_cores_alone(usable, busy, threads):
    from vaebench.plugin.host import default_threads

    assert default_threads(usable, busy) == threads


def test_a_run_on_a_busy_machine_takes_fewer_threads_and_records_why(tiny_dir, tmp_path, monkeypatch):
    from vaebench.plugin import host as environment

    monkeypatch.setattr(environment, "usable_cores", lambda: 2)
    monkeypatch.setattr(environment, "busy_cores", lambda: 1.7)
    out = tmp_path / "r"
    result = CliRunner().invoke(cli, [*QUICK.replace(" -q", "").split(), "--data-dir", str(tiny_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "this machine is busy (1.7 of" in result.output and "training with 1 thread instead of 2" in result.output
    recorded = read_metrics(out)["environment"]["threads"]
    assert {k: recorded[k] for k in ("threads", "chosen_by", "usable_cores", "busy_cores")} == {
        "threads": 1,
        "chosen_by": "load",
        "usable_cores": 2,
        "busy_cores": 1.7,
    }
    assert recorded["load_at_start"]["busy"] is True and recorded["load_at_end"]["busy_cores"] == 1.7
    monkeypatch.setattr(environment, "busy_cores", lambda: 0.1)
    quiet = tmp_path / "q"
    result = CliRunner().invoke(cli, [*QUICK.replace(" -q", "").split(), "--data-dir", str(tiny_dir), "--out", str(quiet)])
    assert "machine is busy" not in result.output and read_metrics(quiet)["environment"]["threads"]["threads"] == 2


# -- progress in a log (issue #16): a line every 30 s, not silence --------------------------------------------


def test_without_a_terminal_progress_is_a_line_every_interval():
    from vaebench.run.progress import LineProgress

    now = [0.0]
    lines = []
    bar = LineProgress(100, "IWAE k=5000", "image", interval=30.0, write=lines.append, clock=lambda: now[0])
    for _ in range(100):
        now[0] += 1.0  # one image a second
        bar.update(1)
        bar.set_postfix(loss="1.00")
    bar.close()
    assert len(lines) == 4  # at 30, 60 and 90 s, and the end
    assert lines[0] == "IWAE k=5000: 30/100 images, 30s, 1 image/s, 70s left  loss=1.00"
    assert lines[-1].startswith("IWAE k=5000: 100/100 images, 100s")


def test_a_run_in_a_log_says_it_is_alive(tiny_dir, tmp_path):
    args = [*QUICK.replace(" -q", "").split(), "--eval-k", "16", "--data-dir", tiny_dir, "--out", tmp_path / "r"]
    proc = _cli(args, env={"VAEBENCH_LOG_INTERVAL": "0"})  # stderr is a pipe here, as in a log
    assert proc.returncode == 0, proc.stderr
    assert "epoch 1/1: 8/8 steps" in proc.stderr and "IWAE k=16: 64/64 images" in proc.stderr


# -- TensorBoard (issue #16): every run, read back from the event file ---------------------------------------


def _events(folder):
    """Every Event in a run's tb/ folder, parsed from the TFRecord framing with tensorboardX's own protos."""
    import struct

    from vaebench.run.outputs.tensorboard import _summary_writer

    _summary_writer()  # imports tensorboardX without torch
    from tensorboardX.proto import event_pb2

    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + n])
            out.append(event)
            i += 12 + n + 4
    return out


def test_a_run_writes_tensorboard_events_that_match_its_metrics(tiny_dir, tmp_path):
    out = tmp_path / "r"
    _train(tiny_dir, out, "--epochs 2")
    history = read_metrics(out)["history"]
    scalars, images, texts = {}, set(), set()
    for event in _events(out / "tb"):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
            elif value.HasField("image"):
                images.add((value.tag, event.step))
            elif value.metadata.plugin_data.plugin_name == "text":
                texts.add(value.tag)
    steps = 256 // 32
    assert [s for s, _ in scalars["train/loss"]] == list(range(1, 2 * steps + 1))  # every step, once
    assert scalars["test/neg_elbo"] == [
        (e * steps, pytest.approx(h["test_neg_elbo"], rel=1e-6)) for e, h in enumerate(history, 1)
    ]
    assert {tag for tag, _ in images} == {"grid", "samples", "reconstructions"} and ("grid", steps) in images
    assert any(t.startswith("config") for t in texts)


def test_no_tensorboard_writes_none_and_the_core_imports_no_framework(tiny_dir, tmp_path):
    out = tmp_path / "r"
    _train(tiny_dir, out, "--no-tensorboard")
    assert not (out / "tb").exists()
    code = (
        "import sys; from vaebench.run.outputs.tensorboard import RunLog; RunLog(sys.argv[1]).close(); "
        "print([m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "tb")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


# -- MLflow (issue #16, optional): the real local file store, read back with MLflow's client ---------------------


def test_a_run_logged_to_mlflow_reads_back_with_its_params_metrics_and_files(tiny_dir, tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason='MLflow is an optional extra: pip install -e ".[mlflow]"')
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    out = tmp_path / "r"
    _train(tiny_dir, out, f"--epochs 2 --mlflow {uri}")
    metrics = read_metrics(out)
    client = MlflowClient(uri)
    run = client.get_run(metrics["tracking"]["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "r"
    assert run.data.params["backend"] == "numpy" and run.data.params["epochs"] == "2"
    elbo = client.get_metric_history(run.info.run_id, "test_neg_elbo")
    assert [(m.step, m.value) for m in elbo] == [(h["epoch"], pytest.approx(h["test_neg_elbo"])) for h in metrics["history"]]
    assert {"metrics.json", "weights.npz", "grid.png"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_mlflow_asked_for_but_missing_is_one_line_before_anything_is_written(tiny_dir, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    result = CliRunner().invoke(cli, [*QUICK.split(), "--mlflow", "--data-dir", str(tiny_dir), "--out", str(tmp_path / "r")])
    assert result.exception.exit_code == 2 and "pip install" in str(result.exception) and not (tmp_path / "r").exists()
