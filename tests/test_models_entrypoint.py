"""A user's own model without editing vaebench (#28): ``--model package.module:factory`` and the ``vaebench.models`` group.

Everything here is real: the model is a Python module this file writes to a
temporary folder, put on ``PYTHONPATH`` for the command's process and every
process it starts (parity's and bench's workers resolve the name again), and
the entry point is a real ``.dist-info`` folder with an ``entry_points.txt``
on that path, which is all an installed distribution is to
:mod:`importlib.metadata`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaebench.errors import ConfigError
from vaebench.model import catalogue
from vaebench.model.catalogue import ModelDefaults, get_model, model_names
from vaebench.model.layers import ModelSpec
from vaebench.plugin import registry
from vaebench.plugin.contract import Model
from vaebench.run import runner

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "models.md"

#: the model module a user writes: one good factory, then each way a factory can be wrong
MODULE = """
from vaebench.model.catalogue import ModelDefaults
from vaebench.model.layers import Dense, Flatten, ModelSpec, Reshape


def make():
    return ModelSpec("tiny", (Flatten(), Dense(16, "tanh")), (Dense(16, "relu"), Dense(784), Reshape((28, 28, 1))), latent_dim=3)


def make_with_defaults():
    return ModelDefaults(make(), batch_size=32, epochs=1)


def returns_a_number():
    return 3


def raises():
    raise RuntimeError("no such weights")


def wrong_output():
    return ModelSpec("bad", (Flatten(),), (Dense(10),), latent_dim=2)


def foreign_layer():
    return ModelSpec("bad", (Flatten(), object()), (Dense(784), Reshape((28, 28, 1))), latent_dim=2)


NOT_CALLABLE = 5
"""


def docs_example() -> str:
    """The first ```python block under docs/models.md's "Bring your own model": the example this file runs."""
    text = DOCS.read_text()
    section = text[text.index("## Bring your own model") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding the user's model module and a distribution registering it, on this process's path too."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "tinymodel.py").write_text(MODULE)
    (folder / "my_vae.py").write_text(docs_example())
    dist = folder / "tinydist-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinydist\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[vaebench.models]\ntiny-ep = tinymodel:make_with_defaults\nbroken-ep = not_a_module_here:make\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    catalogue._user_model.cache_clear()
    yield folder
    catalogue._user_model.cache_clear()


def cli(args: list[str], user_dir: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m vaebench.cli`` in a fresh process, the user's folder on its path, run from elsewhere."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(user_dir), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "vaebench.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=user_dir.parent,
    )


def interrupt_at(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """SIGINT this process at the first step of ``epoch``: the run checkpoints and stops, as a user's Ctrl-C would."""
    original, train_staged = runner.train_batches, Model.train_staged
    at = {"epoch": 0}

    def batches(*args, **kwargs):
        at["epoch"] = args[4]
        return original(*args, **kwargs)

    def staged_step(self, staged):
        if at["epoch"] == epoch:
            os.kill(os.getpid(), signal.SIGINT)
        return train_staged(self, staged)

    monkeypatch.setattr(runner, "train_batches", batches)
    monkeypatch.setattr(Model, "train_staged", staged_step)


def test_a_factory_and_an_entry_point_resolve_like_catalogue_models(user_dir):
    tiny = get_model("tinymodel:make")
    assert isinstance(tiny.spec, ModelSpec) and tiny.spec.latent_dim == 3
    assert (tiny.batch_size, tiny.epochs) == (catalogue.USER_BATCH_SIZE, catalogue.USER_EPOCHS)
    assert get_model("tinymodel:make") is tiny  # imported and called once per process
    entry = get_model("tiny-ep")
    assert isinstance(entry, ModelDefaults) and (entry.batch_size, entry.epochs) == (32, 1)
    assert entry.spec.param_shapes() == tiny.spec.param_shapes()
    assert "tiny-ep" in model_names() and model_names()[: len(catalogue.MODELS)] == sorted(catalogue.MODELS)
    assert get_model("mlp") is catalogue.MODELS["mlp"]
    from vaebench.model.config import TrainConfig

    cfg = TrainConfig(backend="numpy", model="tinymodel:make").resolved()
    assert cfg.model == "tinymodel:make" and cfg.spec.param_shapes() == tiny.spec.param_shapes()


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("no_such_module_anywhere:make", "cannot import no_such_module_anywhere: ModuleNotFoundError"),
        ("tinymodel:missing", "module tinymodel has no 'missing'"),
        ("tinymodel:", "write a model of your own as package.module:factory"),
        ("tinymodel:NOT_CALLABLE", "int object is not callable"),
        ("tinymodel:returns_a_number", "the factory returned int, not a vaebench.model.layers.ModelSpec"),
        ("tinymodel:raises", "the factory raised RuntimeError: no such weights"),
        ("tinymodel:wrong_output", "decoder of 'bad' ends in (10,), not (28, 28, 1)"),
        ("tinymodel:foreign_layer", "object is not a layer of vaebench.model.layers"),
        ("no-such-model", "that is not a model of the catalogue nor of the vaebench.models entry points"),
        ("broken-ep", "(entry point not_a_module_here:make of tinydist) failed to import: ModuleNotFoundError"),
    ],
)
def test_a_bad_model_is_one_error_naming_it(user_dir, name, needle):
    with pytest.raises(ConfigError) as caught:
        get_model(name)
    assert needle in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_model_on_the_command_line_is_one_line_exit_2_and_nothing_written(user_dir, tmp_path):
    for name, needle in [("tinymodel:raises", "no such weights"), ("tinymodel:returns_a_number", "returned int")]:
        out = tmp_path / "never"
        proc = cli(["run", "--backend", "numpy", "--model", name, "--out", str(out)], user_dir, timeout=120)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
        assert proc.returncode == 2 and len(errors) == 1 and needle in errors[0], proc.stderr
        assert "Traceback" not in proc.stderr and not out.exists()


def test_a_model_registered_twice_is_refused(user_dir):
    other = user_dir / "otherdist-0.2.dist-info"
    other.mkdir()
    (other / "METADATA").write_text("Metadata-Version: 2.1\nName: otherdist\nVersion: 0.2\n")
    (other / "entry_points.txt").write_text("[vaebench.models]\ntiny-ep = tinymodel:make\n")
    with pytest.raises(ConfigError, match="registered twice"):
        get_model("tiny-ep")


def test_the_docs_example_runs_and_trains_from_an_entry_point_and_resumes(user_dir, tmp_path, tiny_dir, monkeypatch):
    """docs/models.md's example as written, then the entry point trained, resumed from its checkpoint by name."""
    example = get_model("my_vae:make")
    assert example.spec.num_params() > 0
    out = tmp_path / "run"
    args = ["run", "--backend", "numpy", "--model", "tiny-ep", "--epochs", "1", "-q", "--data-dir", str(tiny_dir)]
    proc = cli([*args, "--out", str(out)], user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["config"]["model"] == "tiny-ep"
    assert metrics["config"]["batch_size"] == 32 and metrics["config"]["latent_dim"] == 3  # the factory's defaults
    from vaebench.cli import cli as click_cli

    cut = tmp_path / "cut"
    interrupt_at(monkeypatch, epoch=2)
    CliRunner().invoke(click_cli, [*args[:6], "2", *args[7:], "--out", str(cut)])
    monkeypatch.undo()
    assert json.loads((cut / "metrics.json").read_text())["status"] == "interrupted"
    proc = cli(["run", "--resume", str(cut), "-q", "--data-dir", str(tiny_dir)], user_dir)  # a fresh process: by name
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = json.loads((cut / "metrics.json").read_text())
    assert resumed["status"] == "completed" and [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["history"][0]["test_neg_elbo"] == metrics["history"][0]["test_neg_elbo"]
    proc = cli(
        [*args[:4], "my_vae:make", *args[5:], "--limit-train", "64", "--batch-size", "32", "--out", str(tmp_path / "docs")],
        user_dir,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.skipif("torch" not in registry.installed(), reason="needs the torch plugin beside the numpy reference")
def test_parity_and_bench_workers_resolve_the_factory(user_dir, tmp_path):
    """parity and bench start a process per backend; each finds the model by its name string alone."""
    proc = cli(
        ["parity", "--model", "tinymodel:make", "--backends", "numpy,torch", "--steps", "2", "--batch-size", "8"], user_dir
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert next(line for line in proc.stdout.splitlines() if " vs " in line).endswith("yes")
    bench = ["bench", "--backends", "numpy", "--models", "tinymodel:make", "--batch-sizes", "8", "--repeats", "2"]
    bench += ["--threads", "1", "--allow-busy", "--peak-seconds", "0.2", "--no-inference", "--out", str(tmp_path / "b")]
    proc = cli(bench, user_dir)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    rows = json.loads((tmp_path / "b" / "bench.json").read_text())["results"]
    assert [r["model"] for r in rows] == ["tinymodel:make"]


def test_the_conformance_kit_checks_a_user_model(user_dir):
    """VAEBENCH_KIT_MODELS adds the user's models to the kit: its checks run them on the numpy backend here."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(user_dir), os.environ.get("PYTHONPATH", "")]),
        "VAEBENCH_KIT_MODELS": "tinymodel:make",
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(ROOT / "tests" / "test_numpy_backend.py"),
            "-k",
            "tinymodel",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    passed = int(re.search(r"(\d+) passed", proc.stdout).group(1))
    assert passed >= 4, proc.stdout[-2000:]  # forward, recon_nll, the train step, the round trips: each on tinymodel:make
