"""The engine start-up the core owns for every plugin: native start-up notes held back, other output kept."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from vaebench.errors import BackendError
from vaebench.plugin import engines


def test_native_chatter_held_drops_only_the_start_up_notes(capfd: pytest.CaptureFixture[str]) -> None:
    notes = "I0000 port.cc:153] oneDNN custom operations are on.\nI0000 cpu_feature_guard.cc:210] AVX2\n"
    with engines.native_chatter_held():
        # native code writes to file descriptor 2, not to sys.stderr: a child process sharing it does the same
        subprocess.run([sys.executable, "-c", f"import os; os.write(2, {(notes + 'a real warning').encode()!r})"], check=True)
    err = capfd.readouterr().err
    assert "a real warning" in err
    assert "port.cc" not in err and "cpu_feature_guard" not in err


def test_start_names_the_missing_engine_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # an import of it now raises ImportError
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    with pytest.raises(BackendError, match=r"^--backend keras needs tensorflow, which is not installed; pip it$"):
        engines.start("tensorflow", "--backend keras", None, "pip it")
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
