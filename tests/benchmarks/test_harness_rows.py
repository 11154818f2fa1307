"""The report's harness section states a cost in time: step-time overhead 1/ratio - 1, with its interval."""

from vaebench.report.tables import harness_rows


def _row(ratio):
    results = {"plugin": {"median": 600.0, "q1": 590.0, "q3": 610.0}, "yardstick": {"median": 1000.0, "q1": 990.0, "q3": 1010.0}}
    return {
        "backend": "torch",
        "model": "conv",
        "batch_size": 128,
        "results": results,
        "fastest_yardstick": "yardstick",
        "ratio": ratio,
    }


def test_a_ratio_of_0_6_is_67_percent_more_time_per_step_not_40():
    text = "\n".join(harness_rows([_row(0.6)]).lines())
    assert "+66.7%" in text and "+40.0%" not in text
    assert "step-time overhead (1/ratio-1)" in text


def test_the_interval_of_the_ratio_maps_to_an_interval_of_the_overhead():
    text = "\n".join(harness_rows([_row({"value": 0.8, "low": 0.5, "high": 1.0})]).lines())
    # 1/0.8 - 1 = +25%; the high ratio gives the low overhead: [1/1.0 - 1, 1/0.5 - 1] = [+0%, +100%]
    assert "+25.0% [+0.0%, +100.0%]" in text
    assert "0.800 [0.500, 1.000]" in text


# -- harness_ratio.py's timing: bench's method, driven by a fake clock (nothing here is timed) --

import inspect  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import harness_ratio as hr  # noqa: E402

from vaebench.measure import bench  # noqa: E402
from vaebench.measure.documents import read_bench_doc, write_harness  # noqa: E402


class FakeClock:
    """Time moves only when a fake step says so."""

    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def _contender(clock, log, name, seconds_per_step, compile_seconds=4.0, slow_first_windows=0, slow=8.0):
    """A step that advances ``clock``: ``compile_seconds`` on its first call, then ``seconds_per_step``
    (times ``slow`` during its first ``slow_first_windows`` windows); ``sync`` logs ``name`` once per window."""
    calls = {"steps": 0, "syncs": 0}

    def step():
        calls["steps"] += 1
        if calls["steps"] == 1:
            clock.t += compile_seconds
        else:
            # syncs so far: compile, probe, then one per window
            clock.t += seconds_per_step * (slow if 2 <= calls["syncs"] < 2 + slow_first_windows else 1)

    def sync(_):
        calls["syncs"] += 1
        log.append(name)

    return step, sync


# dyadic seconds keep the fake clock's arithmetic exact: 1.0 s / (1/64 s) is 64 steps, not 63.99...
PLUGIN_STEP, YARDSTICK_STEP = 1 / 64, 1 / 128


def _two(clock, log, **kwargs):
    return {
        "plugin": _contender(clock, log, "plugin", PLUGIN_STEP, **kwargs),
        "yardstick": _contender(clock, log, "yardstick", YARDSTICK_STEP, **kwargs),
    }


def test_the_harness_sizes_windows_as_bench_does():
    assert inspect.signature(hr.time_rounds).parameters["window_seconds"].default == bench.WINDOW_SECONDS
    clock, log = FakeClock(), []
    out = hr.time_rounds(_two(clock, log), batch_size=32, rounds=3, window_seconds=1.0, clock=clock)
    # one probe step each sizes the windows: 1 s / (1/64 s) = 64 steps, 1 s / (1/128 s) = 128
    assert out["plugin"]["steps_per_window"] == 64 and out["yardstick"]["steps_per_window"] == 128
    assert out["plugin"]["probe_seconds"] == PLUGIN_STEP
    assert out["plugin"]["compile_seconds"] == 4.0  # the first step, timed alone and kept out of every window
    assert out["plugin"]["median"] == 32 * 64 and out["yardstick"]["median"] == 32 * 128
    assert all(w == [32 * 64] for w in out["plugin"]["rounds"])


def test_rounds_rotate_the_order_after_a_warm_up_round():
    clock, log = FakeClock(), []
    names = ["plugin", "yard-a", "yard-b"]
    contenders = {n: _contender(clock, log, n, PLUGIN_STEP) for n in names}
    out = hr.time_rounds(contenders, batch_size=8, rounds=4, window_seconds=0.25, clock=clock)
    compile_, probe, warmup, rounds = log[:3], log[3:6], log[6:9], log[9:]
    assert compile_ == probe == warmup == names
    assert [rounds[i : i + 3] for i in range(0, 12, 3)] == [
        ["plugin", "yard-a", "yard-b"],
        ["yard-a", "yard-b", "plugin"],
        ["yard-b", "plugin", "yard-a"],
        ["plugin", "yard-a", "yard-b"],
    ]
    assert all(out[n]["windows"] == 4 and len(out[n]["rounds"]) == 4 for n in names)


def test_the_warm_up_round_is_not_counted():
    clock, log = FakeClock(), []
    out = hr.time_rounds(_two(clock, log, slow_first_windows=1), batch_size=16, rounds=5, window_seconds=1.0, clock=clock)
    assert out["plugin"]["min"] == out["plugin"]["max"] == 16 * 64  # the slow first window never shows


def test_the_ratio_is_paired_by_round_with_an_interval_and_stated_as_step_time_overhead():
    clock, log = FakeClock(), []
    out = hr.time_rounds(_two(clock, log), batch_size=16, rounds=6, window_seconds=1.0, clock=clock)
    row = hr.harness_ratio(out)
    assert row["fastest_yardstick"] == "yardstick"
    assert row["ratio"] == row["ratio_low"] == row["ratio_high"] == 0.5
    assert row["step_time_overhead"] == {"value": 1.0, "low": 1.0, "high": 1.0}  # twice the time per step: +100%


def _rounds(values):
    return {"rounds": [[v] for v in values]}


def test_drift_shared_by_a_round_cancels_in_the_paired_ratio():
    # the machine slows down round by round; within a round the plugin is always at 0.8 of the yardstick
    drift = [1.0, 0.5, 0.25, 0.9, 0.3]
    results = {"plugin": _rounds([800 * d for d in drift]), "yardstick": _rounds([1000 * d for d in drift])}
    row = hr.harness_ratio(results)
    assert row["ratio"] == row["ratio_low"] == row["ratio_high"] == pytest.approx(0.8)
    assert row["step_time_overhead"]["value"] == pytest.approx(0.25)


def test_the_ratio_is_the_median_of_per_round_ratios_not_a_ratio_of_pooled_medians():
    # per round: 400/500, 900/1000, 1000/2000 = 0.8, 0.9, 0.5 -> 0.8; pooled medians would say 900/1000 = 0.9
    results = {"plugin": _rounds([400, 900, 1000]), "yardstick": _rounds([500, 1000, 2000])}
    assert hr.harness_ratio(results)["ratio"] == pytest.approx(0.8)


def test_the_interval_maps_to_the_overhead_high_ratio_to_low_overhead():
    results = {"plugin": _rounds([500, 600, 700, 800, 900]), "yardstick": _rounds([1000] * 5)}
    row = hr.harness_ratio(results)
    assert row["ratio"] == pytest.approx(0.7) and row["ratio_low"] < 0.7 < row["ratio_high"]
    o = row["step_time_overhead"]
    assert o["low"] == pytest.approx(1 / row["ratio_high"] - 1) and o["high"] == pytest.approx(1 / row["ratio_low"] - 1)
    assert math.isclose(o["value"], 1 / 0.7 - 1)


def test_of_two_yardsticks_the_plugin_is_held_to_the_faster():
    results = {"plugin": _rounds([600] * 3), "tf-graph": _rounds([700] * 3), "tf-xla": _rounds([1000] * 3)}
    row = hr.harness_ratio(results)
    assert row["fastest_yardstick"] == "tf-xla" and row["ratio"] == pytest.approx(0.6)


def test_a_harness_document_from_the_new_method_reads_back_and_shows_its_interval(tmp_path):
    clock, log = FakeClock(), []
    results = hr.time_rounds(_two(clock, log), batch_size=128, rounds=3, window_seconds=1.0, clock=clock)
    results["plugin"]["rounds"][1] = [results["plugin"]["rounds"][1][0] * 0.9]  # some spread for an interval
    row = {"backend": "torch", "model": "conv", "batch_size": 128, "options": {}, "results": results}
    row.update(hr.harness_ratio(results))
    doc = read_bench_doc(write_harness([row], tmp_path / "harness.json"))
    text = "\n".join(harness_rows(doc["results"]).lines())
    low, high = row["ratio_low"], row["ratio_high"]
    assert low < high
    assert f"{row['ratio']:.3f} [{low:.3f}, {high:.3f}]" in text
    assert f"[{100 * (1 / high - 1):+.1f}%, {100 * (1 / low - 1):+.1f}%]" in text


@pytest.mark.parametrize("backend", ["torch", "jax", "keras"])
def test_compare_holds_the_plugin_to_every_yardstick_from_the_same_weights(backend, monkeypatch, tmp_path):
    """The wiring of one row (no timing: each contender runs one real step, then a fake clock times fake steps)."""
    import importlib

    from vaebench.model.catalogue import get_model
    from vaebench.model.weights import init_params
    from vaebench.plugin import registry

    if backend not in registry.installed():
        pytest.skip(f"backend {backend} not installed")
    if backend == "keras":
        registry.load("keras")[0](device="cpu")  # sets KERAS_BACKEND=tensorflow before the yardstick imports Keras
    given = []
    for module in {module for _, module, _ in hr.YARDSTICKS[backend]}:
        mod = importlib.import_module(module)
        real = mod.make_step

        def recording(*args, real=real, **kwargs):
            given.append(kwargs["params"])
            return real(*args, **kwargs)

        monkeypatch.setattr(mod, "make_step", recording)
    seen, time_rounds = {}, hr.time_rounds

    def one_step_each(contenders, batch_size, rounds):
        for name, (step, sync) in contenders.items():
            sync(step())
            seen[name] = step
        clock, log = FakeClock(), []
        fake = {n: _contender(clock, log, n, PLUGIN_STEP if n == "plugin" else YARDSTICK_STEP) for n in contenders}
        return time_rounds(fake, batch_size, rounds, window_seconds=0.25, clock=clock)

    monkeypatch.setattr(hr, "time_rounds", one_step_each)
    row = hr.compare(backend, "mlp", 4, rounds=2)
    offered = [label for label, _, kwargs in hr.YARDSTICKS[backend] if hr.applies("mlp", kwargs)]
    assert set(seen) == {"plugin", *offered} and ("flax-subpixel" in seen) is False  # mlp has no transposed conv
    canonical = init_params(get_model("mlp").spec, 0)  # what the plugin loads
    assert len(given) == len(offered)
    assert all(set(p) == set(canonical) and all(np.array_equal(p[k], canonical[k]) for k in p) for p in given)
    assert row["ratio"] == pytest.approx(0.5) and row["fastest_yardstick"] in seen
    doc = read_bench_doc(write_harness([row], tmp_path / "harness.json"))
    assert doc["results"][0]["ratio_low"] == row["ratio_low"]


def test_variants_from_a_bench_give_each_cell_the_variant_its_row_ran(tmp_path):
    pytest.importorskip("flax")  # applies() reads jax_yardstick's models
    from vaebench.measure.documents import write_bench
    from vaebench.measure.stats import summarize

    def row(backend, model, batch, compile, options):
        return {
            "backend": backend,
            "model": model,
            "batch_size": batch,
            "train_images_per_second": {**summarize([9.0, 11.0]), "compile_seconds": 0.1, "steps_per_window": 1},
            "ratio": {"value": 1.0, "low": 1.0, "high": 1.0, "text": "1"},
            "settings": {
                "profile": "default",
                "precision": "fp32",
                "schedule": "interleaved",
                "threads": 2,
                "variant": {"compile": compile, "options": options},
            },
            "peak_rss_mb": 1.0,
            "environment": {},
        }

    rows = [row("jax", "conv", 128, False, {"transpose": "subpixel"}), row("torch", "mlp", 512, True, {"layout": "nhwc"})]
    json_path, _ = write_bench(rows, tmp_path)
    assert hr.bench_variants(json_path) == {
        ("jax", "conv", 128): (False, {"transpose": "subpixel"}),
        ("torch", "mlp", 512): (True, {"layout": "nhwc"}),
    }
    assert hr.applies("conv", {"transpose": "subpixel"}) and not hr.applies("blog", {"transpose": "subpixel"})
    assert hr.applies("blog", {"compile": True})
