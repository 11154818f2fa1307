"""README.md's quick start, read and run literally (issue #27), so the README cannot drift from the code.

The fenced shell block under the ``## Quick start`` heading is parsed as a
user would read it. The install lines are checked against the project (every
extra they name exists, every plugin folder they install exists, the pinned
torch is the one installed); every ``vaebench`` line is run as written, in a
fresh process in an empty folder, with the test data set as the user's data
(``VAEBENCH_DATA_DIR``) and ``--limit-train 128`` (one step per epoch) as the
only flag added, and what it writes is checked: a completed run per backend,
and with several backends the report over them.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from vaebench.plugin import registry

ROOT = Path(__file__).resolve().parent.parent
HEADING = "## Quick start"
LIMIT = ["--limit-train", "128"]  # the tiny data set's 256 training images; one step per epoch at the default batch 128


def quick_start_commands(readme: str) -> list[str]:
    """The shell commands of the first fenced block under :data:`HEADING`: comments dropped, continuations joined."""
    section = readme.split(f"\n{HEADING}\n", 1)
    assert len(section) == 2, f"README.md has no {HEADING!r} heading"
    body = section[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh|shell|console)\n(.*?)```", body, re.S)
    assert block, f"README.md's {HEADING!r} section has no fenced shell block"
    text = re.sub(r"\\\n\s*", " ", block[1])
    lines = [" ".join(line.split(" #", 1)[0].split()) for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def _vaebench_lines(commands: list[str]) -> list[list[str]]:
    return [shlex.split(c)[1:] for c in commands if c.startswith("vaebench ")]


def test_the_quick_start_block_parses_into_an_install_and_a_vaebench_command():
    commands = quick_start_commands((ROOT / "README.md").read_text())
    assert any(c.startswith("pip install") for c in commands), commands
    assert _vaebench_lines(commands), commands
    block = "```bash\n# a comment\npip install -e .  # core\nvaebench run \\\n  --backend a,b\n```"
    fake = f"intro\n\n{HEADING}\n\nInstall and run:\n\n{block}\n\n## Next\n\n```bash\nvaebench other\n```\n"
    assert quick_start_commands(fake) == ["pip install -e .", "vaebench run --backend a,b"]


def test_the_quick_start_install_names_only_what_the_project_has():
    commands = quick_start_commands((ROOT / "README.md").read_text())
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for command in (c for c in commands if c.startswith("pip install")):
        words = shlex.split(command)
        for i, word in enumerate(words):
            if word == "-e":
                target = words[i + 1]
                path, _, named = target.partition("[")
                assert (ROOT / path).is_dir() and (ROOT / path / "pyproject.toml").is_file(), target
                if named:
                    assert set(named.rstrip("]").split(",")) <= extras, (target, sorted(extras))
            elif word.startswith("torch=="):
                torch = pytest.importorskip("torch")
                assert torch.__version__.split("+")[0] == word.split("==")[1], (word, torch.__version__)


@pytest.mark.slow  # several backends probed and trained, each in fresh processes: minutes on a 2-core CPU
def test_the_quick_start_vaebench_commands_run_as_written(tiny_dir, tmp_path):
    commands = _vaebench_lines(quick_start_commands((ROOT / "README.md").read_text()))
    for args in commands:
        backend = args[args.index("--backend") + 1] if "--backend" in args else "torch"
        wanted = [b for b in registry.installed() if b != "numpy"] if backend == "all" else backend.split(",")
        missing = [b for b in wanted if b not in registry.installed()]
        if missing:
            pytest.skip(f"the quick start uses {', '.join(missing)}, not installed here")
        cwd = tmp_path / f"user{commands.index(args)}"
        cwd.mkdir()
        env = {**os.environ, "VAEBENCH_DATA_DIR": str(tiny_dir), "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "vaebench.cli", *args, *LIMIT], cwd=cwd, env=env, capture_output=True, text=True, timeout=1500
        )
        assert proc.returncode == 0, (args, proc.stdout[-3000:], proc.stderr[-3000:])
        runs = sorted(cwd.glob("results/runs/**/metrics.json"))
        assert runs, (args, proc.stdout[-2000:])
        completed = [json.loads(p.read_text()) for p in runs]
        assert all(m["status"] == "completed" for m in completed)
        if args[0] == "run":
            trained = sorted(m["config"]["backend"] for m in completed)
            assert trained == sorted(wanted), trained
            if len(trained) > 1:
                assert list(cwd.glob("results/runs/*/report.html")), "several backends: one report over them"
                assert "Estimated cost" in proc.stdout  # the cost is said before anything trains
