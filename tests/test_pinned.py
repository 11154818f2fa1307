"""Figures pinned to an independent computation, not to the code that produces them.

Each test recomputes a number users read by another route (float64 NumPy and
SciPy's densities for the IWAE bound, a fake device that counts the steps it
ran, a closed-form t distribution for TOST, a hand count for FLOPs) and fails
when the formula, the clock or the count behind the figure is wrong. These
tests are part of what ``nox -s mutation`` runs; each was checked against the
mutation named in its docstring (applied by hand, seen failing, reverted).
"""

from __future__ import annotations

import json
import math
import queue
import threading
from typing import Any, ClassVar

import numpy as np
import pytest
from scipy.stats import norm

from vaebench.measure import interleave, stats, ttq
from vaebench.measure import worker as worker_mod
from vaebench.measure.paritycheck import ELBO_RTOL, compare
from vaebench.model.batches import eval_batches, to_float
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.costs import layer_costs, model_costs
from vaebench.plugin import registry
from vaebench.plugin.numpy_backend import NumpyBackend, NumpyModel
from vaebench.run.evaluation import evaluate_split, full_evaluation, grid_points, iwae_nll, latent_statistics
from vaebench.seeding import rng
from vaebench.testing.kit import perturbed_params


# -- IWAE -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def numpy_model() -> NumpyModel:
    spec = get_model("mlp").spec.with_latent(3)
    params = perturbed_params("mlp", latent_dim=3)
    params["encoder/logvar/bias"] = params["encoder/logvar/bias"] - 1.5  # a posterior narrower than the prior, as trained
    model = NumpyModel(spec, AdamConfig())
    model.load_weights(params)
    return model


def _iwae_by_hand(model: NumpyModel, image: np.ndarray, eps: np.ndarray) -> float:
    """``-log (1/k) sum_k p(x|z_k) p(z_k) / q(z_k|x)`` in float64, the densities from SciPy."""
    k = len(eps)
    x = to_float(image[None])
    mean, logvar = (a[0].astype(np.float64) for a in model.encode(x))
    std = np.sqrt(np.exp(logvar))
    z = mean + std * eps
    log_px_given_z = -model.recon_nll(np.repeat(x, k, axis=0), z.astype(np.float32)).astype(np.float64)
    log_pz = norm.logpdf(z).sum(axis=1)
    log_qz = norm.logpdf(z, loc=mean, scale=std).sum(axis=1)
    log_w = log_px_given_z + log_pz - log_qz
    top = log_w.max()
    return -(top + math.log(np.mean(np.exp(log_w - top))))


@pytest.mark.parametrize("rows", [4096, 50])  # one call for all k samples; k split over calls (padded, wrapped)
def test_iwae_bound_of_each_image_matches_a_float64_recomputation(numpy_model, rows):
    """Kills: the bound without ``- log k``; ``log q`` without ``logvar``; noise drawn from another stream."""
    images = np.random.default_rng(1).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    k, seed = 64, 3
    got = iwae_nll(numpy_model, images, k, seed, rows=rows)
    eps = rng(seed, "iwae", k).standard_normal((len(images), k, 3))  # the evaluation's stream, image by image
    expected = [_iwae_by_hand(numpy_model, images[i], eps[i]) for i in range(len(images))]
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert got.dtype == np.float64


def test_kl_per_dimension_and_active_units_match_the_closed_form(numpy_model):
    images = np.random.default_rng(2).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    got = latent_statistics(numpy_model, images, batch_size=4)  # two chunks, the last one short
    mean, logvar = (a.astype(np.float64) for a in numpy_model.encode(to_float(images)))
    sigma2 = np.exp(logvar)
    kl = np.log(1 / np.sqrt(sigma2)) + (sigma2 + mean**2) / 2 - 0.5  # KL(N(m, s^2) || N(0, 1)) per dimension
    np.testing.assert_allclose(got["kl_per_dim"], kl.mean(axis=0), rtol=1e-9)
    variances = ((mean - mean.mean(axis=0)) ** 2).mean(axis=0)  # Var over images of E_q[z | x]
    np.testing.assert_allclose(got["au_variances"], variances, rtol=1e-9)
    assert got["active_units"] == int(np.sum(variances > 0.01)) and got["active_threshold"] == 0.01


def test_test_elbo_is_the_per_image_mean_over_every_chunk(numpy_model):
    images = np.random.default_rng(4).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    got = evaluate_split(numpy_model, images, batch_size=2, seed=7)  # chunks of 2, 2 and 1
    terms = [numpy_model.evaluate(b.x, b.eps) for b in eval_batches(images, 2, 3, 7)]
    per_image = [np.concatenate([t[i] for t in terms]).astype(np.float64) for i in range(3)]
    assert len(per_image[0]) == 5
    assert (got["neg_elbo"], got["recon"], got["kl"]) == tuple(pytest.approx(v.mean(), rel=1e-12) for v in per_image)
    assert got["neg_elbo"] == pytest.approx(got["recon"] + got["kl"], rel=1e-6)


def test_full_evaluation_reports_the_mean_nll_with_its_standard_error(numpy_model):
    images = np.random.default_rng(5).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    got = full_evaluation(numpy_model, images, k=8, seed=2, batch_size=2)
    nll = iwae_nll(numpy_model, images, 8, 2)
    sem = math.sqrt(sum((v - nll.mean()) ** 2 for v in nll) / (len(nll) - 1) / len(nll))
    assert got["test_nll"] == pytest.approx(nll.mean(), rel=1e-12) and got["test_nll_sem"] == pytest.approx(sem, rel=1e-9)
    assert got["iwae_k"] == 8 and got["seconds"] >= 0
    elbo = evaluate_split(numpy_model, images, 2, 2)
    assert (got["test_neg_elbo"], got["test_recon"], got["test_kl"]) == (elbo["neg_elbo"], elbo["recon"], elbo["kl"])
    assert got["active_units"] == latent_statistics(numpy_model, images, 2)["active_units"]
    one = full_evaluation(numpy_model, images[:1], k=8, seed=2, batch_size=2)
    assert one["test_nll_sem"] == 0.0  # one image: no spread to report


def test_the_2d_grid_is_equal_prior_mass_row_major_from_the_top_left():
    lo, hi = norm.ppf(0.01), norm.ppf(0.99)  # linspace(0.01, 0.99, 3) is 0.01, 0.5, 0.99
    expected = [[x, y] for y in (hi, 0.0, lo) for x in (lo, 0.0, hi)]  # z[0] grows rightwards, z[1] upwards
    got = grid_points(2, seed=0, n=3)
    assert got.dtype == np.float32 and got.shape == (9, 2)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(grid_points(2, 0)[[0, -1]], [[lo, hi], [hi, lo]], atol=1e-6)  # 20x20 by default
    prior = grid_points(5, seed=1, n=3)
    np.testing.assert_array_equal(prior, rng(1, "grid").standard_normal((9, 5), dtype=np.float32))


# -- bench: a fake device that counts the steps it ran --------------------------------------
class FakeDevice:
    """Steps queue work; the clock moves only when a result is waited on, by the work queued so far.

    Waiting on step n's result finishes steps 1..n, as ``block_until_ready`` or
    ``.item()`` do; waiting on anything else is a bug. ``seconds_per_step`` is
    the only source of time, so the device knows exactly what a window ran.
    """

    MAX_QUEUED = 1000  # a window that never waits would queue without end: fail fast instead

    def __init__(self, seconds_per_step: float) -> None:
        self.seconds_per_step = seconds_per_step
        self.now = 0.0
        self.queued = 0
        self.queued_seconds = 0.0
        self.steps = 0
        self.waits = 0

    def clock(self) -> float:
        return self.now

    def step(self, seconds: float | None = None) -> int:
        self.steps += 1
        self.queued += 1
        self.queued_seconds += self.seconds_per_step if seconds is None else seconds
        if self.queued > self.MAX_QUEUED:
            raise AssertionError("steps queued without end: nothing waits on the device")
        return self.steps

    def wait(self, values: Any) -> None:
        assert list(values) == [self.steps], f"waited on {values!r}, not on the last step's result"
        self.waits += 1
        self.now += self.queued_seconds
        self.queued, self.queued_seconds = 0, 0.0


class Staged:
    """What the fake device's ``stage`` hands to its step: a step given the raw batch instead fails."""

    def __init__(self, x: np.ndarray) -> None:
        self.x = x


def _device_backend(dev: FakeDevice, eval_seconds: float = 0.5, decode_seconds: float = 0.125) -> type:
    class DeviceModel(NumpyModel):
        step_seconds = dev.seconds_per_step

        def _stage(self, x: np.ndarray, eps: np.ndarray) -> tuple[Any, Any]:
            return Staged(x), eps

        def _train_step(self, x: Any, eps: Any) -> Any:
            assert isinstance(x, Staged), "the step was given an unstaged batch"
            return dev.step(self.step_seconds)  # a handle: the result is ready once the device has run the queue

        def _fetch(self, values: Any) -> np.ndarray:
            dev.wait(values)
            return np.zeros(len(values))

        def _evaluate(self, x: np.ndarray, eps: np.ndarray) -> tuple[np.ndarray, ...]:
            dev.now += eval_seconds
            return tuple(np.zeros(len(x)) for _ in range(3))

        def _decode(self, z: np.ndarray) -> np.ndarray:
            dev.now += decode_seconds
            return np.zeros((len(z), 28, 28, 1))

    class DeviceBackend(NumpyBackend):
        tunables: ClassVar[dict[str, tuple[str, ...]]] = {"compile": ("0", "1")}  # compiled: twice as fast

        def build(self, spec: Any, adam: AdamConfig) -> DeviceModel:
            model = DeviceModel(spec, adam)
            model.step_seconds = dev.seconds_per_step / (2 if self.compile else 1)
            return model

    return DeviceBackend


@pytest.fixture
def device_worker(monkeypatch):
    """A worker (:func:`vaebench.measure.worker.serve`) on a thread of this process, on a :class:`FakeDevice`."""
    info = registry.load("numpy")[1]
    made = []

    def start(seconds_per_step: float, profile: str = "default") -> tuple[FakeDevice, InProcessWorker]:
        dev = FakeDevice(seconds_per_step)
        monkeypatch.setattr(registry, "load", lambda name: (_device_backend(dev), info))
        w = InProcessWorker(worker_mod.CellRequest("numpy", "mlp", batch_size=16, threads=1, profile=profile), dev.clock)
        made.append(w)
        return dev, w

    yield start
    for w in made:
        w.close()


class InProcessWorker:
    """:class:`vaebench.measure.interleave.Channel` over ``serve`` on a thread: the protocol, no subprocess."""

    def __init__(self, request: worker_mod.CellRequest, clock: Any) -> None:
        self.commands: queue.Queue = queue.Queue()
        self.replies: queue.Queue = queue.Queue()
        outer = self

        class Replies:
            def write(self, text: str) -> None:
                if text.strip():
                    outer.replies.put(json.loads(text))

            def flush(self) -> None:
                pass

        def lines():
            while (line := self.commands.get()) is not None:
                yield line

        def serve() -> None:
            try:
                worker_mod.serve(request, lines(), Replies(), clock)
            except Exception:  # already answered as {"error": ...}
                pass

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def _read(self) -> dict[str, Any]:
        reply = self.replies.get(timeout=60)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def ready(self) -> dict[str, Any]:
        return self._read()

    def call(self, command: dict[str, Any]) -> dict[str, Any]:
        self.commands.put(json.dumps(command))
        return self._read()

    def pause(self) -> None:
        pass

    def resume(self) -> None:
        pass

    def close(self) -> None:
        self.commands.put(None)
        self.thread.join(timeout=10)


def test_bench_images_per_second_is_the_images_the_device_ran_over_the_time_it_took(device_worker):
    """Kills: a window that reports ``steps + 1`` steps, or runs one step more or less than it reports."""
    dev, w = device_worker(0.25)
    cell = interleave.run_cell({"numpy": w}, batch_size=16, rounds=3, settle=0, window_seconds=1.0, warmup_rounds=1)
    train = cell["numpy"]["train_images_per_second"]
    assert train["steps_per_window"] == 4  # probe 0.25 s a step, 1 s windows
    assert train["samples"] == [16 / 0.25] * 3  # 4 steps of 16 images in 1.0 s: exactly 64 images/s
    assert train["compile_seconds"] == 0.25
    # compile, one discarded, the probe, then four windows (one warm-up, three timed) of four steps each
    assert dev.steps == 3 + 4 * 4 and dev.queued == 0
    assert cell["numpy"]["ratio"]["text"] == "1"


def test_a_window_waits_for_the_device_before_reading_the_clock(device_worker):
    """Kills: the window's synchronisation replaced by a no-op (the clock would then time the queueing only)."""
    dev, w = device_worker(0.1)
    w.ready()
    assert w.call({"op": "compile"}) == {"compile_seconds": pytest.approx(0.1), "probe_seconds": pytest.approx(0.1)}
    before, waits = dev.now, dev.waits
    reply = w.call({"op": "window", "steps": 7})
    assert reply == {"seconds": pytest.approx(0.7), "steps": 7}
    assert dev.queued == 0 and dev.waits == waits + 1  # one wait, on the last of the seven steps, inside the window
    assert dev.now - before == pytest.approx(0.7)


def test_inference_timings_are_the_device_time_of_each_repeat_without_the_warm_up(device_worker):
    dev, w = device_worker(0.1)
    w.ready()
    got = w.call({"op": "inference", "repeats": 3})
    chunks = worker_mod.EVAL_IMAGES // worker_mod.EVAL_CHUNK
    assert got["eval_pass_seconds"] == {
        "median": pytest.approx(0.5 * chunks),
        "min": pytest.approx(0.5 * chunks),
        "max": pytest.approx(0.5 * chunks),
    }
    assert got["grid_decode_seconds"] == {"median": 0.125, "min": 0.125, "max": 0.125}
    assert dev.now == pytest.approx(4 * (0.5 * chunks + 0.125))  # a warm-up and three repeats of each


def test_tune_times_every_variant_on_the_device_and_keeps_the_fastest(device_worker):
    dev, w = device_worker(0.0625, profile="best")  # binary fractions: exact clock sums
    assert w.ready()["variants"] == 2
    got = w.call({"op": "tune", "windows": 3})
    plain, compiled = got["candidates"]  # --profile best: both values of the compile tunable
    assert got["choice"] == {"compile": True, "options": {}}  # the compiled variant steps twice as fast
    for c, per_step in ((plain, 0.0625), (compiled, 0.03125)):
        each = pytest.approx(16 / per_step)
        assert (c["median"], c["min"], c["max"], c["windows"]) == (each, each, each, 3) and "samples" not in c
        assert c["compile_seconds"] == pytest.approx(per_step)
    assert (plain["compile"], compiled["compile"], plain["label"]) == (False, True, "plugin defaults")
    # what best is worth: each candidate's paired ratio to the variant --profile default runs
    assert got["default"] == "plugin defaults"
    assert plain["vs_default"]["value"] == 1.0 and compiled["vs_default"]["value"] == pytest.approx(2.0)
    assert compiled["vs_default"]["low"] == pytest.approx(2.0) and compiled["vs_default"]["high"] == pytest.approx(2.0)
    steps = 16  # windows sized from the faster probe: 0.5 s of 0.03125 s steps
    # per variant: tune's compile call, measure's own first call (its only warm-up), three windows; one probe each
    assert dev.steps == 2 * (1 + 1 + 3 * steps) + 2 and dev.queued == 0


# -- TOST at its boundary -------------------------------------------------------------------
def _t2_sf(x: float) -> float:
    """Upper tail of Student's t with 2 degrees of freedom, in closed form: 1/2 - x / (2 sqrt(2 + x^2))."""
    return 0.5 - x / (2 * math.sqrt(2 + x * x))


@pytest.mark.parametrize("shift", [0.0, 0.05, -0.05])
def test_tost_p_between_alpha_and_twice_alpha_is_not_equivalence(shift):
    """Kills: TOST decided at ``p < 2 alpha`` (a 80% interval instead of 90%), and either one-sided test dropped."""
    b = {0: 100.0, 1: 100.0, 2: 100.0}
    a = {s: b[s] + shift + d for s, d in zip(b, (0.1, 0.0, -0.1), strict=True)}  # paired differences: sd 0.1, n 3
    se = 0.1 / math.sqrt(3)
    margin = abs(shift) + 0.14
    p = _t2_sf((margin - abs(shift)) / se)
    assert 0.05 <= p < 0.10
    got = stats.equivalence(a, b, margin=margin)
    assert got["method"] == "paired" and got["n"] == 3
    assert got["p_tost"] == pytest.approx(p, rel=1e-9)
    assert got["verdict"] == "inconclusive"  # the 95% interval still holds zero
    wider = stats.equivalence(a, b, margin=abs(shift) + 0.2)  # p = 0.037: now equivalence is shown
    assert wider["p_tost"] == pytest.approx(_t2_sf(0.2 / se), rel=1e-9) and wider["p_tost"] < 0.05
    assert wider["verdict"] == "equivalent"


# -- time to quality ------------------------------------------------------------------------
def test_time_to_quality_counts_the_data_load_and_the_build(tiny_dir, monkeypatch):
    """Kills: the clock started after the data load or after building the model; settings not passed on."""
    import resource

    from vaebench.io.datasets import load_dataset
    from vaebench.run import runner

    now = [1000.0]  # a clock that does not start at zero: seconds are differences, not readings
    built: list = []
    epochs: list = []
    data: list = []

    def slow_load(dataset: str, data_dir: str | None):
        now[0] += 100.0  # a slow disk: the first touch of the data
        data.append(load_dataset(dataset, tiny_dir))
        return data[-1]

    class SlowBuild(NumpyBackend):
        def build(self, spec, adam):
            now[0] += 10.0
            built.append((self, super().build(spec, adam)))
            return built[-1][1]

    real_epoch = runner.train_epoch

    def counted_epoch(model, images, cfg, epoch, *args):
        epochs.append((epoch, cfg))
        return real_epoch(model, images, cfg, epoch, *args)

    info = registry.load("numpy")[1]
    monkeypatch.setattr(registry, "load", lambda name: (SlowBuild, info))
    monkeypatch.setattr(runner, "train_epoch", counted_epoch)
    monkeypatch.setitem(ttq.TTQ_TARGETS, "mlp", 1e9)  # reached after the first epoch
    run = dict(seed=3, threads=1, data_dir=None, device="cpu", clock=lambda: now[0], load=slow_load)
    got = ttq.time_to_quality("numpy", "mlp", **run)
    assert got["epochs"] == 1 and got["seconds"] == 110.0
    assert (got["backend"], got["model"], got["seed"], got["target"]) == ("numpy", "mlp", 3, 1e9)
    assert got["peak_rss_mb"] == pytest.approx(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rel=5e-4)
    backend, model = built[0]
    assert (backend.device, backend.threads, backend.compile, backend.precision) == ("cpu", 1, False, "fp32")
    cfg = epochs[0][1]
    assert (cfg.backend, cfg.model, cfg.seed, cfg.threads, cfg.device, cfg.precision) == ("numpy", "mlp", 3, 1, "cpu", "fp32")
    assert got["test_neg_elbo"] == evaluate_split(model, data[0].test_images, cfg.eval_batch_size, 3)["neg_elbo"]
    monkeypatch.setitem(ttq.TTQ_TARGETS, "mlp", got["test_neg_elbo"])  # exactly the value reached: reached
    assert ttq.time_to_quality("numpy", "mlp", **run)["epochs"] == 1
    monkeypatch.setattr(ttq, "TTQ_MAX_EPOCHS", 2)
    monkeypatch.setitem(ttq.TTQ_TARGETS, "mlp", -1.0)  # never reached
    epochs.clear()
    never = ttq.time_to_quality("numpy", "mlp", **run)
    assert never["seconds"] is None and never["epochs"] is None and [e for e, _ in epochs] == [1, 2]


def test_run_ttq_yields_every_seed_then_a_summary_that_counts_those_that_reached(monkeypatch):
    seconds = {0: 30.0, 1: None, 2: 10.0, 3: 20.0}
    asked = []

    def fake(request):
        asked.append(request)
        return {"seed": request["seed"], "seconds": seconds[request["seed"]]}

    monkeypatch.setattr(ttq, "_in_subprocess", fake)
    log: list[str] = []
    out = list(ttq.run_ttq("numpy", "mlp", 4, log=log.append, threads=2, precision="fp32"))
    assert [r["seed"] for r in out[:4]] == [0, 1, 2, 3] and [r["seed"] for r in asked] == [0, 1, 2, 3]
    assert all(r["threads"] == 2 and r["model_name"] == "mlp" and r["backend"] == "numpy" for r in asked)
    unsaid = list(ttq.run_ttq("numpy", "mlp", 1))[-1]  # no precision given: the summary says the core's default
    assert unsaid["precision"] == "fp32"
    summary = out[4]
    assert summary["kind"] == "ttq" and summary["runs"] == out[:4] and summary["target"] == ttq.TTQ_TARGETS["mlp"]
    assert (summary["median"], summary["min"], summary["max"], summary["seeds"], summary["reached"]) == (20.0, 10.0, 30.0, 4, 3)
    assert log[1].endswith("seed 1: not reached") and log[0].endswith("seed 0: 30.0 s")
    assert (summary["backend"], summary["model"], summary["profile"], summary["precision"]) == ("numpy", "mlp", "default", "fp32")
    assert summary["variant"] == {"compile": False, "options": {}}
    compiled = list(ttq.run_ttq("numpy", "mlp", 1, compile=True, options={"a": "b"}, precision="tf32"))[-1]
    assert compiled["variant"] == {"compile": True, "options": {"a": "b"}} and compiled["precision"] == "tf32"


# -- parity: relative error per element ---------------------------------------------------
def _parity_result(neg_elbo: list[float], losses: list[float]) -> dict[str, np.ndarray]:
    return {
        "neg_elbo": np.array(neg_elbo),
        "grid": np.zeros((2, 28, 28, 1)),
        "losses": np.array(losses),
        "param/w": np.zeros(10, np.float32),
    }


def test_parity_is_relative_per_element_not_max_abs_over_max_magnitude():
    """Kills: ``max |a - b| / max |b|``, which lets a small value be wrong by far more than the tolerance."""
    a = _parity_result([500.0, 10.0], [500.0, 5.0])
    off_elbo = _parity_result([500.0, 10.01], [500.0, 5.0])  # 1e-3 relative on the second image
    (row,) = compare({"a": a, "b": off_elbo}, steps=1)
    assert 0.01 / 500.0 <= ELBO_RTOL  # what max-abs over max-magnitude would see: a pass
    assert row["elbo_rel"] == pytest.approx(0.01 / 10.01) and not row["ok"]
    off_loss = _parity_result([500.0, 10.0], [500.0, 5.001])  # 2e-4 relative on the second step's loss
    (row,) = compare({"a": a, "b": off_loss}, steps=1)
    assert row["loss_rel"] == pytest.approx(0.001 / 5.001) and not row["ok"]
    (row,) = compare({"a": a, "b": _parity_result([500.0, 10.0005], [500.0, 5.0002])}, steps=1)
    assert row["ok"]  # 5e-5 and 4e-5 relative: within 1e-4


# -- costs -------------------------------------------------------------------------------
def test_mlp_forward_flops_per_image_equal_a_hand_count_layer_by_layer():
    # 784 -> 400 (relu) -> mean 20, logvar 20 -> 400 (relu) -> 784: one multiply and one add per weight per image
    hand = {
        "encoder/1": 784 * 400,
        "encoder/mean": 400 * 20,
        "encoder/logvar": 400 * 20,
        "decoder/0": 20 * 400,
        "decoder/1": 400 * 784,
    }
    layers = {c.name: c for c in layer_costs(get_model("mlp").spec) if c.macs}
    assert {name: c.macs for name, c in layers.items()} == hand
    assert {name: c.forward_flops for name, c in layers.items()} == {n: 2 * m for n, m in hand.items()}
    assert model_costs(get_model("mlp").spec, 64)["total"]["forward_flops"] == 2 * 651_200 == 1_302_400
