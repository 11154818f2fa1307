"""README.md's measured figures against the committed results they come from (issue #27), so none drifts or is typed.

``scripts/readme_figures.py --check`` renders every ``<!-- figures:NAME -->`` block from
``results/readme/install.json``, ``results/first-run/`` and ``results/bench.json`` and fails when the README
differs; these tests run it as a user would, in a fresh process.
"""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "readme_figures.py"


def _script(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True, text=True, timeout=120)


def test_the_committed_readme_says_what_the_committed_results_say():
    proc = _script("--check")
    assert proc.returncode == 0, proc.stderr


def test_an_edited_figure_fails_the_check_and_the_script_restores_it(tmp_path):
    readme = tmp_path / "README.md"
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- figures:install -->\n", 1)[1].split("<!-- /figures:install -->", 1)[0]
    assert "the install took" in block
    readme.write_text(text.replace(block, block.replace("the install took", "the install took about 1 minute, not")))
    proc = _script("--check", "--readme", readme)
    assert proc.returncode == 1 and "differs" in proc.stderr, proc.stderr
    assert _script("--readme", readme).returncode == 0 and readme.read_text() == text


def test_a_missing_input_is_one_line_exit_2_and_the_readme_is_untouched(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    before = readme.read_text()
    proc = _script("--readme", readme, "--first-run", tmp_path / "nowhere")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "nowhere" in proc.stderr and readme.read_text() == before
    readme.write_text(before.replace("<!-- figures:results -->", "<!-- removed -->", 1))
    proc = _script("--check", "--readme", readme)  # a block deleted (and a figure typed instead) is refused too
    assert proc.returncode == 2 and "results" in proc.stderr, proc.stderr
