"""What a new user meets in the first hour (issue #27): help that says what happens, pictures without fractional
epochs, a sweep that stops at missing data before any run, and a busy machine seen during the measurement.

Each test failed on the code before its fix.
"""

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.run.outputs import plots


def test_the_command_list_cuts_no_description_short():
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    assert result.exit_code == 0
    commands = result.output.split("Commands:")[1].splitlines()
    assert len([line for line in commands if line.strip()]) >= 8
    assert not [line for line in commands if line.rstrip().endswith("...")]


def test_run_threads_help_says_the_default_comes_from_the_load():
    result = CliRunner().invoke(cli, ["run", "--help"], terminal_width=200)
    help_text = " ".join(result.output.split())
    threads = help_text.split("--threads")[1].split("--")[0]
    assert "load" in threads and "own choice" not in threads


def test_curves_put_ticks_at_whole_epochs_only(tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig))
    history = [
        {"epoch": e, "epoch_seconds": 2.0 + e, "train_neg_elbo": 200.0 - 10 * e, "test_neg_elbo": 205.0 - 9 * e}
        for e in (1, 2, 3)
    ]
    plots.save_curves(history, Path(tmp_path) / "curves.png", "torch conv")
    (fig,) = figures
    fig.canvas.draw()
    left = fig.axes[0]
    lo, hi = left.get_xlim()
    ticks = [t for t in left.get_xticks() if lo <= t <= hi]
    assert ticks and np.allclose(ticks, np.round(ticks)), ticks
    plots.pyplot().close(fig)
