"""`vaebench sweep` on a real Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``).

Each test starts its own two-node cluster and drives it with the real command
in a process of its own, as a user would with ``--address``: the driver's exit
code, ``sweep.json`` and the run folders are what is checked. The runs are tiny
(a made-up 256-image data set), on the numpy backend the core ships, plus torch
where it is installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from vaebench.model.weights import load_params  # noqa: E402
from vaebench.plugin import registry  # noqa: E402
from vaebench.run.results import read_metrics  # noqa: E402
from vaebench.sweep.plan import SWEEP_FILE, read_record  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}


@pytest.fixture
def cluster():
    """Two Ray nodes of one CPU each; yields the cluster and the second (killable) node."""
    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    second = c.add_node(**NODE)
    c.wait_for_nodes()
    try:
        yield c, second
    finally:
        c.shutdown()


def _sweep(*args: object, env: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VAEBENCH_LOG_INTERVAL": "0", **(env or {})}
    cmd = [sys.executable, "-m", "vaebench.cli", "sweep", *map(str, args)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _record(sweep_dir: Path) -> dict | None:
    try:
        return json.loads((sweep_dir / SWEEP_FILE).read_text())
    except (OSError, ValueError):
        return None


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 300, what: str = "") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc.poll() is not None:
            pytest.fail(f"the sweep ended before {what}: {proc.communicate()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"timed out waiting for {what}: {proc.communicate()}")


def _check_run_folders(sweep_dir: Path, record: dict) -> None:
    """Every run completed once, its folder whole and valid, and nothing else in runs/."""
    names = {r["name"] for r in record["runs"]}
    assert all(r["status"] == "completed" for r in record["runs"]), [(r["name"], r["status"], r["error"]) for r in record["runs"]]
    assert {p.name for p in (sweep_dir / "runs").iterdir()} == names  # no duplicates, no half-written leftovers
    for entry in record["runs"]:
        folder = sweep_dir / entry["folder"]
        metrics = read_metrics(folder)
        assert metrics["status"] == "completed" and metrics["config"] == entry["config"]
        assert metrics["placement"]["node"]["node_id"] == entry["node"]["node_id"]
        load_params(folder / "weights.npz")
        assert (folder / "grid.png").stat().st_size > 0


def test_a_sweep_on_two_nodes_brings_every_run_home(cluster, tiny_dir, tmp_path):
    c, second = cluster
    backends = "numpy,torch" if "torch" in registry.installed() else "numpy"
    out = tmp_path / "sweep"
    proc = _sweep(
        *("--backends", backends, "--models", "mlp", "--seeds", "0-2" if "torch" in backends else "0-5"),
        *("--epochs", 1, "--batch-sizes", 32, "--data-dir", tiny_dir, "--address", c.address, "--out", out),
    )
    code, stdout, stderr = _finish(proc)
    assert code == 0, stderr
    record = read_record(out)
    assert len(record["runs"]) == 6
    _check_run_folders(out, record)
    nodes = {r["node"]["node_id"] for r in record["runs"]}
    assert nodes == {c.head_node.node_id, second.node_id}  # both nodes worked
    for entry in record["runs"]:
        folder = out / entry["folder"]
        assert not (folder / "checkpoint.npz").exists()  # checkpoints stay on the workers
        placement = read_metrics(folder)["placement"]
        assert placement["exclusive"] is False and placement["num_cpus"] == 1
    if "torch" in backends:  # the same seed gives the same -ELBO in both frameworks, as in `vaebench run`
        by = {(r["config"]["backend"], r["config"]["seed"]): read_metrics(out / r["folder"])["final"] for r in record["runs"]}
        for seed in range(3):
            assert by[("numpy", seed)]["test_neg_elbo"] == pytest.approx(by[("torch", seed)]["test_neg_elbo"], abs=0.05)
    assert "6 of 6 runs completed" in stdout
    assert "sweep: " in stderr and "runs" in stderr  # the progress lines of a log (stderr is a pipe here)
    compare = subprocess.run([sys.executable, "-m", "vaebench.cli", "compare", str(out)], capture_output=True, text=True)
    assert compare.returncode == 0 and "Over seeds" in compare.stdout, compare.stderr


def test_a_node_killed_mid_sweep_loses_nothing_and_its_run_resumes_from_the_checkpoint(cluster, tiny_dir, tmp_path):
    c, second = cluster
    storage = tmp_path / "shared"
    proc = _sweep(
        *("--backends", "numpy", "--models", "mlp", "--seeds", "0-3", "--epochs", 12, "--batch-sizes", 32),
        *("--data-dir", tiny_dir, "--address", c.address, "--storage", storage),
    )
    sweep_dir = _wait_for(lambda: next(iter(storage.glob("*/sweep.json")), None), proc, what="sweep.json").parent

    def on_second_with_checkpoint() -> str | None:
        for r in (_record(sweep_dir) or {"runs": []})["runs"]:
            on_second = r["status"] == "running" and (r.get("node") or {}).get("node_id") == second.node_id
            if on_second and (sweep_dir / "runs" / r["name"] / "checkpoint.npz").exists():
                return r["name"]
        return None

    victim = _wait_for(on_second_with_checkpoint, proc, what="a run on the second node with a checkpoint")
    c.remove_node(second, allow_graceful=False)
    code, _stdout, stderr = _finish(proc)
    assert code == 0, stderr
    record = read_record(sweep_dir)
    _check_run_folders(sweep_dir, record)
    entry = next(r for r in record["runs"] if r["name"] == victim)
    assert entry["attempts"] >= 2 and entry["node"]["node_id"] == c.head_node.node_id, (entry["attempts"], entry["node"])
    metrics = read_metrics(sweep_dir / entry["folder"])
    assert metrics["resumed"] and metrics["resumed"][0]["epoch"] >= 1  # from the checkpoint, not from scratch
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, 13))  # every epoch once


def test_ctrl_c_then_resume_completes_the_same_runs_and_keeps_what_was_done(cluster, tiny_dir, tmp_path):
    c, _second = cluster
    out = tmp_path / "sweep"
    grid = ("--backends", "numpy", "--models", "mlp", "--seeds", "0-5", "--epochs", 6, "--batch-sizes", 32, "--exclusive")
    planned = subprocess.run(
        [sys.executable, "-m", "vaebench.cli", "sweep", *map(str, grid), "--dry-run"], capture_output=True, text=True
    )
    expected = {line.split()[0] for line in planned.stdout.splitlines()[:-1]}
    assert len(expected) == 6
    proc = _sweep(*grid, "--data-dir", tiny_dir, "--address", c.address, "--out", out)
    _wait_for(lambda: any(r["status"] == "completed" for r in (_record(out) or {"runs": []})["runs"]), proc, what="a run")
    proc.send_signal(signal.SIGINT)
    code, _stdout, stderr = _finish(proc, timeout=120)
    assert code == 130, stderr
    assert "sweep --resume" in stderr.strip().splitlines()[-1] and "Traceback" not in stderr, stderr
    stopped = read_record(out)
    states = {r["status"] for r in stopped["runs"]}
    assert states <= {"completed", "interrupted", "pending"}, states
    done = {r["name"]: (out / r["folder"] / "metrics.json").read_bytes() for r in stopped["runs"] if r["status"] == "completed"}
    assert 1 <= len(done) < 6
    assert {p.name for p in (out / "runs").iterdir()} == set(done)  # only whole runs came home

    code, stdout, stderr = _finish(_sweep("--resume", out, "--address", c.address))
    assert code == 0, stderr
    assert f"{len(done)} of 6 runs completed" in stdout.splitlines()[0]
    record = read_record(out)
    _check_run_folders(out, record)
    assert {r["name"] for r in record["runs"]} == expected
    for name, before in done.items():  # what was done before Ctrl-C was not run again
        assert (out / "runs" / name / "metrics.json").read_bytes() == before
    for entry in record["runs"]:
        placement = read_metrics(out / entry["folder"])["placement"]
        assert placement["exclusive"] is True and placement["num_cpus"] == 1  # a whole (one-CPU) node
    assert len(record["sessions"]) == 2 and record["sessions"][0]["stopped_by_signal"] == signal.SIGINT


def test_objectives_over_seeds_on_two_nodes_each_run_with_its_objective_and_its_own_backends_options(cluster, tiny_dir, tmp_path):
    """Issue #28 and #26's -o BACKEND:KEY=VALUE end to end: vae and iwae K=2 as two groups, torch's option on torch only."""
    c, _second = cluster
    torch = "torch" in registry.installed()
    routed = ("--backends", "numpy,torch", "-o", "torch:layout=nchw") if torch else ("--backends", "numpy")  # numpy has no layout
    out = tmp_path / "sweep"
    proc = _sweep(
        *routed,
        *("--models", "mlp", "--objective", "vae,iwae", "--iw-samples", 2, "--seeds", "0-1", "--epochs", 1),
        *("--batch-sizes", 32, "--limit-train", 64, "--data-dir", tiny_dir, "--address", c.address, "--out", out, "-q"),
    )
    code, stdout, stderr = _finish(proc)
    assert code == 0, stderr
    record = read_record(out)
    assert len(record["runs"]) == (8 if torch else 4)  # per backend: 2 objectives x 2 seeds, K multiplying only iwae
    _check_run_folders(out, record)
    for entry in record["runs"]:
        cfg = read_metrics(out / entry["folder"])["config"]
        iwae = entry["name"].endswith(("iwae2-seed0", "iwae2-seed1"))
        assert (cfg["objective"], cfg["iw_samples"]) == (("iwae", 2) if iwae else ("vae", 1)), entry["name"]
        assert cfg["options"] == ({"layout": "nchw"} if cfg["backend"] == "torch" else {}), entry["name"]
    assert "warning" not in stderr, stderr  # the groups differ in the objective only, which the sweep varies
    assert f"{len(record['runs'])} of {len(record['runs'])} runs completed" in stdout
    compare = subprocess.run([sys.executable, "-m", "vaebench.cli", "compare", str(out)], capture_output=True, text=True)
    assert compare.returncode == 0 and "iwae k=2" in compare.stdout, (compare.stdout, compare.stderr)
