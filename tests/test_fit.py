"""Fixed and per-image cost: the fit against closed forms, and the report section that shows it."""

from __future__ import annotations

import math

import pytest

from vaebench.measure.fit import batch_fits, fit_step_time, step_seconds


def test_points_on_a_line_give_the_line_back():
    batches = [16, 64, 256, 1024]
    fit = fit_step_time(batches, [2e-3 + 1e-4 * b for b in batches])
    assert fit["fixed_seconds"] == pytest.approx(2e-3) and fit["seconds_per_image"] == pytest.approx(1e-4)
    assert fit["asymptotic_images_per_second"] == pytest.approx(1e4) and fit["residual"] == pytest.approx(0, abs=1e-12)


def test_the_fit_minimises_relative_residuals():
    batches, seconds = [16, 64, 256, 1024], [0.004, 0.006, 0.030, 0.100]
    # closed-form weighted least squares, weights 1/t^2, written out independently of the module
    w = [1 / t**2 for t in seconds]
    sw, sx, sy = (
        sum(w),
        sum(wi * b for wi, b in zip(w, batches, strict=True)),
        sum(wi * t for wi, t in zip(w, seconds, strict=True)),
    )
    sxx = sum(wi * b * b for wi, b in zip(w, batches, strict=True))
    sxy = sum(wi * b * t for wi, b, t in zip(w, batches, seconds, strict=True))
    b = (sw * sxy - sx * sy) / (sw * sxx - sx * sx)
    a = (sy - b * sx) / sw
    fit = fit_step_time(batches, seconds)
    assert fit["fixed_seconds"] == pytest.approx(a) and fit["seconds_per_image"] == pytest.approx(b)
    rel = [(a + b * x - t) / t for x, t in zip(batches, seconds, strict=True)]
    assert fit["residual"] == pytest.approx(math.sqrt(sum(r * r for r in rel) / len(rel)))
    # ordinary least squares would put the line through the large batches and miss batch 16 by far more
    assert abs(rel[0]) < 0.5


def test_two_batch_sizes_pass_through_both_and_claim_no_residual():
    fit = fit_step_time([128, 512], [0.01, 0.03])
    assert fit["seconds_per_image"] == pytest.approx(0.02 / 384) and fit["residual"] is None
    assert fit["fixed_seconds"] == pytest.approx(0.01 - 128 * 0.02 / 384)


@pytest.mark.parametrize(
    "batches,seconds,says",
    [
        ([128, 128], [0.1, 0.2], "a line needs at least two different batch sizes"),
        ([16], [0.1], "a line needs at least two different batch sizes"),
        ([16, 32], [0.1, 0.0], r"step times must be positive, got \[0.1, 0.0\]"),
        ([16, 32], [0.1, -0.1], "step times must be positive"),
        ([16, 32], [0.1, float("inf")], "step times must be positive"),
        ([16, 32], [0.1], "one step time per batch size"),
    ],
)
def test_what_cannot_be_fitted_is_refused(batches, seconds, says):
    with pytest.raises(ValueError, match=f"^{says}"):
        fit_step_time(batches, seconds)


def test_three_batch_sizes_have_a_residual_and_falling_step_times_no_asymptote():
    fit = fit_step_time([16, 32, 64], [0.01, 0.02, 0.05])
    assert fit["residual"] is not None and fit["residual"] > 0
    falling = fit_step_time([16, 64], [0.02, 0.01])  # b < 0: more images cost less time, no asymptote to state
    assert falling["seconds_per_image"] < 0 and falling["asymptotic_images_per_second"] is None
    flat = fit_step_time([16, 64], [0.02, 0.02])
    assert flat["seconds_per_image"] == pytest.approx(0, abs=1e-15)


def _row(backend, batch, ips, machine="m1", profile="default"):
    return {
        "backend": backend,
        "model": "mlp",
        "batch_size": batch,
        "machine": machine,
        "train_images_per_second": {
            "median": ips,
            "q1": ips,
            "q3": ips,
            "windows": 3,
            "compile_seconds": 0.1,
            "min": ips,
            "max": ips,
        },
        "settings": {"profile": profile, "precision": "fp32", "variant": {"compile": False, "options": {}}},
        "ratio": {"text": "1", "value": 1.0, "low": 1.0, "high": 1.0},
        "peak_rss_mb": 1.0,
        "source": "x/bench.json",
    }


def test_fits_group_by_machine_backend_and_setting():
    rows = [_row("torch", 16, 1600.0), _row("torch", 64, 3200.0), _row("jax", 16, 800.0), _row("torch", 16, 100.0, machine="m2")]
    assert step_seconds(rows[0]) == pytest.approx(0.01)
    (fit,) = batch_fits(rows)  # jax and m2 have one batch size each: no line
    assert (fit["backend"], fit["machine"], fit["setting"]) == ("torch", "m1", "default/fp32")
    assert fit["points"] == [[16, 0.01], [64, 0.02]] and fit["seconds_per_image"] == pytest.approx(0.01 / 48)
    bare = [{k: v for k, v in r.items() if k != "machine"} for r in rows[:2]]
    assert batch_fits(bare)[0]["machine"] == ""


def test_a_setting_names_profile_precision_and_variant():
    rows = [_row("torch", 16, 1600.0, profile="best"), _row("torch", 64, 3200.0, profile="best")]
    for r in rows:
        r["settings"]["variant"] = {"compile": True, "options": {"transpose": "subpixel", "layout": "nhwc"}}
    assert batch_fits(rows)[0]["setting"] == "best/fp32 (compile, layout=nhwc, transpose=subpixel)"
    plain = [_row("jax", 16, 1.0), _row("jax", 32, 1.0)]
    for r in plain:
        del r["settings"]["variant"]
    assert batch_fits(plain)[0]["setting"] == "default/fp32"
    assert batch_fits([{**r, "settings": {}} for r in plain])[0]["setting"] == "?/?"


def test_the_report_shows_fixed_and_per_image_cost(tmp_path):
    from vaebench.report.page import write_report

    rows = [
        _row(b, n, ips) for b, per in (("torch", 1e-4), ("jax", 5e-5)) for n in (16, 128, 512) for ips in [n / (3e-3 + per * n)]
    ]
    md, _ = write_report(rows, [], tmp_path)
    text = md.read_text()
    assert "## Fixed and per-image cost" in text and "![batch.png](batch.png)" in text
    assert (tmp_path / "batch.png").read_bytes()[:4] == b"\x89PNG"
    line = next(s for s in text.splitlines() if s.startswith("mlp") and "jax" in s and "16,128,512" in s)
    assert "3000" in line and "20000" in line  # a = 3 ms per step, 1/b = 20,000 images/s
    # images/s that fall with the batch (a per-image cost that grows): the line's a < 0, and the table says so
    falling = [_row("keras", n, ips) for n, ips in ((16, 400.0), (128, 300.0), (512, 200.0))]
    md, _ = write_report(falling, [], tmp_path / "falling")
    (line,) = [s for s in md.read_text().splitlines() if s.startswith("mlp") and "keras" in s and "16,128,512" in s]
    assert "not linear" in line and "at 16" not in line and "is shown as not linear" in md.read_text()
