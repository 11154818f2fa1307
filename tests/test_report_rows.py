"""The report's bench tables: rows in the order of the ratio they print, and what --profile best is worth."""

from __future__ import annotations

from vaebench.report.tables import bench_rows, tuning_rows


def _row(backend, median, ratio, tuning=None, variant=None):
    return {
        "backend": backend,
        "model": "conv",
        "batch_size": 128,
        "train_images_per_second": {"median": median, "q1": median, "q3": median, "windows": 5, "compile_seconds": 1.0},
        "ratio": {"text": f"{ratio:g}", "value": ratio, "low": ratio, "high": ratio},
        "settings": {"profile": "best", "precision": "fp32", "tuning": tuning, "variant": variant or {}},
        "peak_rss_mb": 1.0,
        "source": "b/bench.json",
    }


def test_rows_sort_by_the_paired_ratio_they_print_not_by_pooled_medians():
    # pooled medians say b is faster; the paired ratio (what the table prints and calls fastest) says a
    table = bench_rows([_row("b", 120.0, 0.9), _row("a", 100.0, 1.0)])
    assert [r[2][0] for r in table.rows] == ["a", "b"]
    assert [r[6][1] for r in table.rows] == [1.0, 0.9]  # the ratio column sorts by the printed ratio too


def test_what_best_is_worth_lists_every_candidate_against_the_default():
    candidates = [
        {
            "label": "transpose=lax",
            "compile": False,
            "options": {"transpose": "lax"},
            "median": 44.0,
            "vs_default": {"text": "1", "value": 1.0},
        },
        {
            "label": "transpose=subpixel",
            "compile": False,
            "options": {"transpose": "subpixel"},
            "median": 300.0,
            "vs_default": {"text": "6.8 (6.1-7.5)", "value": 6.8},
        },
    ]
    tuning = {"default": "transpose=lax", "candidates": candidates}
    table = tuning_rows([_row("jax", 300.0, 1.0, tuning, {"compile": False, "options": {"transpose": "subpixel"}})])
    text = "\n".join(table.lines())
    assert "transpose=lax (default)" in text and "6.8 (6.1-7.5)" in text
    assert [r[6][0] for r in table.rows] == ["", "yes"]
    assert tuning_rows([_row("torch", 1.0, 1.0)]).rows == []  # default profile: nothing tuned, no rows


def test_two_machines_are_two_cells_never_one(tmp_path):
    from vaebench.report.page import write_report

    here, there = _row("torch", 100.0, 1.0), _row("torch", 900.0, 1.0)
    here["machine"], there["machine"] = "this CPU", "the baseline's CPU"
    table = bench_rows([here, there])
    names = sorted(r[2][0] for r in table.rows)
    assert names == ["torch @m1", "torch @m2"]  # each its own cell's fastest, and says which machine
    md, _ = write_report([here, there], [], tmp_path)
    assert "m1 = the baseline's CPU, m2 = this CPU" in md.read_text()
