"""Execution profiles and the precision policy: declared, checked, recorded."""

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.errors import ConfigError
from vaebench.measure.bench import _tune
from vaebench.measure.options import split_options
from vaebench.measure.worker import CellRequest
from vaebench.plugin import registry
from vaebench.plugin.profiles import Variant, check_precision, variants

TORCH_LIKE = {"compile": ("0", "1"), "layout": ("nhwc", "nchw")}


def test_default_profile_runs_exactly_what_was_asked():
    assert variants(TORCH_LIKE, "default") == [Variant(False, {})]
    assert variants(TORCH_LIKE, "default", True, {"layout": "nchw"}) == [Variant(True, {"layout": "nchw"})]


def test_best_profile_tries_every_combination_of_the_tunables():
    got = variants(TORCH_LIKE, "best")
    assert len(got) == 4 and {(v.compile, v.options["layout"]) for v in got} == {
        (False, "nhwc"),
        (False, "nchw"),
        (True, "nhwc"),
        (True, "nchw"),
    }


def test_best_profile_keeps_what_the_user_fixed():
    assert variants(TORCH_LIKE, "best", options={"layout": "nchw"}) == [
        Variant(False, {"layout": "nchw"}),
        Variant(True, {"layout": "nchw"}),
    ]
    assert variants(TORCH_LIKE, "best", compile=True) == [Variant(True, {"layout": "nhwc"}), Variant(True, {"layout": "nchw"})]
    assert variants({}, "best") == [Variant(False, {})]
    with pytest.raises(ValueError, match="unknown profile"):
        variants(TORCH_LIKE, "fastest")


def test_variant_labels_and_json():
    assert Variant().label() == "plugin defaults"
    assert Variant(True, {"layout": "nchw"}).label() == "compile, layout=nchw"
    assert Variant(True, {"xla": "1"}).to_dict() == {"compile": True, "options": {"xla": "1"}}


def test_tf32_is_refused_where_it_would_change_nothing():
    check_precision("fp32", {"device": "cpu"})
    check_precision("tf32", {"device": "cuda"})
    with pytest.raises(ConfigError, match="needs a GPU"):
        check_precision("tf32", {"device": "cpu"})


def test_a_run_records_profile_and_precision_and_refuses_tf32_on_a_cpu(tmp_path, tiny_dir):
    args = ["run", "--backend", "numpy", "--model", "mlp", "--epochs", "1", "-q", "--data-dir", str(tiny_dir)]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "ok")])
    assert result.exit_code == 0, result.output
    execution = json.loads((tmp_path / "ok" / "metrics.json").read_text())["execution"]
    assert execution["profile"] == "default" and execution["precision"] == "fp32"
    assert execution["variant"] == {"compile": False, "options": {}} and execution["execution"]
    refused = CliRunner().invoke(cli, [*args, "--precision", "tf32", "--out", str(tmp_path / "no")])
    assert refused.exit_code != 0 and "needs a GPU" in str(refused.exception)
    assert not (Path(tmp_path) / "no" / "metrics.json").exists()


def test_bench_options_go_to_the_backends_that_have_them():
    assert split_options({"numpy:x": "1"}, ["numpy"]) == {"numpy": {"x": "1"}}
    with pytest.raises(ConfigError, match="not benchmarked"):
        split_options({"torch:layout": "nchw"}, ["numpy"])
    with pytest.raises(ConfigError, match="no benchmarked backend has option"):
        split_options({"layout": "nchw"}, ["numpy"])
    with pytest.raises(ConfigError, match="give KEY=VALUE or BACKEND:KEY=VALUE"):
        split_options({"numpy:": "1"}, ["numpy"])


def test_one_reading_of_the_option_syntax_and_a_backends_own_setting_wins_in_any_order():
    from vaebench.plugin.profiles import for_backend, routed

    given = {"torch:layout": "nhwc", "layout": "nchw", "jax:transpose": "subpixel", "xla": "1"}
    assert routed(given) == [
        ("torch", "layout", "nhwc"),
        (None, "layout", "nchw"),
        ("jax", "transpose", "subpixel"),
        (None, "xla", "1"),
    ]
    assert for_backend(given, "torch") == {"layout": "nhwc", "xla": "1"}
    assert for_backend(given, "jax") == {"layout": "nchw", "xla": "1", "transpose": "subpixel"}
    assert for_backend(given, "keras") == {"layout": "nchw", "xla": "1"}
    if "torch" in registry.installed():  # split_options asks the plugin which keys it has
        assert split_options({"torch:layout": "nhwc", "layout": "nchw"}, ["torch"]) == {"torch": {"layout": "nhwc"}}
        assert split_options({"layout": "nchw", "torch:layout": "nhwc"}, ["torch"]) == {"torch": {"layout": "nhwc"}}
    for bad in (":layout", "torch:", ":"):
        with pytest.raises(ConfigError, match=f"-o {bad}=1: give KEY=VALUE or BACKEND:KEY=VALUE"):
            routed({bad: "1"})


class _TuningStub:
    def __init__(self, n: int) -> None:
        self.n, self.closed, self.calls = n, False, []

    def ready(self) -> dict:
        return {"ready": True, "variants": self.n}

    def call(self, command: dict) -> dict:
        self.calls.append(command)
        return {"choice": {"compile": True, "options": {"layout": "nchw"}}, "candidates": [{"label": "x", "median": 1.0}]}

    def close(self) -> None:
        self.closed = True


def test_tuning_fixes_the_request_to_the_measured_choice_in_a_worker_that_then_exits():
    stub = _TuningStub(4)
    request = CellRequest("torch", "mlp", 128, 2, profile="best")
    fixed, record = _tune(request, lambda _r: stub)
    assert stub.closed and stub.calls == [{"op": "tune", "windows": 3}]
    assert fixed.profile == "default" and fixed.compile and fixed.options == {"layout": "nchw"}
    assert record["candidates"] and fixed.model == "mlp" and fixed.batch_size == 128
    single = _TuningStub(1)
    same, none = _tune(request, lambda _r: single)
    assert none is None and single.calls == [] and single.closed and not same.compile


def test_cell_requests_travel_as_json():
    request = CellRequest("keras", "conv", 512, 2, "cpu", "fp32", "best", False, {"xla": "1"})
    assert CellRequest.from_json(request.to_json()) == request
    with pytest.raises(TypeError):
        CellRequest.from_json('{"backend": "x", "nonsense": 1}')


def _candidate(label, value, low, high):
    return {"label": label, "vs_default": {"value": value, "low": low, "high": high}}


def test_best_keeps_the_default_unless_a_variant_is_faster_beyond_its_interval():
    from vaebench.plugin.profiles import choose

    default = _candidate("plugin defaults", 1.0, 1.0, 1.0)
    noisy = _candidate("layout=nchw", 1.3, 0.7, 1.6)  # the fastest median, but its interval holds 1
    edge = _candidate("compile", 1.2, 1.0, 1.4)  # low exactly 1: not shown to be faster
    clear = _candidate("transpose=subpixel", 1.1, 1.02, 1.2)
    assert choose([default, noisy, edge], "plugin defaults") is default
    assert choose([noisy, default, clear, edge], "plugin defaults") is clear
    faster = _candidate("compile, layout=nchw", 1.5, 1.01, 2.0)
    assert choose([default, clear, faster, noisy], "plugin defaults") is faster  # of the clear ones, the fastest
    assert choose([default, clear, _candidate("x", 1.1, 1.05, 1.3)], "plugin defaults") is clear  # a tie: the first


def test_levers_for_a_kind_of_layer_the_model_lacks_are_not_tuned():
    from vaebench.model.catalogue import get_model
    from vaebench.plugin.profiles import levers_for

    tunables = {"compile": ("0", "1"), "layout": ("nhwc", "nchw"), "transpose": ("native", "subpixel"), "xla": ("0", "1")}
    assert levers_for(tunables, get_model("mlp").spec) == {"compile": ("0", "1"), "xla": ("0", "1")}
    blog = levers_for(tunables, get_model("blog").spec)  # convolutions, none transposed
    assert blog == {"compile": ("0", "1"), "layout": ("nhwc", "nchw"), "xla": ("0", "1")}
    assert levers_for(tunables, get_model("conv").spec) == tunables
    assert levers_for(tunables, None) == tunables


def test_parity_checks_only_the_variants_best_may_pick_for_the_model():
    pytest.importorskip("vaebench_jax")
    pytest.importorskip("jax")
    from vaebench.measure.parity import plan
    from vaebench.model.catalogue import get_model

    entries = {e for e, _, _ in plan(["jax"], "best", spec=get_model("mlp").spec)}
    assert entries == {"jax"}  # transpose is jax's only lever, and mlp has no transposed convolution
    assert len(plan(["jax"], "best", spec=get_model("conv").spec)) == 2


def test_an_unknown_profile_is_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown profile 'fast'; choose one of default, best$"):
        variants({}, "fast")
    assert variants({}, "best", True, {"a": "b"}) == [Variant(True, {"a": "b"})]  # nothing to tune: what was asked
