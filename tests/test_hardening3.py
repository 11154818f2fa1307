"""Hardening, round two, what the sweep still let through (issue #26): each test drives the real ``vaebench`` process.

A sweep checks every run before any starts (options its backend refuses, CPUs
no node has) in its dry run and its real run alike; an ``--address`` whose port
is open but not Ray's is one line with no warning of Ray's before it; and a
sweep's statistics pair only comparable runs, naming the field that differs.
Every refusal is exit 2, one line, no traceback, and leaves no sweep folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socketserver
import threading
import uuid
from pathlib import Path

import pytest
from test_hardening import _cli, _one_line_exit_2, _train  # the one copy of the round's helpers

from vaebench.sweep import plan

TINY = ["sweep", "--backends", "numpy", "--models", "mlp", "--epochs", "1", "--batch-sizes", "32", "--limit-train", "64"]


# -- every run is checked before any starts: options, and the CPUs a run reserves --------------------------------


@pytest.mark.parametrize("dry", [["--dry-run"], []], ids=["dry-run", "real"])
@pytest.mark.parametrize(
    "extra, needles",
    [
        (["-o", "nosuch=1"], ["numpy-mlp-bs32", "has no option 'nosuch'"]),  # an option numpy does not declare
        (["--threads", str((os.cpu_count() or 1) + 1)], ["reserves", "CPUs", f"more than the {os.cpu_count()}"]),
    ],
    ids=["undeclared-option", "more-cpus-than-the-machine"],
)
def test_a_sweep_refuses_a_run_that_cannot_start_before_ray_or_any_folder(tiny_dir, tmp_path, extra, needles, dry):
    out = tmp_path / "sweep"
    proc = _cli([*TINY, *extra, *dry, "--data-dir", tiny_dir, "--out", out, "-q"], timeout=120)
    _one_line_exit_2(proc, *needles, "no run was started")
    assert not out.exists() and "nothing started" not in proc.stdout


def test_a_value_the_backend_refuses_fails_the_dry_run_naming_the_run(tmp_path):
    pytest.importorskip("vaebench_torch")  # its class only: the check imports no framework
    proc = _cli(["sweep", "--backends", "torch", "--models", "mlp", "-o", "layout=sideways", "--dry-run"], timeout=120)
    _one_line_exit_2(proc, "torch-mlp-", "layout must be one of nhwc, nchw", "'sideways'")


# -- an address whose port is open but not Ray's: one line, no Ray warning ----------------------------------------


class _Silent(socketserver.BaseRequestHandler):
    def handle(self) -> None:  # holds the connection, says nothing
        self.server.stop.wait(30)  # type: ignore[attr-defined]


class _Web(socketserver.BaseRequestHandler):
    def handle(self) -> None:  # a web server's answer to anything
        self.request.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture(params=[_Silent, _Web], ids=["silent", "web-server"])
def open_port(request):
    """A port on every interface (Ray dials the node's address for 127.0.0.1) that is open and is not Ray's."""
    server = socketserver.ThreadingTCPServer(("0.0.0.0", 0), request.param)
    server.daemon_threads = True
    server.stop = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.stop.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


def test_an_open_port_that_is_not_ray_is_exactly_one_line_and_no_warning_of_rays(open_port, tiny_dir, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "sweep"
    address = f"127.0.0.1:{open_port}"
    env = {"VAEBENCH_RAY_CONNECT_TIMEOUT": "5"}
    proc = _cli([*TINY, "--data-dir", tiny_dir, "--address", address, "--out", out], timeout=120, env=env)
    _one_line_exit_2(proc, address, "spoke Ray", "leave --address out")  # Ray's GCS retry warnings came first
    assert proc.stderr.startswith("error: "), proc.stderr
    assert not out.exists()


@pytest.fixture
def one_cpu_cluster(monkeypatch):
    """A real one-node Ray cluster with one CPU, in a temp folder of its own, shut down afterwards."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    temp = Path(f"/tmp/vbr{uuid.uuid4().hex[:6]}")  # short: Ray's socket paths live under it
    temp.mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(temp))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 << 20})
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if cluster is not None:
            cluster.shutdown()
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_a_run_no_node_of_the_cluster_can_hold_is_refused_once_joined_and_leaves_no_folder(one_cpu_cluster, tiny_dir, tmp_path):
    """The cluster's size is known only once joined: then, before any task, one line (Ray would keep it pending)."""
    out = tmp_path / "sweep"
    proc = _cli([*TINY, "--threads", "2", "--data-dir", tiny_dir, "--address", one_cpu_cluster.address, "--out", out])
    _one_line_exit_2(proc, "reserves 2 CPUs", "no node of the Ray cluster", "largest: 1 CPUs", "--threads 1")
    assert not out.exists()  # the folder made for it is gone again: nothing ran


# -- a sweep's statistics pair only comparable runs, and say which field differs -------------------------------


def _sweep_of(tiny_dir: Path, sweep_dir: Path) -> Path:
    """A finished sweep of numpy seeds 0-1 and "torch" seeds 0-1, the torch ones trained on other data."""
    grid = plan.Grid(backends=["numpy", "torch"], models=["mlp"], seeds=[0, 1], batch_sizes=[32], epochs=[1])
    runs = grid.expand()
    record = plan.new_record(grid, runs, plan.record_settings({}))
    by_seed = {}
    for entry in record["runs"]:
        folder = sweep_dir / plan.RUNS / entry["name"]
        seed = entry["config"]["seed"]
        if entry["config"]["backend"] == "numpy":
            _train(tiny_dir, folder, f"--seed {seed}")
            by_seed[seed] = folder
        else:
            shutil.copytree(by_seed[seed], folder)
            metrics = json.loads((folder / "metrics.json").read_text())
            metrics["run_id"] = uuid.uuid4().hex
            metrics["config"]["backend"] = "torch"
            metrics["data"]["sha256"] = {name: "0" * 64 for name in metrics["data"]["sha256"]}
            metrics["final"]["test_neg_elbo"] += 318.0
            (folder / "metrics.json").write_text(json.dumps(metrics))
        entry.update(status="completed", folder=f"{plan.RUNS}/{entry['name']}")
    plan.write_record(sweep_dir, record)
    return sweep_dir


def test_a_sweeps_verdict_never_pairs_runs_trained_on_different_data(tiny_dir, tmp_path):
    sweep_dir = _sweep_of(tiny_dir, tmp_path / "sweep")
    proc = _cli(["compare", sweep_dir], timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "numpy - torch" not in proc.stdout  # no verdict of "different" that blames the frameworks
    assert "differ in data" in proc.stderr and "not seeds of one comparison" in proc.stderr, proc.stderr
