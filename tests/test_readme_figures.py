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


def test_the_vq_seed_spread_is_each_multi_seed_backends_range_and_says_where_the_others_lie():
    import importlib.util

    spec = importlib.util.spec_from_file_location("readme_figures", SCRIPT)
    figures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(figures)
    assert figures.vq_seed_spread([("keras", 0, 0.0383), ("torch", 0, 0.0408)]) == []  # one seed each: no spread
    got = figures.vq_seed_spread(
        [("keras", 0, 0.04), ("keras", 1, 0.05), ("keras", 2, 0.03), ("torch", 0, 0.0408), ("jax", 0, 0.0299)]
    )
    # mean 0.04, sd 0.01 (n - 1); torch's 0.0408 is inside [0.03, 0.05], jax's 0.0299 below it
    assert got == [
        "keras over 3 seeds: 0.0300 to 0.0500 (mean 0.0400, sd 0.0100); jax seed 0 (0.0299) outside it, "
        "torch seed 0 (0.0408) inside it"
    ]
    two = figures.vq_seed_spread([("a", 0, 0.04), ("a", 1, 0.05), ("b", 0, 0.05), ("b", 1, 0.06)])
    assert two[0].endswith("b seed 0 (0.0500) inside it, b seed 1 (0.0600) outside it")  # the range's end is inside
    assert two[1].startswith("b over 2 seeds: 0.0500 to 0.0600") and "a seed 0 (0.0400) outside it" in two[1]
