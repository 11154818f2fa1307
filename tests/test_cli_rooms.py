"""The decisions ``vaebench`` used to make in cli.py, tested where they live now (issue #22).

The commands' own behaviour, through real processes, is in test_run_many.py,
test_run_options.py, test_thin_cli.py and the hardening files; these check
the pieces the command line now only calls, on real objects.
"""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from vaebench.cli import cli
from vaebench.cli_options import csv, key_values
from vaebench.errors import ConfigError, VaebenchError
from vaebench.measure.options import own_options
from vaebench.sweep import many
from vaebench.sweep.local import Outcome


def test_a_run_keeps_options_named_for_its_backend_and_refuses_another_backends():
    assert own_options({"torch:layout": "nchw", "fused": "0"}, "torch") == {"layout": "nchw", "fused": "0"}
    for given in ({"layout": "nhwc", "torch:layout": "nchw"}, {"torch:layout": "nchw", "layout": "nhwc"}):
        assert own_options(given, "torch") == {"layout": "nchw"}  # the run's own setting wins, in either order
    with pytest.raises(ConfigError, match=r"-o jax:xla=1 names backend 'jax', but this run trains 'torch'"):
        own_options({"jax:xla": "1"}, "torch")


def test_several_backends_refuse_an_option_routed_to_one_of_them():
    many.refuse_routed_options(["layout=nchw", "a=b:c"])  # a colon in the value routes nothing
    with pytest.raises(ConfigError, match=r"^-o torch:layout=nchw: BACKEND:KEY=VALUE applies with one backend"):
        many.refuse_routed_options(["xla=1", "torch:layout=nchw"])


def test_the_verdict_over_several_backends(tmp_path: Path):
    said: list[str] = []
    done = [Outcome("torch", tmp_path / "torch"), Outcome("jax", tmp_path / "jax")]
    assert many.verdict(done, ["torch", "jax"], said.append) == 0 and said == []
    stopped = [Outcome("torch", tmp_path / "torch"), Outcome("jax", tmp_path / "jax", "interrupted", 143)]
    assert many.verdict(stopped, ["torch", "jax", "keras"], said.append) == 143  # the signal's code, not 1
    assert said == [f"interrupted: resume {tmp_path / 'jax'} with vaebench run --resume {tmp_path / 'jax'}", "not started: keras"]
    failed = [Outcome("torch", tmp_path / "torch", "exit code 2 (its error is above)", 2), Outcome("jax", tmp_path / "jax")]
    with pytest.raises(VaebenchError, match=r"^torch did not complete; see each one's error above$"):
        many.verdict(failed, ["torch", "jax"], said.append)


def test_the_seeds_hint_needs_a_completed_run_and_more_than_one_backend(tmp_path: Path):
    ok, bad = Outcome("torch", tmp_path), Outcome("jax", tmp_path, "exit code 1 (its error is above)", 1)
    hint = many.seeds_hint([ok, bad], ["torch", "jax"], "mlp")
    assert hint is not None and "vaebench sweep --backends torch,jax --models mlp --seeds 0-4" in hint
    assert many.seeds_hint([bad], ["jax", "torch"], "mlp") is None
    assert many.seeds_hint([ok], ["torch"], "mlp") is None


def test_shared_parsers_refuse_what_a_flag_cannot_mean():
    assert key_values(["a=1", "b=x=y", "a=2"]) == {"a": "2", "b": "x=y"}  # a later KEY wins; the value may hold '='
    for bad in ("a", "=1"):  # no '=', or no key
        with pytest.raises(click.BadParameter, match=f"{bad!r} is not KEY=VALUE"):
            key_values([bad])
    param = click.Option(["--batch-sizes"])
    assert csv(int, 1)(None, param, "128, 512") == [128, 512]
    for bad, says in (("", "is empty"), ("1,x", "not a comma-separated list of ints"), ("0,4", "at least 1")):
        with pytest.raises(click.BadParameter, match=says):
            csv(int, 1)(None, param, bad)


@pytest.mark.parametrize(
    ("command", "default"), [("run", "auto"), ("eval", "auto"), ("bench", "auto"), ("parity", "cpu"), ("explain", "cpu")]
)
def test_the_shared_device_option_keeps_each_commands_default(command: str, default: str):
    (device,) = [p for p in cli.commands[command].params if p.name == "device"]
    assert device.default == default and list(device.type.choices) == ["auto", "cpu", "cuda"]
