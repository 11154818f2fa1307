"""`vaebench exactness`: conv against its symmetrically padded twin, paired in time; the ratio, its cost and the report."""

import json

import pytest
from click.testing import CliRunner
from test_hardening import _cli, _one_line_exit_2  # the real entry point: exit codes and stderr as a user sees them

from vaebench.cli import cli
from vaebench.errors import ConfigError
from vaebench.measure import exactness
from vaebench.measure.stats import summarize
from vaebench.model.catalogue import NATIVE_TWINS, get_model
from vaebench.model.costs import model_costs


class StepChannel:
    """A worker whose steps take ``seconds[model]`` each (optionally scaled per round); it logs every command."""

    def __init__(self, request, seconds: dict, log: list, drift: list[float] | None = None) -> None:
        self.request, self.seconds, self.log, self.drift = request, seconds, log, drift
        self.windows = 0
        self.closed = False

    def ready(self) -> dict:
        return {"ready": True, "variants": 1}

    def call(self, command: dict) -> dict:
        op = command["op"]
        self.log.append((self.request.backend, self.request.model, op))
        step = self.seconds[self.request.model]
        if op == "compile":
            return {"compile_seconds": 1.0, "probe_seconds": step}
        if op == "window":
            slow = self.drift[self.windows] if self.drift else 1.0
            self.windows += 1
            return {"seconds": command["steps"] * step * slow, "steps": command["steps"]}
        return {"peak_rss_mb": 1.0, "peak_device_memory_mb": None, "environment": {"execution": "x"}, "plugin": {}}

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None:
        self.closed = True


def _cell(exact_rounds, native_rounds):
    def side(rounds):
        return {"train_images_per_second": {**summarize([v for r in rounds for v in r]), "rounds": rounds}}

    return {"conv": side(exact_rounds), "conv-sym": side(native_rounds)}


def test_the_twin_is_the_same_network_with_the_same_work():
    conv, twin = get_model("conv").spec, get_model(NATIVE_TWINS["conv"]).spec
    assert [type(layer) for layer in conv.encoder + conv.decoder] == [type(layer) for layer in twin.encoder + twin.decoder]
    assert model_costs(conv, 128)["total"] == model_costs(twin, 128)["total"]


def test_a_slower_exact_network_is_a_ratio_below_one_and_its_cost_in_step_time():
    cell = _cell([[80.0]] * 5, [[100.0]] * 5)
    cell["conv"]["environment"] = {"execution": "eager"}
    cell["conv-sym"]["environment"] = {"execution": "other"}
    row = exactness.exactness_row("torch", "conv", 64, cell)
    assert set(row) == {"backend", "model", "twin", "batch_size", "exact", "native", "ratio", "cost", "environment"}
    assert row["model"] == "conv" and row["environment"] == {"execution": "eager"}  # the exact model's worker
    assert row["native"]["rounds"] == [[100.0]] * 5
    assert row["ratio"]["value"] == pytest.approx(0.8)
    assert row["cost"]["value"] == pytest.approx(0.25)  # 1/0.8 - 1: a quarter more time per step, not 20%
    assert row["twin"] == "conv-sym" and row["batch_size"] == 64 and row["backend"] == "torch"
    assert row["exact"]["median"] == 80.0 and row["native"]["median"] == 100.0
    assert row["exact"]["rounds"] == [[80.0]] * 5 and row["native"]["windows"] == 5


def test_the_cost_interval_is_the_ratio_interval_mapped_and_reversed():
    exact = [[70.0], [80.0], [90.0], [75.0], [85.0], [80.0], [95.0]]
    row = exactness.exactness_row("jax", "conv", 32, _cell(exact, [[100.0]] * 7))
    r, c = row["ratio"], row["cost"]
    assert r["low"] < r["value"] < r["high"]
    assert c["low"] == pytest.approx(1 / r["high"] - 1) and c["high"] == pytest.approx(1 / r["low"] - 1)
    assert c["low"] < c["value"] < c["high"]
    assert r["text"].startswith(f"{r['value']:.2f}"[:3])


def test_ratios_pair_by_round_so_drift_of_a_whole_round_cancels():
    drift = [1.0, 3.0, 1.0, 0.5, 2.0, 1.0]  # a round slowed for both models alike
    exact = [[80.0 / d] for d in drift]
    native = [[100.0 / d] for d in drift]
    row = exactness.exactness_row("torch", "conv", 8, _cell(exact, native))
    assert row["ratio"]["value"] == pytest.approx(0.8) and row["ratio"]["low"] == pytest.approx(0.8)
    assert row["ratio"]["high"] == pytest.approx(0.8)


def test_each_pair_is_one_interleaved_cell_of_two_workers_with_the_same_settings():
    log, spawned = [], []

    def spawn(request):
        spawned.append(request)
        return StepChannel(request, {"conv": 0.0125, "conv-sym": 0.01}, log)

    ticks = []
    rows = list(exactness.measure(["numpy"], "conv", [8, 16], rounds=4, threads=1, spawn=spawn, progress=ticks.append))
    assert [(r["backend"], r["batch_size"]) for r in rows] == [("numpy", 8), ("numpy", 16)]
    assert [(q.model, q.batch_size) for q in spawned] == [("conv", 8), ("conv-sym", 8), ("conv", 16), ("conv-sym", 16)]
    assert all(q.backend == "numpy" and q.threads == 1 and q.options == {} and q.profile == "default" for q in spawned)
    assert all(q.device == "auto" and q.precision == "fp32" for q in spawned)
    assert all(r["options"] == {} for r in rows)
    assert len(ticks) == 2 * 4 * 2  # one per timed window: two models, four rounds, two cells
    spawned.clear()
    list(exactness.measure(["numpy"], "conv", [8], rounds=2, threads=2, device="cpu", precision="tf32", spawn=spawn))
    assert all(q.device == "cpu" and q.precision == "tf32" and q.threads == 2 for q in spawned)
    for r in rows:
        assert r["ratio"]["value"] == pytest.approx(0.8) and r["cost"]["value"] == pytest.approx(0.25)
    windows = [m for _, m, op in log if op == "window"]
    assert windows[:2] == ["conv", "conv-sym"]  # the untimed warm-up round
    assert windows[2:6] == ["conv", "conv-sym", "conv-sym", "conv"]  # then the order rotates each round


def test_a_twinless_model_is_a_config_error_naming_those_with_one():
    with pytest.raises(ConfigError, match=r"'mlp' has no symmetrically padded twin .*; choose conv \(twin conv-sym\)$"):
        exactness.twin_of("mlp")
    assert exactness.twin_of("conv") == "conv-sym"


def test_a_model_without_a_twin_is_refused_in_one_line(tmp_path):
    _one_line_exit_2(
        _cli(["exactness", "--backends", "numpy", "--model", "mlp", "--out", tmp_path / "e"]), "conv (twin conv-sym)"
    )
    assert not (tmp_path / "e").exists()


def test_an_existing_document_is_kept_unless_overwrite(tmp_path):
    out = tmp_path / "e"
    out.mkdir()
    (out / "exactness.json").write_text('{"kept": true}')
    result = CliRunner().invoke(cli, ["exactness", "--backends", "numpy", "--out", str(out)])
    assert result.exit_code == 2 and "--overwrite" in result.output
    assert json.loads((out / "exactness.json").read_text()) == {"kept": True}


def _doc(tmp_path, backend="torch", busy=False):
    row = exactness.exactness_row(backend, "conv", 128, _cell([[80.0]] * 3, [[100.0]] * 3))
    row["load"] = {"busy": busy}
    path = exactness.write_exactness([row], tmp_path / "ex", exactness.method_record(3, "fp32", {}, {}))
    return path


def test_compare_reads_the_document_and_the_report_states_the_cost(tmp_path):
    path = _doc(tmp_path, busy=True)
    result = CliRunner().invoke(cli, ["compare", str(path.parent), "--report", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("torch"))
    assert "0.800" in line and "+25.0%" in line and "conv-sym" in line and "busy" in line
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## What exactness costs" in md and "+25.0%" in md


def test_a_damaged_exactness_document_is_one_clear_error(tmp_path):
    path = _doc(tmp_path)
    doc = json.loads(path.read_text())
    del doc["results"][0]["cost"]
    path.write_text(json.dumps(doc))
    _one_line_exit_2(_cli(["compare", path]), "results[0].cost is missing")


def test_a_backend_name_from_the_file_reaches_the_html_escaped(tmp_path):
    from vaebench.report.inputs import load_inputs
    from vaebench.report.page import write_report

    path = _doc(tmp_path, backend="<script>alert(1)</script>")
    bench, runs = load_inputs([path])
    _, html_path = write_report(bench, runs, tmp_path / "rep")
    page = html_path.read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)" in page
