"""Which Ray a sweep runs on: its own local instance unless ``--address`` says otherwise, and an address that
cannot be reached refused in seconds, in one line, with no sweep folder left behind (issue #26, item 8).

Driven through the real ``vaebench sweep`` process: the exit code, stderr, the time it took and what is on
disk afterwards are the point. Every cluster a test starts is shut down in the fixture's teardown, and lives
under a temp folder of its own (``RAY_TMPDIR``), so its ``ray_current_cluster`` file is no other test's.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from vaebench.sweep.plan import read_record  # noqa: E402

TINY = ("--backends", "numpy", "--models", "mlp", "--epochs", "1", "--batch-sizes", "32", "--limit-train", "64")


def _sweep(*args: object, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VAEBENCH_LOG_INTERVAL": "0", **(env or {})}
    cmd = [sys.executable, "-m", "vaebench.cli", "sweep", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def leftover(monkeypatch):
    """A one-node cluster left running, its address in ``ray_current_cluster`` (and RAY_ADDRESS unset)."""
    temp = tempfile.mkdtemp(prefix="vbr", dir="/tmp")  # short: Ray's socket paths live under it
    monkeypatch.setenv("RAY_TMPDIR", temp)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    c = None
    try:
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 80 << 20})
        c.wait_for_nodes()
        assert os.path.isfile(os.path.join(temp, "ray", "ray_current_cluster"))  # what ray.init() would follow
        yield c
    finally:
        if c is not None:
            c.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


def test_an_address_nothing_listens_on_is_one_line_in_seconds_and_leaves_no_folder(tiny_dir, tmp_path):
    out = tmp_path / "sweep"
    t0 = time.monotonic()
    proc = _sweep(*TINY, "--data-dir", tiny_dir, "--address", "127.0.0.1:1", "--out", out, timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # no Ray warnings before it, no traceback
    assert "127.0.0.1:1" in lines[0] and "ray start --head" in lines[0] and "leave --address out" in lines[0]
    assert took < 60, took  # Ray's own ray.init retries for minutes
    assert not out.exists()  # a sweep Ray cannot reach leaves no folder


def test_resume_with_an_unreachable_address_is_refused_in_one_line_and_changes_nothing(tiny_dir, tmp_path):
    out = tmp_path / "sweep"
    done = _sweep(*TINY, "--data-dir", tiny_dir, "--out", out, "-q")
    assert done.returncode == 0, done.stderr
    before = (out / "sweep.json").read_bytes()
    proc = _sweep("--resume", out, "--address", "127.0.0.1:1", timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "127.0.0.1:1" in proc.stderr
    assert (out / "sweep.json").read_bytes() == before


def test_a_local_sweep_starts_its_own_ray_and_never_joins_a_cluster_left_running(leftover, tiny_dir, tmp_path):
    out = tmp_path / "sweep"
    proc = _sweep(*TINY, "--data-dir", tiny_dir, "--out", out, "-q")
    assert proc.returncode == 0, proc.stderr
    record = read_record(out)
    [run] = record["runs"]
    assert run["status"] == "completed"
    assert run["node"]["node_id"] != leftover.head_node.node_id  # it ran on a Ray of its own
    assert record["sessions"][-1]["address"] == "local"


@pytest.fixture
def not_ray():
    """A port that accepts connections and says nothing: open, but no Ray cluster's."""
    srv = socket.create_server(("0.0.0.0", 0))  # every interface: Ray dials the node's address for 127.0.0.1
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        srv.close()


def test_an_open_port_that_is_not_ray_is_given_up_on_in_one_line_and_leaves_no_folder(not_ray, tiny_dir, tmp_path):
    out = tmp_path / "sweep"
    t0 = time.monotonic()
    address = f"127.0.0.1:{not_ray}"
    env = {"VAEBENCH_RAY_CONNECT_TIMEOUT": "8"}
    proc = _sweep(*TINY, "--data-dir", tiny_dir, "--address", address, "--out", out, env=env, timeout=120)
    took = time.monotonic() - t0
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    last = proc.stderr.strip().splitlines()[-1]  # Ray's own retry warnings may come first
    assert last.startswith("error: ") and address in last and "within 8 s" in last and "Traceback" not in proc.stderr
    assert took < 60, took  # without the bound, ray.init retries for good
    assert not out.exists()
