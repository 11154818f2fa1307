"""The measurement arithmetic, driven by a fake clock and stub models: these tests fail when the harness lies.

Every figure vaebench prints goes through the functions tested here. A fake
device queues work on ``step()`` and only advances the clock when synchronised,
like a GPU or an asynchronous XLA dispatch: a window closed without the
backend's synchronisation then measures nothing, and the tests see it. With
``tests/test_pinned.py``, these are the tests ``nox -s mutation`` runs against
mutants of ``timing.py``, ``stats.py``, ``interleave.py`` and ``paritycheck.py``
(the full list of modules and tests: ``[tool.mutmut]`` in pyproject.toml).
"""

from __future__ import annotations

import types
import warnings

import numpy as np
import pytest

from vaebench.measure import interleave, stats, timing
from vaebench.measure.paritycheck import (
    ELBO_RTOL,
    GRID_ATOL,
    PARAM_ATOL,
    PARAM_OUTLIERS,
    PARAM_OUTLIERS_IWAE,
    compare,
    param_outliers,
    table,
    tolerances,
    verdict,
)


class FakeDevice:
    """A clock that only moves when queued work is synchronised, up to the step whose result is waited on.

    Like ``block_until_ready(x)`` or ``x.item()``: waiting on step n's output
    finishes steps 1..n and nothing else; waiting on anything else is a bug.
    """

    def __init__(self, step_seconds: float) -> None:
        self.now = 100.0
        self.queued = 0.0
        self.step_seconds = step_seconds
        self.steps = 0
        self.syncs = 0

    def clock(self) -> float:
        return self.now

    def step(self) -> int:
        self.steps += 1
        self.queued += self.step_seconds
        return self.steps

    def sync(self, token: object) -> None:
        if token != self.steps:
            raise AssertionError(f"synchronised on {token!r}, not on the last step's result")
        self.synchronize()

    def synchronize(self) -> None:
        """Device-wide: wait for everything queued (``torch.cuda.synchronize``)."""
        self.syncs += 1
        self.now += self.queued
        self.queued = 0.0


# -- timing -------------------------------------------------------------------
def test_a_window_is_closed_by_the_backends_synchronisation():
    dev = FakeDevice(0.25)
    assert timing.window(dev.step, dev.sync, 4, dev.clock) == 1.0
    assert dev.syncs == 1 and dev.steps == 4 and dev.queued == 0.0


def test_a_window_without_sync_would_measure_nothing():
    dev = FakeDevice(0.25)
    assert timing.window(dev.step, lambda _t: None, 4, dev.clock) == 0.0  # what a lying harness would see


def test_a_window_may_be_one_step_and_never_zero():
    dev = FakeDevice(0.25)
    assert timing.window(dev.step, dev.sync, 1, dev.clock) == 0.25
    with pytest.raises(ValueError, match="at least one step"):
        timing.window(dev.step, dev.sync, 0, dev.clock)


def test_timed_call_times_one_synchronised_step():
    dev = FakeDevice(0.5)
    assert timing.timed_call(dev.step, dev.sync, dev.clock) == 0.5 and dev.steps == 1


def test_measure_reports_per_step_seconds_and_images_per_second_from_synchronised_windows():
    fast, slow = FakeDevice(0.01), FakeDevice(0.04)
    shared = types.SimpleNamespace(now=0.0)

    def clock() -> float:
        return shared.now

    def make(dev):
        def sync(token):
            before = dev.now
            dev.sync(token)
            shared.now += dev.now - before

        return dev.step, sync

    results = timing.measure({"fast": make(fast), "slow": make(slow)}, batch_size=64, windows=3, steps=5, warmup=2, clock=clock)
    assert results["fast"].compile_seconds == pytest.approx(0.01) and results["slow"].compile_seconds == pytest.approx(0.04)
    assert results["fast"].step_seconds == pytest.approx([0.01] * 3)
    assert results["slow"].images_per_second == pytest.approx([1600.0] * 3)
    assert fast.steps == 1 + 1 + 3 * 5  # compile, one warm-up, three windows of five
    summary = results["fast"].summary()
    assert (
        summary["median"] == pytest.approx(6400.0)
        and summary["windows"] == 3
        and summary["compile_seconds"] == pytest.approx(0.01)
    )


def test_measure_defaults_and_a_single_warm_up_call():
    dev = FakeDevice(0.1)
    timing.measure({"x": (dev.step, dev.sync)}, batch_size=1, clock=dev.clock)
    assert dev.steps == 1 + 1 + 5 * 5  # defaults: compile, one warm-up (warmup=2 counts the compile), 5 windows of 5
    dev = FakeDevice(0.1)
    timing.measure({"x": (dev.step, dev.sync)}, batch_size=1, windows=2, steps=3, warmup=1, clock=dev.clock)
    assert dev.steps == 1 + 2 * 3  # warmup=1: the compile call is the only warm-up


def test_measure_interleaves_contenders_window_by_window():
    calls = []
    timing.measure(
        {"a": (lambda: calls.append("a"), lambda _: None), "b": (lambda: calls.append("b"), lambda _: None)},
        batch_size=10,
        windows=3,
        steps=2,
        warmup=3,
        clock=iter(range(1000)).__next__,
    )
    assert calls[:6] == ["a", "a", "a", "b", "b", "b"]  # compile + two warm-ups each
    assert calls[6:] == ["a", "a", "b", "b"] * 3


@pytest.mark.parametrize(
    ("per_step", "target", "steps"),
    [(0.1, 0.5, 5), (0.3, 0.5, 2), (0.6, 0.5, 1), (0.5, 0.5, 1), (0.01, 1.0, 100), (0.0, 0.5, 500000)],
)
def test_windows_are_sized_to_the_target_duration(per_step, target, steps):
    assert timing.steps_for(per_step, target) == steps


def test_window_target_defaults_to_half_a_second():
    assert timing.steps_for(0.1) == 5 and timing.WINDOW_SECONDS == 0.5


# -- stats --------------------------------------------------------------------
def test_summarize_gives_exact_median_quartiles_and_extremes():
    s = stats.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s["median"], s["q1"], s["q3"], s["min"], s["max"], s["windows"]) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    assert s["samples"] == [1.0, 2.0, 3.0, 4.0, 5.0]
    even = stats.summarize([1.0, 2.0, 3.0, 10.0])
    assert even["median"] == 2.5 and even["q1"] == 1.75 and even["q3"] == 4.75
    one = stats.summarize([7.0])
    assert one["median"] == one["q1"] == one["q3"] == one["min"] == one["max"] == 7.0 and one["windows"] == 1
    two = stats.summarize([3.0, 1.0])
    assert (two["q1"], two["median"], two["q3"]) == (1.5, 2.0, 2.5)
    with pytest.raises(ValueError, match="^summarize needs at least one value$"):
        stats.summarize([])


def test_images_per_second_is_images_over_seconds():
    assert stats.images_per_second(128, 10, 2.0) == 640.0
    assert stats.images_per_second(1, 1, 0.5) == 2.0
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="must take time"):
            stats.images_per_second(128, 1, bad)


def test_ratio_of_a_contender_to_itself_is_exactly_one():
    rounds = [[100.0], [90.0], [120.0], [80.0]]
    assert stats.ratio_interval(rounds, rounds) == (1.0, 1.0, 1.0)


def test_a_constant_ratio_has_a_zero_width_interval_whatever_the_drift():
    a = [[100.0], [50.0], [200.0], [80.0], [120.0]]  # the machine drifts 4x between rounds
    b = [[2 * v for v in r] for r in a]
    point, low, high = stats.ratio_interval(a, b)
    assert point == pytest.approx(0.5) and low == pytest.approx(0.5) and high == pytest.approx(0.5)


def test_ratio_interval_is_the_median_of_per_round_ratios_with_a_bracketing_deterministic_interval():
    gen = np.random.default_rng(3)
    a = [[float(v)] for v in 100 + gen.normal(0, 5, 12)]
    b = [[float(v)] for v in 200 + gen.normal(0, 5, 12)]
    point, low, high = stats.ratio_interval(a, b)
    assert point == pytest.approx(np.median([x[0] / y[0] for x, y in zip(a, b, strict=True)]))
    assert low < point < high and high - low < 0.1
    assert stats.ratio_interval(a, b) == (point, low, high)  # fixed seed: same windows, same interval
    wide = stats.ratio_interval(a, b, confidence=0.99)
    narrow = stats.ratio_interval(a, b, confidence=0.5)
    assert wide[1] <= low <= narrow[1] and narrow[2] <= high <= wide[2] and narrow[1] < narrow[2]


def test_ratio_interval_is_the_percentile_bootstrap_over_rounds_with_seed_zero():
    noise = np.random.default_rng(7).normal(0, 5, (2, 15, 4))  # 15 rounds of 4 windows
    a = (100 + noise[0]).tolist()
    b = (200 + noise[1]).tolist()
    gen = np.random.default_rng(0)
    picks = gen.integers(0, 15, size=(stats.BOOTSTRAP_RESAMPLES, 15))
    paired = [np.median(x) / np.median(y) for x, y in zip(a, b, strict=True)]
    reps = [np.median([paired[j] for j in p]) for p in picks]
    want = np.quantile(reps, [0.025, 0.975])
    _, low, high = stats.ratio_interval(a, b)
    assert (low, high) == pytest.approx(tuple(want))
    assert stats.ratio_interval(a, b) != stats.ratio_interval(a, b, seed=1)


def test_two_rounds_already_give_an_interval_and_every_round_is_drawn():
    point, low, high = stats.ratio_interval([[1.0], [2.0]], [[1.0], [1.0]])
    assert point == 1.5 and low == 1.0 and high == 2.0


def test_ratio_interval_pairs_rounds_so_drift_between_rounds_cancels():
    point, low, high = stats.ratio_interval([[1.0, 3.0], [5.0, 7.0], [10.0, 30.0]], [[4.0, 4.0], [8.0, 16.0], [40.0, 40.0]])
    assert point == 0.5  # per round: 2/4, 6/12, 20/40
    assert low == high == 0.5
    drifting = stats.ratio_interval([[10.0], [100.0], [12.0]], [[20.0], [200.0], [6.0]])
    assert drifting[0] == 0.5  # pooled medians would say 12/20 = 0.6


def test_ratio_interval_needs_paired_rounds():
    with pytest.raises(ValueError, match="^ratio_interval needs the same, non-zero number of rounds for both contenders$"):
        stats.ratio_interval([[1.0]], [[1.0], [2.0]])
    with pytest.raises(ValueError, match="same, non-zero number of rounds"):
        stats.ratio_interval([], [])
    assert stats.ratio_interval([[3.0]], [[6.0]]) == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    ("low", "high", "decimals"),
    [(0.86, 0.88, 2), (0.7, 1.0, 1), (0.9, 0.91, 3), (0.0, 4.0, 0), (1.0, 1.0, 4), (0.5, 0.5000001, 4)],
)
def test_decimals_follow_the_intervals_half_width(low, high, decimals):
    assert stats.supported_decimals(low, high) == decimals


def test_format_ratio_prints_what_the_interval_supports():
    assert stats.format_ratio(0.8734, 0.8634, 0.8834) == "0.87 (0.86-0.88)"
    assert stats.format_ratio(0.8734, 0.75, 0.99) == "0.9 (0.8-1.0)"
    assert stats.format_ratio(1.0, 1.0, 1.0) == "1"
    assert stats.format_ratio(0.5, 0.5, 0.5) == "0.5"


def test_time_to_quality_keeps_every_seed_and_counts_those_that_reached():
    assert stats.ttq_summary([5.0, 1.0, 3.0, None, 4.0]) == {"median": 3.5, "min": 1.0, "max": 5.0, "seeds": 5, "reached": 4}
    assert stats.ttq_summary([4.0, 2.0, 9.0]) == {"median": 4.0, "min": 2.0, "max": 9.0, "seeds": 3, "reached": 3}
    assert stats.ttq_summary([None, None]) == {"median": None, "min": None, "max": None, "seeds": 2, "reached": 0}


# -- the coordinator ------------------------------------------------------------
class StubChannel:
    """A worker whose steps take ``step_seconds`` each; records every command in a shared log."""

    def __init__(self, name: str, step_seconds: float, log: list, drift: list[float] | None = None) -> None:
        self.name, self.step_seconds, self.log, self.drift = name, step_seconds, log, drift
        self.closed = False

    def ready(self) -> dict:
        self.log.append((self.name, "ready"))
        return {"ready": True, "variants": 1}

    def call(self, command: dict) -> dict:
        op = command["op"]
        self.log.append((self.name, op))
        if op == "compile":
            return {"compile_seconds": 3.0 if self.name == "a" else 4.0, "probe_seconds": self.step_seconds}
        if op == "window":
            slow = self.drift[len([e for e in self.log if e[1] == "window"]) - 1] if self.drift else 1.0
            return {"seconds": command["steps"] * self.step_seconds * slow, "steps": command["steps"]}
        if op == "inference":
            return {"eval_pass_seconds": {"median": float(command["repeats"])}, "grid_decode_seconds": {"median": 0.01}}
        return {"peak_rss_mb": 10.0, "peak_device_memory_mb": None, "environment": {}, "plugin": {}}

    def pause(self) -> None:
        self.log.append((self.name, "pause"))

    def resume(self) -> None:
        self.log.append((self.name, "resume"))

    def close(self) -> None:
        self.closed = True


def _windows(log: list) -> list[str]:
    return [name for name, op in log if op == "window"]


def test_rounds_rotate_the_order_and_only_one_worker_computes_at_a_time():
    log: list = []
    channels = {n: StubChannel(n, 0.1, log) for n in "abc"}
    interleave.run_cell(channels, batch_size=10, rounds=4, settle=0)
    assert _windows(log) == list("abc" + "abcbcacababc")  # an untimed warm-up round, then rotation
    ops = [op for _, op in log]
    assert ops[:3] == ["ready"] * 3 and ops[3:6] == ["compile"] * 3  # compiles one at a time, before any window
    assert ops[-3:] == ["finish"] * 3
    running = {n: True for n in "abc"}
    for name, op in log:  # replay: when a window is timed, every other worker is frozen
        if op in ("pause", "resume"):
            running[name] = op == "resume"
        elif op == "window":
            assert running[name] and not any(running[o] for o in "abc" if o != name), log
    assert all(running.values())  # thawed again for inference and finish


def test_sequential_schedule_gives_each_backend_its_windows_back_to_back():
    log: list = []
    interleave.run_cell({n: StubChannel(n, 0.1, log) for n in "ab"}, batch_size=10, rounds=3, schedule="sequential", settle=0)
    assert _windows(log) == list("ab" + "aaabbb")
    log.clear()
    interleave.run_cell({n: StubChannel(n, 0.1, log) for n in "ab"}, batch_size=10, rounds=2, settle=0, warmup_rounds=0)
    assert _windows(log) == list("abba")


def test_order_rotates_by_one_per_round():
    assert [interleave.order(list("abc"), r) for r in range(4)] == [
        list("abc"),
        list("bca"),
        list("cab"),
        list("abc"),
    ]
    with pytest.raises(ValueError, match="unknown schedule"):
        interleave.run_cell({"a": StubChannel("a", 0.1, [])}, batch_size=10, rounds=1, schedule="random", settle=0)


def test_the_fastest_beats_every_other_backend_in_its_own_pairing():
    """The issue's three-backend cell: pairing against an anchor printed keras as 1 while jax showed 1.7."""
    by_round = {
        "torch": [[6852.88], [1644.18], [2688.24]],
        "jax": [[30927.8], [21104.7], [16912.5]],
        "keras": [[13448.9], [12688.8], [19677.5]],
    }
    ratios = interleave.cell_ratios(by_round)
    assert {r["to"] for r in ratios.values()} == {"jax"} and ratios["jax"]["text"] == "1"
    assert all(r["value"] <= 1 and r["clear"] for r in ratios.values())
    for name in ("torch", "keras"):  # the fastest's own paired ratio against each other backend is at least 1
        assert stats.ratio_interval(by_round["jax"], by_round[name])[0] >= 1


def test_a_cycle_of_pairings_has_no_clear_fastest_and_no_ratio_above_one():
    by_round = {"a": [[1.0], [2.0], [3.0]], "b": [[2.0], [3.0], [1.0]], "c": [[3.0], [1.0], [2.0]]}
    ratios = interleave.cell_ratios(by_round)
    assert not any(r["clear"] for r in ratios.values())
    ref = ratios["a"]["to"]
    assert ratios[ref]["text"] == "1 (no clear fastest)"
    for r in ratios.values():
        assert r["value"] <= 1 or (r["tie"] and r["text"].startswith("tie"))


def test_cell_figures_and_ratios_follow_from_the_windows():
    log: list = []
    channels = {"a": StubChannel("a", 0.1, log), "b": StubChannel("b", 0.4, log)}
    seen: list = []
    cell = interleave.run_cell(
        channels, batch_size=10, rounds=3, inference_repeats=2, settle=0.001, window_seconds=1.0, progress=seen.append
    )
    assert seen == list("abbaab")
    a, b = cell["a"]["train_images_per_second"], cell["b"]["train_images_per_second"]
    assert a["steps_per_window"] == 10 and b["steps_per_window"] == 3
    default = interleave.run_cell({"a": StubChannel("a", 0.1, [])}, batch_size=10, rounds=2, settle=0)
    assert default["a"]["train_images_per_second"]["steps_per_window"] == 5  # half-second windows by default
    assert a["median"] == pytest.approx(100.0) and b["median"] == pytest.approx(25.0)
    assert a["windows"] == 3 and a["rounds"] == [[pytest.approx(100.0)]] * 3
    assert a["compile_seconds"] == 3.0 and b["compile_seconds"] == 4.0
    assert cell["a"]["ratio"]["to"] == "a" and cell["a"]["ratio"]["text"] == "1"
    assert cell["b"]["ratio"]["value"] == pytest.approx(0.25) and cell["b"]["ratio"]["text"] == "0.25"
    assert cell["a"]["eval_pass_seconds"] == {"median": 2.0} and cell["b"]["peak_rss_mb"] == 10.0
    assert ("a", "inference") in log


def test_drift_within_a_round_hits_every_backend_alike_so_the_ratio_stays_exact():
    log: list = []
    # the machine slows 3x in rounds 2-3; each round's windows run back to back
    drift = [1, 1, 1, 1, 3, 3, 3, 3, 1, 1]  # the first two: the untimed warm-up round
    channels = {"a": StubChannel("a", 0.1, log, drift), "b": StubChannel("b", 0.2, log, drift)}
    cell = interleave.run_cell(channels, batch_size=10, rounds=4, settle=0)
    assert cell["b"]["ratio"]["value"] == pytest.approx(0.5)
    assert cell["b"]["ratio"]["low"] == pytest.approx(0.5) and cell["b"]["ratio"]["high"] == pytest.approx(0.5)
    assert cell["a"]["train_images_per_second"]["min"] < cell["a"]["train_images_per_second"]["max"]


def test_the_fastest_is_chosen_by_paired_rounds_not_by_pooled_medians():
    # b beats a in three rounds of five; a's pooled median (200) is still above b's (150)
    by_round = {"a": [[100.0], [100.0], [200.0], [200.0], [200.0]], "b": [[105.0], [105.0], [210.0], [150.0], [150.0]]}
    ratios = interleave.cell_ratios(by_round)
    assert ratios["a"]["to"] == ratios["b"]["to"] == "b" and ratios["b"]["text"] == "1"
    assert ratios["a"]["value"] == pytest.approx(100 / 105)


def test_no_inference_unless_asked():
    log: list = []
    cell = interleave.run_cell({"a": StubChannel("a", 0.1, log)}, batch_size=10, rounds=2, settle=0)
    assert ("a", "inference") not in log and cell["a"]["eval_pass_seconds"] is None
    assert "grid_decode_seconds" in cell["a"] and cell["a"]["grid_decode_seconds"] is None


# -- the runner's throughput arithmetic ---------------------------------------------
def test_runner_images_per_second_is_timed_images_over_timed_seconds(monkeypatch, tiny_dir):
    from vaebench.io.datasets import load_dataset
    from vaebench.model.config import TrainConfig
    from vaebench.model.weights import init_params
    from vaebench.plugin.numpy_backend import NumpyBackend
    from vaebench.run import runner
    from vaebench.run.signals import StopFlag

    cfg = TrainConfig(backend="numpy", model="mlp", batch_size=16, epochs=1).resolved()
    model = NumpyBackend(device="cpu").build(cfg.spec, cfg.adam)
    model.load_weights(init_params(cfg.spec, 0))
    dev = FakeDevice(0.01)
    real_step = model.train_staged

    def step(staged):
        dev.step()
        return real_step(staged)

    model.train_staged = step
    model.synchronize = dev.synchronize
    real_fetch = model.fetch
    model.fetch = lambda values: (dev.synchronize(), real_fetch(values))[1]
    monkeypatch.setattr(runner, "time", types.SimpleNamespace(perf_counter=dev.clock))
    images = load_dataset("mnist", tiny_dir).train_images
    timing_state: dict = {"first_step_seconds": None}
    entry = runner.train_epoch(model, images, cfg, 1, timing_state, False, StopFlag())
    steps = len(images) // 16
    assert timing_state["first_step_seconds"] == pytest.approx(0.01)
    assert entry["epoch_seconds"] == pytest.approx(steps * 0.01)
    assert entry["train_images_per_second"] == pytest.approx(16 / 0.01)


# -- the parity verdict ---------------------------------------------------------------
def _row(**overrides: float) -> dict:
    return {"elbo_rel": 0.0, "loss_rel": 0.0, "grid_abs": 0.0, "param_outliers": 0.0, "param_abs": 0.0, **overrides}


@pytest.mark.parametrize(
    ("key", "limit"),
    [("elbo_rel", ELBO_RTOL), ("loss_rel", ELBO_RTOL), ("grid_abs", GRID_ATOL), ("param_outliers", PARAM_OUTLIERS)],
)
def test_each_tolerance_holds_at_its_limit_and_fails_past_it(key, limit):
    assert verdict(_row(**{key: limit}), steps=3)
    assert not verdict(_row(**{key: limit * 1.01}), steps=3)


def test_the_iwae_bound_allows_more_outlying_parameters_and_nothing_else_changes():
    assert PARAM_OUTLIERS < PARAM_OUTLIERS_IWAE == 0.03
    assert param_outliers() == param_outliers("vae") == param_outliers("beta-vae") == PARAM_OUTLIERS
    assert param_outliers("iwae") == PARAM_OUTLIERS_IWAE
    with pytest.raises(KeyError):
        param_outliers("vq-vae")  # an objective it was never measured on: no tolerance guessed
    between = _row(param_outliers=0.019)  # conv's worst pair under IWAE (K=5) on this machine: 1.90%
    assert verdict(between, steps=5, objective="iwae") and not verdict(between, steps=5)
    assert not verdict(between, steps=5, objective="beta-vae")
    assert verdict(_row(param_outliers=PARAM_OUTLIERS_IWAE), steps=5, objective="iwae")
    assert not verdict(_row(param_outliers=PARAM_OUTLIERS_IWAE * 1.01), steps=5, objective="iwae")
    for key, limit in [("elbo_rel", ELBO_RTOL), ("loss_rel", ELBO_RTOL), ("grid_abs", GRID_ATOL)]:
        assert not verdict(_row(**{key: limit * 1.01}), steps=5, objective="iwae")
    assert not verdict(_row(param_abs=5.1e-3), steps=5, objective="iwae")
    moved = np.zeros(1000)
    moved[:20] = 2 * PARAM_ATOL  # 2% of entries off
    a, b = _result([1.0, 1.0]), _result([1.0, 1.0], moved)
    assert compare({"a": a, "b": b}, steps=2, objective="iwae")[0]["ok"]
    assert not compare({"a": a, "b": b}, steps=2)[0]["ok"]
    assert not compare({"a": a, "b": b}, steps=2, lr=1e-3, objective="vae")[0]["ok"]
    assert "all but 3% of entries" in tolerances(5, objective="iwae") and "all but 1% of entries" in tolerances(5)


def test_parameters_may_move_by_up_to_steps_times_lr():
    assert verdict(_row(param_abs=3e-3 * (1 + 1e-3)), steps=3, lr=1e-3)
    assert verdict(_row(param_abs=3e-3), steps=3)  # lr defaults to the core's 1e-3
    assert not verdict(_row(param_abs=3.1e-3), steps=3)
    assert not verdict(_row(param_abs=3.1e-3), steps=3, lr=1e-3)
    assert not verdict(_row(param_abs=3e-3), steps=2, lr=1e-3)


def _result(losses: list[float], params: np.ndarray | None = None) -> dict[str, np.ndarray]:
    return {
        "neg_elbo": np.array([500.0, 510.0]),
        "grid": np.zeros((2, 28, 28, 1)),
        "losses": np.array(losses),
        "param/w": np.zeros(1000, np.float32) if params is None else params,
    }


def test_parting_loss_trajectories_fail_parity_even_when_final_weights_agree():
    rows = compare({"a": _result([500.0, 450.0, 400.0]), "b": _result([500.0, 470.0, 400.0])}, steps=3)
    assert rows[0]["loss_rel"] == pytest.approx(20 / 470) and rows[0]["param_abs"] == 0.0 and not rows[0]["ok"]


def test_compare_uses_steps_and_lr_and_counts_outliers_strictly_past_atol():
    moved = np.zeros(1000)
    moved[:5] = 2.5e-2  # 0.5% of entries: within PARAM_OUTLIERS, so only the steps * lr bound decides
    a, b = _result([1.0, 1.0]), _result([1.0, 1.0], moved)
    assert compare({"a": a, "b": b}, steps=3, lr=1e-2)[0]["ok"]
    assert not compare({"a": a, "b": b}, steps=3)[0]["ok"]  # default lr 1e-3: 3e-3 at most
    edge = np.zeros(1000)
    edge[:20] = PARAM_ATOL  # exactly at the tolerance: not outliers
    assert compare({"a": _result([1.0], np.zeros(1000)), "b": _result([1.0], edge)}, steps=1)[0]["param_outliers"] == 0.0
    same = _result([1.0], np.full(1000, 0.5))
    same["grid"] = same["grid"] + 0.5
    (row,) = compare({"a": same, "b": {k: v.copy() for k, v in same.items()}}, steps=1)
    assert row["grid_abs"] == 0.0 and row["param_abs"] == 0.0 and row["ok"]


def test_compare_measures_every_difference():
    params = np.zeros(1000, np.float32)
    params[:5] = 2 * PARAM_ATOL
    a, b = _result([500.0, 499.0]), _result([500.0, 499.0], params)
    b["neg_elbo"] = np.array([500.0, 510.1])
    b["grid"] = b["grid"] + 5e-5
    (row,) = compare({"a": a, "b": b}, steps=2)
    assert row["pair"] == "a vs b"
    assert row["elbo_abs"] == pytest.approx(0.1) and row["elbo_rel"] == pytest.approx(0.1 / 510.1)
    assert row["grid_abs"] == pytest.approx(5e-5) and row["loss_rel"] == 0.0
    assert row["param_abs"] == pytest.approx(2 * PARAM_ATOL) and row["param_outliers"] == pytest.approx(0.005)
    assert not row["ok"]  # -ELBO 2e-4 relative is past ELBO_RTOL


def test_the_table_puts_each_value_under_its_header_and_the_tolerances_come_from_the_constants():
    row = {
        **_row(elbo_rel=1.5e-5, loss_rel=2.5e-6, grid_abs=3.5e-7, param_abs=4.5e-4, param_outliers=0.0123),
        "pair": "x vs y",
        "ok": True,
    }
    header, line = table([row])
    cols = header.split()
    assert cols == ["pair", "-ELBO", "rel", "loss", "rel", "grid", "abs", "params", "abs", ">atol", "ok"]
    assert line.split() == ["x", "vs", "y", "1.50e-05", "2.50e-06", "3.50e-07", "4.50e-04", "1.23%", "yes"]
    assert table([{**row, "ok": False}])[1].endswith("  NO")
    assert header.index("-ELBO rel") == 28 + 2 and line.index("1.50e-05") == 28 + 3  # the pair column: 28 wide
    long = {**row, "pair": "jax[transpose=subpixel] vs torch[compile]"}  # a variant's name: the column widens
    header, line = table([long, row])[:2]
    assert header.index("-ELBO rel") == len(long["pair"]) + 2 == line.index("1.50e-05") - 1
    text = tolerances(5)
    assert f"{ELBO_RTOL:g}" in text and f"{GRID_ATOL:g}" in text and f"{PARAM_ATOL:g}" in text
    assert f"{PARAM_OUTLIERS:.0%}" in text and "0.005" in text


# -- equivalence over seeds (sweeps) --------------------------------------------------------------------------


def test_mean_std_is_the_sample_std():
    assert stats.mean_std([1.0, 2.0, 4.0]) == pytest.approx((7 / 3, np.std([1.0, 2.0, 4.0], ddof=1)))
    assert stats.mean_std([5.0]) == (5.0, None)
    assert stats.mean_std([1, 3]) == pytest.approx((2.0, 2**0.5))  # two values already have a spread
    with pytest.raises(ValueError, match="^mean_std needs at least one value$"):
        stats.mean_std([])


def test_equivalence_pairs_by_seed_and_matches_the_textbook_t_interval():
    from scipy import stats as st

    a = {0: 100.0, 1: 101.0, 2: 99.5, 3: 100.4}
    b = {0: 100.1, 1: 101.2, 2: 99.4, 3: 100.2, 9: 50.0}  # seed 9 has no partner: left out of the pairing
    e = stats.equivalence(a, b, margin=0.5)
    d = np.array([a[s] - b[s] for s in range(4)])
    se = d.std(ddof=1) / 2
    half = st.t.ppf(0.975, 3) * se
    assert e["method"] == "paired" and e["n"] == 4
    assert e["diff"] == pytest.approx(d.mean())
    assert (e["low"], e["high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    # TOST: the larger of the two one-sided p-values, the same as two shifted one-sided t tests
    p_low = st.ttest_1samp(d + 0.5, 0, alternative="greater").pvalue
    p_high = st.ttest_1samp(d - 0.5, 0, alternative="less").pvalue
    assert e["p_tost"] == pytest.approx(max(p_low, p_high))
    assert e["verdict"] == "equivalent" and e["margin"] == 0.5


def test_equivalence_without_common_seeds_is_welchs():
    from scipy import stats as st

    a, b = {0: 10.0, 1: 11.0, 2: 12.5}, {5: 10.5, 6: 10.7, 7: 11.9, 8: 10.1}  # unequal sizes: each n - 1 in its place
    e = stats.equivalence(a, b, margin=3.0)
    x, y = np.array(list(a.values())), np.array(list(b.values()))
    welch = st.ttest_ind(x, y, equal_var=False)
    ci = welch.confidence_interval(0.95)
    assert e["method"] == "welch" and e["n"] == 3
    assert e["diff"] == pytest.approx(x.mean() - y.mean())
    assert (e["low"], e["high"]) == pytest.approx((ci.low, ci.high))
    shifted_low = st.ttest_ind(x + 3.0, y, equal_var=False, alternative="greater").pvalue
    shifted_high = st.ttest_ind(x - 3.0, y, equal_var=False, alternative="less").pvalue
    assert e["p_tost"] == pytest.approx(max(shifted_low, shifted_high))


@pytest.mark.parametrize(
    "shift, margin, verdict",
    [
        (0.0, 0.5, "equivalent"),  # same quality, tight seeds
        (2.0, 0.5, "different"),  # interval far from zero and outside the margin
        (0.3, 0.5, "equivalent"),  # a real but small difference: different from zero, yet within the margin
        (0.0, 0.01, "inconclusive"),  # too noisy to show a difference or an equivalence this strict
    ],
)
def test_equivalence_verdicts(shift, margin, verdict):
    a = {0: 100.0, 1: 101.0, 2: 99.5, 3: 100.4, 4: 99.9}
    b = {s: v + shift + (0.02 if s % 2 else -0.02) for s, v in a.items()}
    assert stats.equivalence(a, b, margin=margin)["verdict"] == verdict


def test_equivalence_at_the_margin_is_not_equivalence():
    """A difference exactly at the margin cannot be shown to lie inside it, however tight the seeds."""
    a = {s: 100.0 + s for s in range(5)}
    b = {s: v - 0.5 for s, v in a.items()}  # every pair differs by exactly 0.5: no spread at all
    e = stats.equivalence(a, b, margin=0.5)
    assert e["p_tost"] == 1.0 and e["verdict"] == "different"
    inside = stats.equivalence(a, {s: v - 0.25 for s, v in a.items()}, margin=0.5)
    assert inside["p_tost"] < 1e-9 and inside["verdict"] == "equivalent"


def test_equivalence_needs_two_seeds_a_side():
    assert stats.equivalence({0: 1.0}, {0: 1.0}) == {"method": None, "n": 1, "margin": 0.5, "verdict": "too few seeds"}
    assert stats.equivalence({0: 1.0, 1: 2.0}, {0: 1.5, 1: 2.5})["method"] == "paired"  # two common seeds are pairs
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 0/0 warning either
        same = stats.equivalence({0: 3.0, 1: 3.0}, {5: 3.0, 6: 3.0})  # Welch without any spread
    assert (same["method"], same["diff"], same["p_tost"], same["verdict"]) == ("welch", 0.0, 0.0, "equivalent")
    assert stats.equivalence({0: 1.0, 1: 2.0}, {5: 1.0})["verdict"] == "too few seeds"
    assert stats.equivalence({0: 1.0, 1: 2.0}, {1: 1.0, 5: 1.0})["method"] == "welch"  # one common seed: not pairs
