"""Plugin discovery and the CLI's error contract (no framework needed)."""

import subprocess
import sys
from importlib import metadata

import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.errors import BackendError
from vaebench.plugin import registry


class _Dist:
    name, version, requires = "vaebench-fake", "9.9", ["vaebench", "numpy>=1"]


def _fake_eps(monkeypatch, *pairs):
    eps = []
    for name, value in pairs:
        ep = metadata.EntryPoint(name, value, registry.GROUP)
        ep = ep._for(_Dist()) if hasattr(ep, "_for") else ep
        eps.append(ep)
    monkeypatch.setattr(registry, "_entry_points", lambda: eps)


def test_listing_reads_metadata_without_importing(monkeypatch):
    _fake_eps(monkeypatch, ("fake", "module_that_does_not_exist:Backend"))
    info = registry.installed()["fake"]
    assert (info.distribution, info.version) == ("vaebench-fake", "9.9")
    assert "numpy" in info.framework_versions()


def test_missing_backend_names_the_install_command(monkeypatch):
    _fake_eps(monkeypatch)
    with pytest.raises(BackendError, match=r"'jax' is not installed.*pip install -e backends/jax"):
        registry.load("jax")
    with pytest.raises(BackendError, match="known backends"):
        registry.load("mxnet")


def test_broken_import_and_non_backend_are_clear_errors(monkeypatch):
    _fake_eps(monkeypatch, ("broken", "module_that_does_not_exist:Backend"), ("bogus", "vaebench.model.layers:ModelSpec"))
    with pytest.raises(BackendError, match="failed to import"):
        registry.load("broken")
    with pytest.raises(BackendError, match="not a vaebench.plugin.contract.Backend"):
        registry.load("bogus")


def test_duplicate_registration_is_refused(monkeypatch):
    _fake_eps(monkeypatch, ("twin", "a:B"), ("twin", "c:D"))
    with pytest.raises(BackendError, match="registered twice"):
        registry.installed()


def test_backends_command_imports_no_framework():
    code = (
        "import sys; from vaebench.cli import cli; cli.main(['backends'], standalone_mode=False);"
        "bad = [m for m in ('torch', 'jax', 'tensorflow', 'keras', 'flax') if m in sys.modules];"
        "assert not bad, bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "keras" in out.stdout


def _main(args):
    """Run the real entry point in a subprocess: exit code, stdout, stderr."""
    out = subprocess.run([sys.executable, "-m", "vaebench.cli", *args], capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout, out.stderr


def test_unknown_backend_is_one_line_exit_2(tmp_path):
    code, _, err = _main(["run", "--backend", "nope", "--out", str(tmp_path / "r")])
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error: backend 'nope' is not installed")
    assert "Traceback" not in err


def test_missing_data_is_one_line_exit_2(tmp_path):
    pytest.importorskip("vaebench_torch")
    code, _, err = _main(["run", "--data-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")])
    assert code == 2 and err.strip().count("\n") == 0 and "has no mnist files" in err
    assert not (tmp_path / "r").exists()


def test_bad_setting_is_a_usage_error():
    result = CliRunner().invoke(cli, ["run", "--model", "resnet"])
    assert result.exit_code == 2 and "resnet" in result.output
