"""A sweep executed on Ray: each run a task in a fresh worker process, results home, faults survived.

Ray does the scheduling, packing and retrying; this module only translates a
sweep's plan (:mod:`vaebench.sweep.plan`) into tasks and keeps ``sweep.json`` true:

- **One run, one process.** Each run is a task of a remote function with
  ``max_calls=1``, so its worker exits after it and the next run starts in a
  fresh process (Keras engines cannot share one). It asks for ``num_cpus`` equal
  to its threads (``--exclusive``: a whole node) and ``num_gpus=1`` with
  ``--device cuda``.
- **Results come home.** With ``--storage`` the sweep folder is shared and
  workers write ``runs/<name>`` in it, so a run retried after its node died
  resumes from its checkpoint. Without, a worker trains in a temporary folder
  and returns the finished run's files (not the checkpoint) through Ray's
  object store; the driver writes them under ``runs/<name>``, atomically.
- **Faults.** Ray retries a task whose worker or node dies (``max_retries``).
  A run that fails for a reason the user can fix (bad data, divergence) is
  *returned* as failed, not raised, so Ray does not retry it.
- **Stopping.** The first Ctrl-C (or SIGTERM) cancels every task: a queued run
  stays pending, a running one gets SIGINT from Ray, checkpoints and returns
  ``interrupted``. Nothing already home is touched; ``--resume`` reruns the rest.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, DivergedError, InUseError, RunInterruptedError, Terminated, VaebenchError
from vaebench.run.progress import progress as progress_bar
from vaebench.run.results import LOCK, METRICS, RUN_OUTPUTS, RunLock, headline, read_metrics
from vaebench.run.signals import StopFlag
from vaebench.sweep.plan import COMPLETED, INTERRUPTED, LOST, PENDING, RUNNING, RUNS, SWEEP_FILE, counts, write_record

RAY_PIN = "ray==2.60.0"
INSTALL_HINT = f'vaebench sweep needs Ray: pip install -e ".[sweep]" (or pip install "{RAY_PIN}")'
CANCEL_GRACE = 60.0  # seconds a cancelled run gets to checkpoint before it is killed
LOCK_WAIT = 120.0  # seconds a retried run waits for the lock of its dead predecessor's folder
POLL = 0.5


def require_ray() -> Any:
    """The ``ray`` module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


PROBE_TIMEOUT = 10.0  # seconds to wait for a cluster's port to answer before giving up on it


def _target(address: str) -> str:
    """``host:port`` of ``address``: as given, less ``ray://``; for ``auto``, what Ray would join (RAY_ADDRESS, last one)."""
    if "://" in address:
        return address.split("://", 1)[1].rstrip("/")
    if address != "auto":
        return address
    from ray._private import services

    try:
        found = services.canonicalize_bootstrap_address("auto")
    except (ConnectionError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or ["none found"])[0][:200]
        raise ConfigError(
            f"--address auto found no Ray cluster on this machine ({first}); start one with `ray start --head`, "
            "give its HOST:PORT, or leave --address out for a local Ray"
        ) from None
    return str(found)


def check_reachable(address: str | None) -> None:
    """Refuse, in one line and within :data:`PROBE_TIMEOUT`, a cluster address whose port does not answer.

    ``ray.init`` on an address where nothing listens retries for minutes (Ray
    2.60 never gives up on its own), printing warnings; a TCP connection to the
    same port says in seconds whether anything is there. Called before the
    sweep's folder is made, so a cluster that cannot be reached leaves no folder.
    """
    if not address:
        return
    require_ray()
    target = _target(address)
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"--address {address!r} is not HOST:PORT, ray://HOST:PORT or auto; give the address `ray start --head` printed"
        )
    try:
        conn = socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT)
    except OSError as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc) or type(exc).__name__)
        raise ConfigError(
            f"cannot reach the Ray cluster at {address} ({target}: {why} within {PROBE_TIMEOUT:.0f} s); start it "
            "(`ray start --head`) or check the address, or leave --address out for a local Ray; nothing was written"
        ) from None
    with conn:
        limit = connect_timeout()
        if os.environ.get("RAY_USE_TLS", "0").lower() not in ("1", "true"):
            why = not_grpc(conn, limit)
            if why:
                raise _not_ray(address, why)


#: An HTTP/2 client's connection preface and an empty SETTINGS frame (RFC 9113, 3.4 and 6.5): what a gRPC client sends
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def not_grpc(conn: socket.socket, limit: float) -> str | None:
    """Why the server on ``conn`` is not Ray's, or ``None`` when it answers an HTTP/2 preface as Ray's gRPC servers do.

    The cheap question that keeps a port that is open but not Ray's (a web
    server, a listener that says nothing) away from ``ray.init``, whose C++
    client prints retry warnings to the terminal before it can be given up
    on. Ray's GCS and its client server answer with a SETTINGS frame at once.
    A TLS cluster (``RAY_USE_TLS``) is not asked: it would not answer in clear.
    """
    head, closed = b"", False
    try:
        conn.settimeout(limit)
        conn.sendall(H2_PREFACE)
        while len(head) < 9 and not closed:  # a frame header: length (3), type (1), flags (1), stream (4)
            chunk = conn.recv(9 - len(head))
            head, closed = head + chunk, not chunk
    except TimeoutError:
        pass
    except OSError:  # reset
        closed = True
    if len(head) == 9 and head[3] == 0x4 and int.from_bytes(head[5:9], "big") & 0x7FFFFFFF == 0:
        return None
    if head:
        return f"answered {head!r}, which is not Ray's gRPC"
    return "closed the connection without a word" if closed else f"did not answer within {limit:.0f} s"


def _not_ray(address: str, why: str) -> ConfigError:
    return ConfigError(
        f"the Ray cluster at {address} {why} (its port is open, but nothing there spoke Ray); check the address "
        "(`ray status` on the head node prints it), or leave --address out for a local Ray; nothing was written"
    )


def connect_timeout() -> float:
    """Seconds ``ray.init`` may take to join a cluster: ``VAEBENCH_RAY_CONNECT_TIMEOUT``, else 120."""
    text = os.environ.get("VAEBENCH_RAY_CONNECT_TIMEOUT", "")
    try:
        return max(1.0, float(text)) if text else 120.0
    except ValueError:
        raise ConfigError(f"VAEBENCH_RAY_CONNECT_TIMEOUT={text!r} is not a number of seconds") from None


def _init_within(ray: Any, kwargs: dict[str, Any], address: str) -> None:
    """``ray.init(**kwargs)``, given :func:`connect_timeout` seconds to join the cluster at ``address``.

    A port that answers but is not a Ray cluster's (or a cluster that never
    replies) keeps ``ray.init`` retrying for good: it runs in a daemon thread,
    and the sweep gives up on it in one line. The thread is left to die with
    the process, which ends right after the refusal.
    """
    failure: list[BaseException] = []

    def attempt() -> None:
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    limit = connect_timeout()
    thread = threading.Thread(target=attempt, name="vaebench-ray-connect", daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        raise _not_ray(address, f"did not answer within {limit:.0f} s")
    if failure:
        raise failure[0]


def connect(address: str | None) -> Any:
    """``ray.init``: a new local instance on this machine by default, or the cluster at ``address``.

    Without an address, ``ray.init()`` would follow ``RAY_ADDRESS`` or the
    ``ray_current_cluster`` file a cluster left in Ray's temp folder, and join a
    cluster nobody asked for (a dead one hangs the sweep): ``address="local"``
    starts a fresh instance whatever those say.
    """
    ray = require_ray()
    check_reachable(address)
    kwargs = {
        "address": address or "local",
        "include_dashboard": False,
        "log_to_driver": False,  # each run's own output stays in its worker's log; results come back as records
        "logging_level": "ERROR",
        "configure_logging": True,
    }
    try:
        if address:
            _init_within(ray, kwargs, address)
        else:
            ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        first = str(exc).splitlines()[0][:200]
        unreached = address and any(w in first.lower() for w in ("failed to connect", "timeout", "auth"))
        auth = " (a cluster with token authentication: export RAY_AUTH_MODE=token, and its token in RAY_AUTH_TOKEN)"
        auth = auth if unreached else ""
        raise ConfigError(f"cannot start or reach {where}: {first}{auth}") from None
    return ray


def node_cpus(ray: Any) -> int:
    """CPUs of the largest alive node: what ``--exclusive`` reserves (a mixed cluster runs exclusive runs on its largest)."""
    sizes = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")]
    return max(sizes, default=1) or 1


def resources(config: dict[str, Any], exclusive: bool, whole_node: int) -> dict[str, Any]:
    """What a run asks Ray for: its threads' cores (or the whole node), and a GPU for ``--device cuda``."""
    threads = config.get("threads") or 1
    return {"num_cpus": whole_node if exclusive else threads, "num_gpus": 1 if config.get("device") == "cuda" else 0}


def check_fits(ray: Any, record: dict[str, Any], address: str | None) -> None:
    """Refuse, once Ray is joined and before any task, a run that no alive node can hold: it would wait for good.

    Ray keeps a task that asks for more CPUs or GPUs than any node has pending
    forever, with a warning in its own log. Before Ray, the plan checked what
    it could (:func:`vaebench.sweep.preflight.check_runs`: this machine's CPUs);
    only now are a cluster's nodes, and a local Ray's GPUs, known.
    """
    nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
    whole = node_cpus(ray)
    for entry in record["runs"]:
        if entry["status"] == COMPLETED:
            continue
        need = resources(entry["config"], record["settings"]["exclusive"], whole)
        if any(r.get("CPU", 0) >= need["num_cpus"] and r.get("GPU", 0) >= need["num_gpus"] for r in nodes):
            continue
        cpus = max((int(r.get("CPU", 0)) for r in nodes), default=0)
        gpus = max((int(r.get("GPU", 0)) for r in nodes), default=0)
        where = f"the Ray cluster at {address}" if address else "the local Ray"
        asked = f"{need['num_cpus']} CPUs" + (" and 1 GPU (--device cuda)" if need["num_gpus"] else "")
        fix = f"--threads {cpus} or fewer" if need["num_cpus"] > cpus else "--device cpu, or a cluster with a GPU node"
        raise ConfigError(
            f"run {entry['name']} reserves {asked}, which no node of {where} has (largest: {cpus} CPUs, {gpus} GPUs), "
            f"so it could never start; give {fix}; no run was started"
        )


# ---- the worker side ------------------------------------------------------------------------------------------------


def _node() -> dict[str, Any]:
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    return {"host": socket.gethostname(), "ip": ray.util.get_node_ip_address(), "node_id": node_id}


def _train_here(spec: dict[str, Any], run_dir: Path, placement: dict[str, Any]) -> None:
    """Train ``spec`` into ``run_dir``: fresh, or resumed from the checkpoint a dead attempt left in shared storage."""
    from vaebench.model.config import TrainConfig
    from vaebench.run.runner import resume_run, train_and_evaluate

    quiet: Callable[[str], None] = lambda _msg: None  # noqa: E731
    common = {"data_dir": spec["data_dir"], "progress": False, "log": quiet, "tensorboard": spec["tensorboard"]}
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        try:
            if (run_dir / METRICS).is_file():
                status = read_metrics(run_dir)["status"]
                if status == COMPLETED:
                    return
                if (run_dir / "checkpoint.npz").is_file():
                    resume_run(run_dir, placement=placement, **common)
                    return
            train_and_evaluate(TrainConfig(**spec["config"]), run_dir, overwrite=True, placement=placement, **common)
            return
        except InUseError:  # the killed attempt's process may take a moment to die and free its lock
            if time.monotonic() > deadline:
                raise
            time.sleep(2.0)


def _collect(run_dir: Path) -> dict[str, bytes]:
    """A finished run's files, to travel home: everything but the checkpoint (and the lock)."""
    files = {name: (run_dir / name).read_bytes() for name in RUN_OUTPUTS if (run_dir / name).is_file()}
    tb = run_dir / "tb"
    if tb.is_dir():
        files.update({str(p.relative_to(run_dir)): p.read_bytes() for p in sorted(tb.rglob("*")) if p.is_file()})
    return files


def execute_run(spec: dict[str, Any], board: Any) -> dict[str, Any]:
    """One run, in its own Ray worker process: train, and return its record (and, without shared storage, its files).

    Never raises for a failure of the run itself, so Ray retries only what it
    should: a worker or node that died.
    """
    os.environ.setdefault("MPLBACKEND", "Agg")
    node = _node()
    with contextlib.suppress(Exception):  # progress only; the run does not depend on it
        board.started.remote(spec["name"], node)
    placement = {"sweep": spec["sweep"], "exclusive": spec["exclusive"], "node": node, **spec["resources"]}
    shared = spec["shared_dir"] is not None
    scratch = None if shared else Path(tempfile.mkdtemp(prefix="vaebench-sweep-"))
    run_dir = Path(spec["shared_dir"]) / RUNS / spec["name"] if shared else scratch / spec["name"]
    record: dict[str, Any] = {"name": spec["name"], "node": node, "files": None, "error": None}
    t0 = time.monotonic()
    try:
        _train_here(spec, run_dir, placement)
        record["status"] = COMPLETED
        final = read_metrics(run_dir)["final"]
        key, label = headline(final) or ("test_neg_elbo", "test -ELBO")
        record.update({"test_neg_elbo": final.get("test_neg_elbo"), "headline": [label, final.get(key)]})
        if not shared:
            record["files"] = _collect(run_dir)
    except RunInterruptedError as exc:
        record.update(status=INTERRUPTED, error=str(exc))
    except (KeyboardInterrupt, Terminated):  # cancelled before or after the training loop's own handler
        record.update(status=INTERRUPTED, error="stopped before its training began or after it ended")
    except DivergedError as exc:
        record.update(status="diverged", error=str(exc))
    except VaebenchError as exc:
        record.update(status="failed", error=str(exc))
    except Exception as exc:  # a bug: recorded with its type, and not retried (it would fail again)
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    record["seconds"] = time.monotonic() - t0
    return record


class Board:
    """A tiny actor on the driver's node that workers tell when they start: 'running' and attempts.

    It keeps every start, and the driver asks for those after the ones it has
    seen, so a reply lost to a timeout loses no start.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def started(self, name: str, node: dict) -> None:
        self.events.append((name, node))

    def since(self, seen: int) -> list[tuple[str, dict]]:
        return self.events[seen:]


class Starts:
    """The driver's view of the board, polled without blocking the loop."""

    def __init__(self, ray: Any, board: Any) -> None:
        self.ray, self.board, self.seen, self.asked = ray, board, 0, None

    def _apply(self, events: list[tuple[str, dict]], by_name: dict[str, dict]) -> bool:
        self.seen += len(events)
        for name, node in events:
            entry = by_name.get(name)
            if entry is None:
                continue
            entry["attempts"] = int(entry.get("attempts") or 0) + 1  # late or not, every start is an attempt
            if entry["status"] in (PENDING, RUNNING, INTERRUPTED):  # a start read after its run's end changes nothing else
                entry.update(status=RUNNING, node=node)
        return bool(events)

    def poll(self, by_name: dict[str, dict]) -> bool:
        """Apply the starts that have arrived; never waits."""
        if self.asked is None:
            self.asked = self.board.since.remote(self.seen)
        ready, _ = self.ray.wait([self.asked], timeout=0)
        if not ready:
            return False
        asked, self.asked = self.asked, None
        try:
            return self._apply(self.ray.get(asked), by_name)
        except Exception:  # the board is only for the display and the attempt counts
            return False

    def flush(self, by_name: dict[str, dict]) -> None:
        """Every start so far, before the record's last write."""
        try:
            if self.asked is not None:
                self._apply(self.ray.get(self.asked, timeout=10), by_name)
                self.asked = None
            self._apply(self.ray.get(self.board.since.remote(self.seen), timeout=10), by_name)
        except Exception:
            pass


# ---- the driver side ------------------------------------------------------------------------------------------------


def _safe_member(name: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and not Path(name).is_absolute() and ".." not in parts and (name in RUN_OUTPUTS or parts[0] == "tb")


def bring_home(sweep_dir: Path, name: str, files: dict[str, bytes]) -> None:
    """Write a run's files as ``<sweep>/runs/<name>``, appearing whole or not at all."""
    runs = Path(sweep_dir) / RUNS
    incoming = runs / f".incoming-{name}-{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    try:
        for member, data in files.items():
            if not _safe_member(member):
                raise VaebenchError(f"run {name} sent back a file named {member[:80]!r}, which no run writes; not kept")
            path = incoming / member
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        target = runs / name
        if target.exists():  # a folder left by a driver that died between writing it and recording it
            old = runs / f".replaced-{name}-{os.getpid()}"
            os.replace(target, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(incoming, target)
    except OSError as exc:
        raise VaebenchError(f"cannot write {runs / name}: {exc.strerror or exc}; free space and run `sweep --resume`") from None
    finally:
        shutil.rmtree(incoming, ignore_errors=True)


def _clear_leftovers(sweep_dir: Path) -> None:
    runs = Path(sweep_dir) / RUNS
    if runs.is_dir():
        for leftover in [*runs.glob(".incoming-*"), *runs.glob(".replaced-*")]:
            shutil.rmtree(leftover, ignore_errors=True)


def _lost_reason(exc: BaseException) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"{type(exc).__name__}: {first[:300]}"


def outcome_line(name: str, result: dict[str, Any]) -> str:
    """A finished run, in one line: its -ELBO and time, or its whole error (the error ends with the fix)."""
    line = f"{result['status']:11s} {name}"
    if result["status"] == COMPLETED:
        label, value = result.get("headline") or ("test -ELBO", result["test_neg_elbo"])
        figure = f"{value:.2f}" if label == "test -ELBO" else f"{value:.4f}"  # nats to 0.01; a VQ loss near 0.04
        return line + f"  {label} {figure}  {result['seconds']:.0f}s on {result['node']['host']}"
    return line + (f"  {' '.join(str(result['error']).split())}" if result["error"] else "")


def execute(
    sweep_dir: Path,
    record: dict[str, Any],
    address: str | None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    fresh: bool = False,
) -> dict[str, Any]:
    """Run every run of ``record`` that is not completed, on Ray; keep ``sweep.json`` current; return the record.

    ``fresh``: a sweep just made, whose folder is removed again if Ray cannot be reached.

    Raises :class:`SweepInterruptedError` after a Ctrl-C or SIGTERM, once
    ``sweep.json`` says which runs finished and which did not.
    """
    sweep_dir = Path(sweep_dir)
    settings = record["settings"]
    shared = settings["storage"] == "shared"
    lock = RunLock(sweep_dir).acquire()
    try:
        _clear_leftovers(sweep_dir)
        try:
            ray = connect(address)
            try:
                check_fits(ray, record, address)
            except ConfigError:
                ray.shutdown()
                raise
        except ConfigError:
            if fresh:  # nothing ran: leave no sweep behind to be mistaken for one
                for name in (SWEEP_FILE, LOCK):
                    (sweep_dir / name).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    sweep_dir.rmdir()
            raise
        try:
            return _drive(ray, sweep_dir, record, address, shared, progress, echo)
        finally:
            ray.shutdown()
    finally:
        lock.release()


def _drive(
    ray: Any, sweep_dir: Path, record: dict, address: str | None, shared: bool, progress: bool, echo: Callable[[str], None]
) -> dict:
    settings = record["settings"]
    by_name = {r["name"]: r for r in record["runs"]}
    whole_node = node_cpus(ray)
    # on the head node: the one node whose loss ends the cluster anyway (a driver may attach to any node)
    head = {"resources": {"node:__internal_head__": 0.001}} if "node:__internal_head__" in ray.cluster_resources() else {}
    board = ray.remote(Board).options(num_cpus=0, max_restarts=0, **head).remote()
    task = ray.remote(max_calls=1)(execute_run)  # one run per worker process
    session = {
        "started": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "address": address or "local",
        "driver": socket.gethostname(),
        "cluster_cpus": int(ray.cluster_resources().get("CPU", 0)),
    }
    record.setdefault("sessions", []).append(session)
    refs: dict[Any, str] = {}
    for entry in record["runs"]:
        if entry["status"] == COMPLETED:
            continue
        need = resources(entry["config"], settings["exclusive"], whole_node)
        spec = {
            "name": entry["name"],
            "sweep": sweep_dir.name,
            "config": entry["config"],
            "data_dir": settings.get("data_dir"),
            "tensorboard": settings.get("tensorboard", True),
            "exclusive": settings["exclusive"],
            "resources": need,
            "shared_dir": str(sweep_dir.resolve()) if shared else None,
        }
        # pinned: packed runs to their one core (or --threads), exclusive ones to the whole node
        spec["config"] = {**entry["config"], "threads": entry["config"].get("threads") or need["num_cpus"]}
        entry["config"] = spec["config"]  # the record says what the run was given
        entry.update(status=PENDING, error=None)
        ref = task.options(
            num_cpus=need["num_cpus"],
            num_gpus=need["num_gpus"],
            max_retries=settings.get("max_retries", 3),
            retry_exceptions=False,
            name=f"vaebench:{entry['name']}",
        ).remote(spec, board)
        refs[ref] = entry["name"]
    write_record(sweep_dir, record)
    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
    echo(f"{len(refs)} runs into {sweep_dir}/ on {where} ({session['cluster_cpus']} CPUs)")

    def settle(ref: Any, cancelled: bool = False) -> None:
        """Record a task's outcome; move the bar when the run reached an end (completed, failed, diverged, lost)."""
        name = refs.pop(ref)
        entry = by_name[name]
        try:
            result = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            entry["status"] = INTERRUPTED if entry["status"] == RUNNING else PENDING
            return
        except ray.exceptions.RayTaskError as exc:  # raised outside the run's own guard: vaebench broken on that node
            entry.update(status="failed", error=_lost_reason(exc.cause if exc.cause else exc))
            bar.update(1)
            return
        except ray.exceptions.RayError as exc:  # the worker or node died more often than max_retries allows
            entry.update(status=INTERRUPTED if cancelled else LOST, error=_lost_reason(exc))
            if not cancelled:
                bar.update(1)
            return
        files = result.pop("files")
        if result["status"] == COMPLETED and files is not None:
            bring_home(sweep_dir, name, files)
        if result["status"] == COMPLETED or shared:
            entry["folder"] = f"{RUNS}/{name}" if (sweep_dir / RUNS / name).is_dir() else None
        entry.update(status=result["status"], error=result["error"], node=result["node"], seconds=round(result["seconds"], 3))
        bar.write(outcome_line(name, result))
        if result["status"] != INTERRUPTED:
            bar.update(1)

    done_before = sum(1 for r in record["runs"] if r["status"] == COMPLETED)
    bar = progress_bar(len(record["runs"]), "sweep", unit="run", initial=done_before, enabled=progress)
    stop = StopFlag()
    starts = Starts(ray, board)
    try:
        with stop.installed():
            while refs and stop.signum is None:
                ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL)
                changed = starts.poll(by_name) | bool(ready)
                for ref in ready:
                    settle(ref)
                if changed:
                    n = counts(record)
                    bar.set_postfix(running=n[RUNNING], failed=n["failed"] + n["diverged"] + n[LOST])
                    write_record(sweep_dir, record)
            if stop.signum is not None:
                echo(f"stopping: cancelling {len(refs)} runs; running ones checkpoint first (Ctrl-C again is not needed)")
                for ref in list(refs):
                    ray.cancel(ref)
                deadline = time.monotonic() + CANCEL_GRACE
                while refs and time.monotonic() < deadline:
                    ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL)
                    for ref in ready:
                        settle(ref, cancelled=True)
                for ref in list(refs):  # did not stop in time: killed, its run marked interrupted
                    ray.cancel(ref, force=True)
                    by_name[refs.pop(ref)]["status"] = INTERRUPTED
                for entry in record["runs"]:
                    if entry["status"] == RUNNING:
                        entry["status"] = INTERRUPTED
    finally:
        bar.close()
        starts.flush(by_name)
        for entry in record["runs"]:  # once the driver ends, no run of its goes on (Ray ends a job's tasks with it)
            if entry["status"] == RUNNING:
                entry["status"] = INTERRUPTED
        session["ended"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        session["stopped_by_signal"] = stop.signum
        write_record(sweep_dir, record)
    if stop.signum is not None:
        raise SweepInterruptedError(stop.signum, sweep_dir, counts(record)[COMPLETED], len(record["runs"]))
    return record


class SweepInterruptedError(VaebenchError):
    """Ctrl-C or SIGTERM stopped a sweep after ``sweep.json`` was brought up to date. Exit code 128 + signal."""

    def __init__(self, signum: int, sweep_dir: Path, completed: int, total: int) -> None:
        super().__init__(
            f"sweep interrupted by {signal.Signals(signum).name}: {completed} of {total} runs completed and kept; "
            f"run the rest with: vaebench sweep --resume {sweep_dir}"
        )
        self.exit_code = 128 + signum
