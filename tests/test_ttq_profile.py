"""Time to quality under ``--profile best`` trains the variant a best bench picked, and says so.

Before this, bench's time to quality ran the plugin defaults whatever the
profile, and the best bench's entries said ``profile: default``: a best column
that was the default variant timed again. These pin which variant each
(backend, model) trains, where it comes from, and what the entry and the
report's table say. Seeds run in fake subprocesses (the real one is in
test_bench_report.py).
"""

import json

import pytest
from click.testing import CliRunner

from vaebench.cli import cli
from vaebench.errors import ConfigError
from vaebench.measure import bench, ttq
from vaebench.measure.documents import BENCH_SCHEMA
from vaebench.plugin import host
from vaebench.report.tables import ttq_rows


def _row(backend: str, model: str, batch: int, profile: str, compile: bool, options: dict) -> dict:
    return {
        "backend": backend,
        "model": model,
        "batch_size": batch,
        "settings": {"profile": profile, "variant": {"compile": compile, "options": options}},
    }


ROWS = [
    _row("torch", "mlp", 128, "best", True, {}),
    _row("torch", "mlp", 512, "best", False, {"layout": "nhwc"}),  # not the batch time to quality trains at
    _row("jax", "conv", 128, "best", False, {"transpose": "subpixel"}),
    _row("jax", "conv", 512, "best", False, {}),
    _row("jax", "mlp", 128, "default", True, {"x": "1"}),  # a default row is no pick
    _row("jax", "blog", 512, "best", False, {}),
    {"backend": "torch", "model": "conv", "batch_size": 128},  # a row from before rows kept their settings
]


def _fake_seed(asked: list[dict]):
    def run(request: dict) -> dict:
        asked.append(request)
        return {"backend": request["backend"], "model": request["model_name"], "seed": request["seed"], "seconds": 3.0}

    return run


def test_the_batch_time_to_quality_trains_at_is_the_models_own_default():
    assert (ttq.ttq_batch_size("mlp"), ttq.ttq_batch_size("conv"), ttq.ttq_batch_size("blog")) == (128, 128, 512)


def test_picks_are_the_best_rows_at_the_ttq_batch_size_only():
    picked = ttq.picked_variants(ROWS, ["jax"], ["conv"], "here") | ttq.picked_variants(ROWS, ["torch"], ["mlp"], "here")
    assert picked == {
        ("torch", "mlp"): {"compile": True, "options": {}},
        ("jax", "conv"): {"compile": False, "options": {"transpose": "subpixel"}},
    }
    assert set(ttq.picked_variants(ROWS, ["jax"], ["conv"], "here")) == {("jax", "conv")}  # only what was asked


def test_a_cell_the_rows_lack_or_hold_only_under_default_is_one_error_naming_the_file():
    with pytest.raises(ConfigError, match=r"f\.json has none for jax mlp at batch 128$"):
        ttq.picked_variants(ROWS, ["torch", "jax"], ["mlp"], "f.json")
    with pytest.raises(ConfigError, match=r"none for torch conv at batch 128, torch blog at batch 512$"):
        ttq.picked_variants(ROWS, ["torch", "jax"], ["conv", "blog"], "f.json")


def test_ttq_variants_looks_nothing_up_under_default_and_checks_the_matrix_under_best(tmp_path):
    assert bench.ttq_variants("default", ["conv"], ["jax"], [], [], None) is None
    assert bench.ttq_variants("best", None, ["jax"], [], [], None) is None
    assert bench.ttq_variants("best", ["conv"], ["jax"], ["conv", "mlp"], [128], None) is None  # the matrix will pick
    for models, sizes in ((["mlp"], [128]), (["conv"], [512])):
        with pytest.raises(ConfigError, match="does not time conv at batch 128: .*--ttq-variants-from"):
            bench.ttq_variants("best", ["conv"], ["jax"], models, sizes, None)
    doc = tmp_path / "bench.json"
    doc.write_text(json.dumps({"schema_version": 1, "kind": "bench", "results": [], "time_to_quality": []}))
    with pytest.raises(ConfigError, match="has none for jax conv"):
        bench.ttq_variants("best", ["conv"], ["jax"], [], [], doc)


def test_the_grid_trains_each_backends_pick_and_the_entry_names_the_profile_and_variant(monkeypatch):
    asked: list[dict] = []
    monkeypatch.setattr(ttq, "_in_subprocess", _fake_seed(asked))
    variants = {("numpy", "conv"): {"compile": False, "options": {"transpose": "subpixel"}}}
    entries = ttq.run_ttq_grid(["numpy"], ["conv", "mlp"], 2, 1, None, compile=True, profile="best", variants=variants)
    assert [r["options"] for r in asked] == [{"transpose": "subpixel"}] * 2 + [{}] * 2  # mlp: no pick, the flags
    conv, mlp = entries
    assert conv["profile"] == mlp["profile"] == "best"
    assert conv["variant"] == {"compile": False, "options": {"transpose": "subpixel"}}
    assert mlp["variant"] == {"compile": False, "options": {}} and [r["compile"] for r in asked] == [False] * 4
    assert ttq.run_ttq_grid(["numpy"], ["mlp"], 1, 1, None)[0]["profile"] == "default"
    assert (asked[-1]["device"], asked[-1]["precision"], asked[-1]["compile"]) == ("auto", "fp32", False)


def test_bench_best_with_ttq_only_and_no_picks_is_one_line_exit_2_and_prints_no_table(tmp_path, monkeypatch):
    monkeypatch.setattr(host, "busy_cores", lambda: 0.0)
    args = ["bench", "--backends", "numpy", "--no-throughput", "--ttq-models", "conv", "--profile", "best"]
    result = CliRunner().invoke(cli, [*args, "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError) and "--ttq-variants-from" in str(result.exception)
    assert result.exception.exit_code == 2  # vaebench's main prints it as one line and exits 2
    assert "img/s" not in result.output and not (tmp_path / "bench.json").exists()


def test_bench_best_trains_the_variants_from_the_file_it_is_given(tmp_path, monkeypatch):
    asked: list[dict] = []
    monkeypatch.setattr(ttq, "_in_subprocess", _fake_seed(asked))
    monkeypatch.setattr(host, "busy_cores", lambda: 0.0)
    picks = tmp_path / "picks.json"
    row = _row("numpy", "conv", 128, "best", False, {"transpose": "subpixel"})
    times = {"median": 10.0, "min": 9.0, "max": 11.0, "q1": 9.5, "q3": 10.5, "windows": 3, "compile_seconds": 0.1}
    row.update(train_images_per_second=times, peak_rss_mb=100.0, ratio=None)
    picks.write_text(json.dumps({"schema_version": BENCH_SCHEMA, "kind": "bench", "results": [row], "time_to_quality": []}))
    args = ["bench", "--backends", "numpy", "--no-throughput", "--ttq-models", "conv", "--ttq-seeds", "1", "--threads", "1"]
    out = tmp_path / "out"
    result = CliRunner().invoke(cli, [*args, "--profile", "best", "--ttq-variants-from", str(picks), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert asked[0]["options"] == {"transpose": "subpixel"}
    (entry,) = json.loads((out / "bench.json").read_text())["time_to_quality"]
    assert entry["profile"] == "best" and entry["variant"]["options"] == {"transpose": "subpixel"}


def test_the_report_table_names_each_entrys_profile_and_variant():
    def entry(backend: str, profile: str | None, variant: dict, median: float) -> dict:
        e = {"model": "conv", "backend": backend, "target": 200.0, "median": median, "min": median, "max": median}
        e.update(reached=5, seeds=5, variant=variant)
        return e if profile is None else {**e, "profile": profile}

    rows = ttq_rows(
        [
            entry("jax", "best", {"compile": False, "options": {"transpose": "subpixel"}}, 60.0),
            entry("torch", None, {"compile": False, "options": {}}, 40.0),  # written before entries named a profile
            entry("jax", "default", {"compile": False, "options": {}}, 200.0),
            entry("torch", "best", {"compile": True, "options": {"layout": "nhwc"}}, 30.0),
        ]
    ).lines()
    assert rows[0].split()[:4] == ["model", "profile", "backend", "variant"]
    cells = [ln.split()[:4] for ln in rows[1:]]
    assert cells == [
        ["conv", "best", "torch", "compile,"],
        ["conv", "best", "jax", "transpose=subpixel"],
        ["conv", "default", "torch", "plugin"],
        ["conv", "default", "jax", "plugin"],
    ]
    assert "compile, layout=nhwc" in rows[1] and "200.0" in rows[4]
