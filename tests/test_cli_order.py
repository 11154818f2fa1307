"""What ``vaebench run`` says, in which order, when it refuses: a refused run prints only why it was refused.

Each test runs the real command in a process of its own. The machine's load is
what decides whether the busy-machine warning is printed, and on a shared
machine it comes and goes, so the process is told the machine is busy (the
load reading is replaced before the CLI starts); everything else is real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BUSY = (
    "import sys\n"
    "from vaebench.plugin import host\n"
    "host.busy_cores = lambda *a, **k: 8.0  # other processes keep 8 cores busy\n"
    "host.usable_cores = lambda: 4\n"
    "sys.argv = ['vaebench', *sys.argv[1:]]\n"
    "from vaebench.cli import main\n"
    "main()\n"
)


def _run_on_a_busy_machine(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BUSY, "run", *args], capture_output=True, text=True, timeout=300)


def test_a_run_refused_for_an_occupied_out_prints_no_busy_warning(tiny_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "metrics.json").write_text('{"status": "completed"}\n')
    proc = _run_on_a_busy_machine("-b", "numpy", "-m", "mlp", "--data-dir", str(tiny_dir), "--out", str(out))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: {out} already holds a run; choose another --out or pass --overwrite"
    assert "busy" not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert (out / "metrics.json").read_text() == '{"status": "completed"}\n'  # nothing lost
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json"]  # not even a lock file left


def test_the_busy_machine_warning_is_printed_when_the_run_gets_past_the_out_check(tiny_dir: Path, tmp_path: Path) -> None:
    """The control: the same busy machine, a free --out, and a refusal that comes after threads are chosen."""
    out = tmp_path / "free"
    proc = _run_on_a_busy_machine("-b", "numpy", "--data-dir", str(tiny_dir), "--out", str(out), "--precision", "tf32")
    assert proc.returncode == 2, proc.stderr
    assert "warning: this machine is busy (8.0 of" in proc.stdout and "--precision tf32 needs a GPU" in proc.stderr
    assert not out.exists()
