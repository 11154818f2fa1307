"""`vaebench explain`: the arithmetic against a fake clock that knows every cost, the probes against each other.

A known delay put into one layer's phase must show up in that cell and in no
other; a difference of windows is paired per round; the step split adds up by
the stated rule; a cell within the noise gets no GFLOP/s and is never called
slow. The probes the plugins supply must compute the layer's function: the
torch and jax probes are fed the same weights and inputs and must give the
same outputs and gradients.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vaebench.measure import explain as ex
from vaebench.model.catalogue import get_model
from vaebench.model.costs import layer_costs, model_costs, passes
from vaebench.model.loss import Objective
from vaebench.model.weights import init_params
from vaebench.plugin.numpy_backend import NumpyModel


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def spend(self, seconds: float) -> None:
        self.now += seconds


# seconds per call of every probe: forward 1 ms, gradient to the input +2 ms, to the weights +3 ms
FORWARD, TO_INPUT, TO_WEIGHTS = 1e-3, 2e-3, 3e-3
SLOW_LAYER, SLOW_EXTRA = "decoder/2", 0.05  # a known delay in one product of one layer
STEP_FORWARD, STEP_BACKWARD, STEP_OPTIMIZER = 4e-3, 9e-3, 2e-3


class ClockedModel(NumpyModel):
    """The numpy model whose probes and step only advance a fake clock by known amounts."""

    clock: FakeClock
    slow_phase = "forward+grad_weights"
    compile_extra = 0.5  # the first call of every probe: must land in compile_seconds, never in a window

    def _layer_probe(self, info, kernel, bias, x, grad):
        # what explain hands a plugin: the layer's input and output cotangent, float32, at the batch size
        batch = self.batch_size * passes(self.spec, info.name)  # the IWAE step's decoder sees batch * K rows
        assert x.shape == (batch, *info.in_shape) and x.dtype == np.float32 and 0 <= x.min() and x.max() < 1
        assert grad.shape == (batch, *info.out_shape) and grad.dtype == np.float32 and grad.min() < 0 < grad.max()
        assert kernel.shape == info.param_shapes[f"{info.name}/kernel"] and bias.shape == (
            info.layer.filters if hasattr(info.layer, "filters") else info.layer.units,
        )

        def probe(name: str, seconds: float):
            calls = []

            def call():
                extra = self.compile_extra if not calls else 0.0
                calls.append(1)
                # a slow forward pass slows every probe (each runs the forward first); a slow gradient, its own
                hit = name == self.slow_phase or self.slow_phase == "forward"
                delay = SLOW_EXTRA if info.name == SLOW_LAYER and hit else 0.0
                self.clock.spend(seconds + delay + extra)

            return call

        return {
            "forward": probe("forward", FORWARD),
            "forward+grad_input": probe("forward+grad_input", FORWARD + TO_INPUT),
            "forward+grad_weights": probe("forward+grad_weights", FORWARD + TO_WEIGHTS),
        }

    def _step_probe(self, x, eps):
        noise = self.spec.objective.noise_shape(self.spec.latent_dim)
        assert x.shape == (self.batch_size, 28, 28, 1) and eps.shape == (self.batch_size, *noise)
        return {
            "forward": lambda: self.clock.spend(STEP_FORWARD),
            "forward+backward": lambda: self.clock.spend(STEP_FORWARD + STEP_BACKWARD),
        }

    def _train_step(self, x, eps):
        self.clock.spend(STEP_FORWARD + STEP_BACKWARD + STEP_OPTIMIZER)
        return np.float32(0.0)


def clocked(
    model_name: str = "conv", slow_phase: str = "forward+grad_weights", batch: int = 8, objective: Objective | None = None
) -> tuple[ClockedModel, FakeClock]:
    spec = get_model(model_name).spec.with_objective(objective or Objective())
    model = ClockedModel(spec, None)
    model.clock, model.slow_phase, model.batch_size = FakeClock(), slow_phase, batch
    model.load_weights(init_params(spec, 0))
    return model, model.clock


def test_a_known_delay_in_one_product_shows_up_in_that_cell_only():
    model, clock = clocked()
    request = ex.ExplainRequest("clocked", "conv", batch_size=8, rounds=3, window_seconds=0.01)
    result = ex.measure_backend(model, request, clock=clock)
    costs = {c.name: c for c in layer_costs(model.spec)}
    assert [layer["name"] for layer in result["layers"]] == list(costs)  # every layer with weights, in spec order
    for layer in result["layers"]:
        phases, cost = layer["phases"], costs[layer["name"]]
        slow = SLOW_EXTRA if layer["name"] == SLOW_LAYER else 0.0
        assert phases["forward"]["seconds"] == pytest.approx(FORWARD)
        assert phases["forward"]["rounds"] == pytest.approx([FORWARD] * 3)  # every round kept, not just the median
        assert phases["grad_weights"]["seconds"] == pytest.approx(TO_WEIGHTS + slow)
        if cost.grad_input_flops == 0:  # the first layer: no step computes the image's gradient
            assert phases["grad_input"] is None and "forward+grad_input" not in layer["compile_seconds"]
        else:
            assert phases["grad_input"]["seconds"] == pytest.approx(TO_INPUT)
        # the compile call's extra half second is in compile_seconds, not in any window
        assert layer["compile_seconds"]["forward"] == pytest.approx(FORWARD + ClockedModel.compile_extra)
        # achieved GFLOP/s: the cost model's FLOPs for the batch over the median time
        assert phases["grad_weights"]["gflops"] == pytest.approx(cost.grad_weight_flops * 8 / (TO_WEIGHTS + slow) / 1e9)
        assert phases["forward"]["flops"] == cost.forward_flops * 8
        if phases["grad_input"] is not None:
            assert phases["grad_input"]["flops"] == cost.grad_input_flops * 8
            assert phases["grad_input"]["gflops"] == pytest.approx(cost.grad_input_flops * 8 / TO_INPUT / 1e9)
        assert (layer["kind"], layer["in_shape"], layer["out_shape"]) == (cost.kind, list(cost.in_shape), list(cost.out_shape))
        assert layer["activation"] == next(i for i in model.spec.layers() if i.name == layer["name"]).layer.activation


def test_under_the_iwae_bound_the_decoder_layers_are_timed_at_batch_times_k_rows_and_counted_so():
    iwae = Objective("iwae", samples=3)
    model, clock = clocked("iwae-mlp", objective=iwae)  # the model's probes assert the rows each layer gets
    request = ex.ExplainRequest("clocked", "iwae-mlp", 8, rounds=2, window_seconds=0.01, objective="iwae", iw_samples=3)
    assert request.training_objective == iwae
    result = ex.measure_backend(model, request, clock=clock)
    costs = {c.name: c for c in layer_costs(model.spec)}
    for layer in result["layers"]:
        rows = 24 if layer["name"].startswith("decoder/") else 8
        assert layer["rows"] == rows, layer["name"]
        assert layer["phases"]["forward"]["flops"] == costs[layer["name"]].forward_flops * rows
    seen = []

    def run(req):
        seen.append(req)
        return {"backend": req.backend, "environment": {}, **result}

    doc = ex.explain(["a"], "iwae-mlp", 8, rounds=2, window_seconds=0.01, run=run, objective=iwae, log=lambda _: None)
    assert seen[0].training_objective == iwae and doc["costs"] == model_costs(model.spec, 8)
    assert doc["objective"] == {"objective": "iwae", "beta": 1.0, "iw_samples": 3, "text": "iwae (K=3)"}
    plain = ex.explain(["a"], "iwae-mlp", 8, rounds=2, window_seconds=0.01, run=run, log=lambda _: None)
    assert seen[1].training_objective == Objective() and plain["objective"]["text"] == "vae (beta 1)"


def test_the_delay_moves_with_the_phase_it_is_in():
    model, clock = clocked(slow_phase="forward")
    result = ex.measure_backend(model, ex.ExplainRequest("clocked", "conv", 8, rounds=2, window_seconds=0.01), clock=clock)
    slow = next(layer for layer in result["layers"] if layer["name"] == SLOW_LAYER)["phases"]
    # a slow forward pass: the forward cell carries it, and the gradients (differences from it) do not
    assert slow["forward"]["seconds"] == pytest.approx(FORWARD + SLOW_EXTRA)
    assert slow["grad_weights"]["seconds"] == pytest.approx(TO_WEIGHTS)
    assert slow["grad_input"]["seconds"] == pytest.approx(TO_INPUT)


def test_the_step_split_adds_up_by_its_rule():
    model, clock = clocked()
    result = ex.measure_backend(model, ex.ExplainRequest("clocked", "conv", 8, rounds=3, window_seconds=0.01), clock=clock)
    step = result["step"]
    assert step["step"]["seconds"] == pytest.approx(STEP_FORWARD + STEP_BACKWARD + STEP_OPTIMIZER)
    assert step["forward"]["seconds"] == pytest.approx(STEP_FORWARD)
    assert step["backward"]["seconds"] == pytest.approx(STEP_BACKWARD)
    assert step["optimizer"]["seconds"] == pytest.approx(STEP_OPTIMIZER)
    layers = result["layers"]
    forward = sum(layer["phases"]["forward"]["seconds"] for layer in layers)
    backward = sum(
        layer["phases"][p]["seconds"] for layer in layers for p in ("grad_input", "grad_weights") if layer["phases"][p]
    )
    assert step["layers_forward_seconds"] == pytest.approx(forward)
    assert step["layers_backward_seconds"] == pytest.approx(backward)
    remainder = step["step"]["seconds"] - forward - backward - STEP_OPTIMIZER
    assert step["remainder_seconds"] == pytest.approx(remainder)
    assert step["remainder_share"] == pytest.approx(remainder / step["step"]["seconds"])
    # the fake layers (and the 50 ms delay) far exceed the fake step: the table must say the parts do not add up
    assert abs(step["remainder_share"]) > ex.COVERAGE_TOLERANCE and "fusion across layers" in step["note"]


def test_summary_quartiles_resolution_and_gflops_by_hand():
    s = ex._summary([5.0, 1.0, 3.0, 2.0, 4.0], 6e9)
    assert (s["seconds"], s["q1"], s["q3"]) == (3.0, 2.0, 4.0) and s["resolved"] and s["gflops"] == 2.0
    one = ex._summary([2.0], 4e9)
    assert (one["seconds"], one["q1"], one["q3"], one["gflops"]) == (2.0, 2.0, 2.0, 2.0)
    two = ex._summary([1.0, 3.0], None)
    assert (two["q1"], two["q3"], two["gflops"]) == (1.5, 2.5, None)
    edge = ex._summary([0.0, 1.0, 2.0], 1e9)  # the lower quartile at exactly zero: not resolved
    assert edge["q1"] == 0.5 and ex._summary([-1.0, 0.0, 1.0, 2.0, 3.0], 1e9)["q1"] == 0.0
    assert not ex._summary([-1.0, 0.0, 1.0, 2.0, 3.0], 1e9)["resolved"]


def test_rounds_and_paired_differences_refuse_what_cannot_be():
    clock = FakeClock()
    with pytest.raises(ValueError, match="^rounds must be at least 1, got 0$"):
        ex.time_probes({"forward": lambda: clock.spend(1.0)}, rounds=0, window_seconds=1.0, clock=clock)
    assert ex.time_probes({"forward": lambda: clock.spend(1.0)}, rounds=1, window_seconds=1.0, clock=clock)["forward"][
        "seconds"
    ] == [1.0]
    with pytest.raises(ValueError, match="^a difference needs the same rounds on both sides$"):
        ex.difference([1.0, 2.0], [1.0])


def test_the_note_names_the_cause_and_the_boundary_is_within_tolerance():
    def split(layer_forward: float, step: float = 10.0):
        timed = {"step": {"seconds": [step]}, "forward": {"seconds": [3.0]}, "forward+backward": {"seconds": [8.0]}}
        layer = {"phases": {"forward": {"seconds": layer_forward}, "grad_input": None, "grad_weights": {"seconds": 4.0}}}
        return ex.step_split(timed, [layer])

    loss = "the per-layer times leave +35% of the step out: the loss, dispatch and host work"
    assert split(0.5)["note"] == loss  # remainder +35%
    small = {"step": {"seconds": [2.0]}, "forward": {"seconds": [0.6]}, "forward+backward": {"seconds": [1.6]}}
    layer = {"phases": {"forward": {"seconds": 0.2}, "grad_input": None, "grad_weights": {"seconds": 0.6}}}
    assert ex.step_split(small, [layer])["note"].endswith("+40% of the step out: the loss, dispatch and host work")
    assert split(1.5)["note"] is None  # +25% exactly: within the stated tolerance
    assert split(4.5)["note"] is None  # -5%: within
    assert (
        split(7.0)["note"]
        == "the per-layer times leave -30% of the step out: fusion across layers (the step costs less than them)"
    )
    zero = split(1.0, step=0.0)
    assert zero["remainder_share"] is None and zero["note"] == "the step took no time"

    timed = {"step": {"seconds": [10.0, 10.0]}, "forward": {"seconds": [3.0, 3.0]}, "forward+backward": {"seconds": [8.0, 8.0]}}
    layer = {"phases": {"forward": {"seconds": 2.5}, "grad_input": None, "grad_weights": {"seconds": 4.0}}}
    split = ex.step_split(timed, [layer])
    assert split["optimizer"]["seconds"] == 2.0 and split["backward"]["seconds"] == 5.0
    assert split["remainder_seconds"] == pytest.approx(10.0 - 2.5 - 4.0 - 2.0)  # 1.5 s: 15%, within 25%
    assert split["note"] is None
    layer["phases"]["forward"]["seconds"] = 0.5  # now 35% of the step is not in the layers
    assert "+35%" in ex.step_split(timed, [layer])["note"]


def test_windows_are_paired_per_round_and_rotated():
    clock, log = FakeClock(), []

    def probe(name, seconds):
        def call():
            log.append(name)
            clock.spend(seconds[min(len([n for n in log if n == name]) - 1, len(seconds) - 1)])

        return call

    # the second probe gets slower each round; its difference from the first must follow round by round
    probes = {"forward": probe("forward", [1.0] * 10), "forward+grad_weights": probe("forward+grad_weights", [1, 1, 2, 3, 4])}
    timed = ex.time_probes(probes, rounds=3, window_seconds=0.5, clock=clock)
    assert timed["forward+grad_weights"]["seconds"] == [2.0, 3.0, 4.0]
    assert ex.difference(timed["forward+grad_weights"]["seconds"], timed["forward"]["seconds"]) == [1.0, 2.0, 3.0]
    rounds = log[4:]  # after the compile and sizing calls
    assert rounds[:2] == ["forward", "forward+grad_weights"] and rounds[2:4] == ["forward+grad_weights", "forward"]
    with pytest.raises(ValueError):
        ex.difference([1.0], [1.0, 2.0])


def test_a_window_is_sized_from_the_sizing_call():
    clock, calls = FakeClock(), []

    def call():
        calls.append(1)
        clock.spend(0.01)

    timed = ex.time_probes({"forward": call}, rounds=2, window_seconds=0.1, clock=clock)
    assert timed["forward"]["steps"] == 10 and len(calls) == 2 + 2 * 10
    assert timed["forward"]["seconds"] == pytest.approx([0.01, 0.01])


def _backend(name, seconds):
    def cell(s):
        return None if s is None else ex._summary([s, s], 1e9)

    return {
        "backend": name,
        "layers": [{"name": "decoder/2", "phases": {p: cell(s) for p, s in zip(ex.PHASES, seconds, strict=True)}}],
    }


def test_slow_cells_are_flagged_against_the_fastest_backend_on_the_row():
    backends = [_backend("a", [1.0, 1.0, 10.0]), _backend("b", [2.0, None, 3.0]), _backend("c", [3.5, 3.0, 3.1])]
    flags = ex.flag_slow(backends)
    # c's gradient to the input is exactly 3x the fastest: flagged only when more than 3x
    assert {(f["backend"], f["phase"]) for f in flags} == {("a", "grad_weights"), ("c", "forward")}
    a = next(f for f in flags if f["backend"] == "a")
    assert a["times_fastest"] == pytest.approx(10.0 / 3.0)
    assert backends[1]["layers"][0]["phases"]["forward"]["vs_fastest"] == pytest.approx(2.0)
    # a backend without the phase (None) is skipped, and the backends after it on the row still get their factor
    assert backends[2]["layers"][0]["phases"]["grad_input"]["vs_fastest"] == pytest.approx(3.0)
    assert ex.flag_slow([]) == []


def test_a_difference_within_the_noise_is_neither_fast_nor_slow():
    noise = ex._summary([-0.5, 0.1, 0.2], 1e9)  # quartiles reach zero
    assert not noise["resolved"] and noise["gflops"] is None
    backends = [_backend("a", [1.0, 1.0, 10.0]), _backend("b", [1.0, 1.0, 1.0])]
    backends[1]["layers"][0]["phases"]["grad_weights"] = noise
    flags = ex.flag_slow(backends)
    assert flags == [] and noise["vs_fastest"] is None  # 10 s is not "slow" against a cell that measured nothing


def test_the_document_renders_with_flags_and_a_heat_map(tmp_path):
    from vaebench.report.explain import READS_SCHEMA, read_explain, table_lines, write_readable

    model, clock = clocked("mlp")
    result = ex.measure_backend(model, ex.ExplainRequest("clocked", "mlp", 8, rounds=2, window_seconds=0.01), clock=clock)
    other, clock2 = clocked("mlp")
    fast = ex.measure_backend(other, ex.ExplainRequest("clocked", "mlp", 8, rounds=2, window_seconds=0.01), clock=clock2)
    for layer in fast["layers"]:  # a second backend, 10x faster on every gradient to the weights
        cell = layer["phases"]["grad_weights"]
        cell["seconds"] /= 10
    docs = iter([{"backend": "slow|`x`", "environment": {}, **result}, {"backend": "fast", "environment": {}, **fast}])
    doc = ex.explain(["slow|`x`", "fast"], "mlp", 8, rounds=2, log=lambda _: None, run=lambda request: next(docs))
    assert READS_SCHEMA == ex.EXPLAIN_SCHEMA
    assert len(doc["flags"]) == len(result["layers"]) and {f["phase"] for f in doc["flags"]} == {"grad_weights"}
    path = ex.write_explain(doc, tmp_path)
    again = read_explain(path)
    text = "\n".join(table_lines(again))
    assert "10.0x the fastest" in text and "grad to weights" in text
    assert "slow\\|\\`x\\`" in text  # a name from a file cannot break the table
    md, png = write_readable(again, tmp_path)
    assert md.read_text().startswith("# Where the time goes: mlp, batch 8, fp32\n") and png.read_bytes()[:4] == b"\x89PNG"
    trained = {**again, "objective": {"objective": "iwae", "text": "iwae (K=3)"}}
    assert table_lines(trained)[0] == "# Where the time goes: mlp, batch 8, fp32, trained on iwae (K=3)"
    assert table_lines({**again, "objective": {"objective": "beta-vae", "text": "beta-vae (beta 4)"}})[0].endswith(
        "fp32, trained on beta-vae (beta 4)"
    )
    older = {k: v for k, v in again.items() if k != "objective"}  # a document from before --objective
    assert table_lines(older)[0] == table_lines(again)[0] == "# Where the time goes: mlp, batch 8, fp32"


def test_a_file_that_is_not_an_explain_document_is_one_error(tmp_path):
    from vaebench.errors import VaebenchError
    from vaebench.report.explain import read_explain

    (tmp_path / "explain.json").write_text(json.dumps({"kind": "bench"}))
    with pytest.raises(VaebenchError, match="not an explain.json"):
        read_explain(tmp_path / "explain.json")


@pytest.mark.parametrize("model_name", ["conv", "mlp"])
def test_torch_and_jax_probes_compute_the_same_products(model_name):
    pytest.importorskip("vaebench_torch")
    pytest.importorskip("vaebench_jax")
    from vaebench.plugin import registry

    spec = get_model(model_name).spec
    params = init_params(spec, 3)
    models = {}
    for name in ("torch", "jax"):
        backend = registry.load(name)[0](device="cpu")
        models[name] = backend.build(spec, __import__("vaebench.model.config", fromlist=["AdamConfig"]).AdamConfig())
        models[name].load_weights(params)
    gen = np.random.default_rng(0)
    for info in spec.layers():
        if not info.param_shapes:
            continue
        x = gen.random((4, *info.in_shape), dtype=np.float32)
        g = gen.standard_normal((4, *info.out_shape), dtype=np.float32)
        weights = {k: params[k] for k in info.param_shapes}
        out = {n: {k: fn() for k, fn in m.layer_probe(info, weights, x, g).items()} for n, m in models.items()}
        nhwc = (0, 2, 3, 1)
        t, j = out["torch"], out["jax"]
        y_t = t["forward"].detach().numpy()
        np.testing.assert_allclose(y_t.transpose(nhwc) if y_t.ndim == 4 else y_t, np.asarray(j["forward"]), rtol=1e-4, atol=1e-5)
        dx_t = t["forward+grad_input"][0].numpy()
        np.testing.assert_allclose(
            dx_t.transpose(nhwc) if dx_t.ndim == 4 else dx_t, np.asarray(j["forward+grad_input"]), rtol=1e-4, atol=1e-4
        )
        # gradients to the weights, both taken back to the canonical layout
        for which, model in models.items():
            grads = out[which]["forward+grad_weights"]
            if which == "torch":
                grads = {f"{info.name}/kernel": grads[0].numpy(), f"{info.name}/bias": grads[1].numpy()}
            else:
                grads = {k: np.asarray(v) for k, v in grads.items()}
            from vaebench.model.layouts import convert

            out[which]["canonical"] = convert(model._perms, grads, to_canonical=True)
        for key in weights:
            np.testing.assert_allclose(out["torch"]["canonical"][key], out["jax"]["canonical"][key], rtol=1e-3, atol=1e-3)


def test_the_command_writes_three_files_and_refuses_bad_input_in_one_line(tmp_path):
    pytest.importorskip("vaebench_torch")
    out = tmp_path / "ex"
    cmd = [sys.executable, "-m", "vaebench.cli", "explain", "--backends", "torch", "--model", "mlp", "--batch-size", "8"]
    fast = ["--rounds", "1", "--window-seconds", "0.001", "--threads", "1"]
    proc = subprocess.run([*cmd, *fast, "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "explain.json").read_text())
    assert doc["backends"][0]["backend"] == "torch" and doc["method"] == ex.METHOD and doc["precision"] == "fp32"
    assert [layer["name"] for layer in doc["backends"][0]["layers"]] == [c.name for c in layer_costs(get_model("mlp").spec)]
    assert (out / "explain.md").exists() and (out / "explain.png").exists() and "The step, split" in proc.stdout
    for bad, says in (
        (["--backends", "nope", "--out", str(tmp_path / "n")], "nope"),
        (["--out", "/proc/vaebench-explain"], "cannot write"),
        (["--batch-size", "0", "--out", str(tmp_path / "z")], "batch-size"),
    ):
        base = [sys.executable, "-m", "vaebench.cli", "explain", "--model", "mlp", *fast]
        proc = subprocess.run([*base, *bad], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_compare_puts_the_explain_document_in_the_report(tmp_path):
    from click.testing import CliRunner

    from vaebench.cli import cli

    model, clock = clocked("mlp")
    result = ex.measure_backend(model, ex.ExplainRequest("clocked", "mlp", 8, rounds=2, window_seconds=0.01), clock=clock)
    doc = ex.explain(
        ["torch"], "mlp", 8, rounds=2, log=lambda _: None, run=lambda r: {"backend": "torch", "environment": {}, **result}
    )
    doc["model"] = "../../evil<b>"  # a hostile name from a file: no path out of the report folder, no markup
    ex.write_explain(doc, tmp_path / "ex")
    out = CliRunner().invoke(cli, ["compare", str(tmp_path / "ex"), "--report", str(tmp_path / "rep")])
    assert out.exit_code == 0, out.output
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Where the time goes" in md and "grad to weights" in md and "whole step" in md
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("explain-*.png"))
    assert pngs == ["explain-.._.._evil_b_-b8.png"] and not list(tmp_path.glob("*.png"))
    assert "<b>" not in (tmp_path / "rep" / "report.html").read_text()


def test_the_report_keeps_one_figure_per_explain_document_of_one_cell_and_names_its_objective(tmp_path):
    from vaebench.report.page import write_report

    model, clock = clocked("mlp")
    result = ex.measure_backend(model, ex.ExplainRequest("clocked", "mlp", 8, rounds=2, window_seconds=0.01), clock=clock)

    def doc(objective: Objective) -> dict:
        run = lambda request: {"backend": "a", "environment": {}, **result}  # noqa: E731
        return ex.explain(["a"], "mlp", 8, rounds=2, log=lambda _: None, run=run, objective=objective)

    plain, iwae = doc(Objective()), doc(Objective("iwae", samples=3))
    entries = [{"kind": "explain", "doc": d} for d in (plain, iwae, plain)]  # the third: the first cell again
    md, _ = write_report(entries, [], tmp_path / "rep")
    assert sorted(p.name for p in (tmp_path / "rep").glob("explain-*.png")) == [
        "explain-mlp-b8-2.png",
        "explain-mlp-b8-iwae.png",
        "explain-mlp-b8.png",
    ]
    titles = [line for line in md.read_text().splitlines() if line.startswith("## Where the time goes")]
    plain_title = "## Where the time goes: mlp, batch 8"
    assert titles == [plain_title, f"{plain_title}, trained on iwae (K=3)", plain_title]
