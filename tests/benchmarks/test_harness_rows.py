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
