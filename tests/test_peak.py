"""The peak's arithmetic, with a fake library and a fake clock: no speed is measured here."""

from __future__ import annotations

import pytest

from vaebench.measure.peak import METHOD, achieved_gflops, fraction_of_peak, gemm_gflops, measure_peak


class FakeClock:
    """Time that advances only when a fake product runs: ``seconds[n]`` per product of size ``n``."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fake_library(clock: FakeClock, seconds: dict[int, float], calls: list):
    def gemm(n: int):
        def run():
            clock.now += seconds[n]
            calls.append(n)
            return n

        return run, (lambda r: r)

    return gemm


def test_gflops_is_two_n_cubed_over_seconds():
    assert gemm_gflops(1000, 0.5) == 4.0  # exact: 2e9 FLOPs in half a second (approx would hide a 1e-9 slip)
    with pytest.raises(ValueError, match="^a product cannot take 0.0 s$"):
        gemm_gflops(10, 0.0)


def test_peak_is_the_best_over_libraries_and_sizes_and_says_how():
    clock = FakeClock()
    calls: list[int] = []
    slow = fake_library(clock, {100: 0.01, 200: 0.02}, calls)  # 0.2 and 0.8 GFLOP/s
    fast = fake_library(clock, {100: 0.001, 200: 0.004}, calls)  # 2 and 4 GFLOP/s
    out = measure_peak(seconds_budget=0.1, sizes=(100, 200), libraries={"slow": slow, "fast": fast}, clock=clock)
    assert out["library"] == "fast" and out["n"] == 200
    assert out["peak_gflops"] == pytest.approx(2 * 200**3 / 0.004 / 1e9)
    assert out["method"] == METHOD and out["dtype"] == "float32"
    rows = {(r["library"], r["n"]): r for r in out["measurements"]}
    assert rows[("slow", 100)]["gflops"] == pytest.approx(0.2)
    # each (library, size) gets a quarter of the budget: 0.025 s of 0.004 s products is 7 timed ones (the 7th crosses it)
    assert rows[("fast", 200)]["repeats"] == 7
    assert rows[("slow", 200)]["repeats"] == 3  # at least min_repeats, even over the budget
    assert len(calls) == sum(r["repeats"] for r in out["measurements"]) + 4  # one untimed warm-up each


def test_achieved_and_fraction_of_peak():
    # 1000 images/s of a 2 MFLOP-per-image step is 2 GFLOP/s, a fifth of a 10 GFLOP/s peak
    assert achieved_gflops(1000, 2e6) == 2.0
    assert fraction_of_peak(2.0, 10.0) == pytest.approx(0.2)
    assert fraction_of_peak(0.25, 0.5) == 0.5  # a peak under 1 GFLOP/s is still a peak
    with pytest.raises(ValueError, match="^peak must be positive, got 0.0$"):
        fraction_of_peak(1.0, 0.0)


def test_the_record_says_budget_threads_and_each_best_time(monkeypatch):
    clock, calls = FakeClock(), []
    lib = fake_library(clock, {64: 0.5}, calls)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setenv("MKL_NUM_THREADS", "3")
    monkeypatch.setenv("XLA_FLAGS", "--x")
    monkeypatch.setattr("vaebench.measure.peak.available_libraries", lambda: {"only": lib})  # the default: what imports
    out = measure_peak(sizes=(64,), clock=clock, min_repeats=1)
    assert out["library"] == "only" and out["seconds_budget"] == 4.0  # the documented default budget
    (row,) = out["measurements"]
    assert row["best_seconds"] == 0.5 and row["repeats"] == 8  # one (library, size): the whole 4 s budget, 0.5 s each
    assert out["threads"]["OMP_NUM_THREADS"] == "2" and out["threads"]["MKL_NUM_THREADS"] == "3"
    assert out["threads"]["XLA_FLAGS"] == "--x" and out["threads"]["cpus"] >= 1
    # a product that ends exactly at the budget ends the loop (the budget is "less than", not "up to")
    assert row["best_seconds"] * row["repeats"] == out["seconds_budget"]
