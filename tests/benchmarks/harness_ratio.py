"""Plugin vs minimal hand-written loop of the same framework, side by side in one process.

    python tests/benchmarks/harness_ratio.py --backend jax --models mlp,conv,blog --batch-sizes 128,512

Both train the same model from the same canonical weights, cycling through
the same four batches, and each yardstick computes exactly the plugin's
function (tests/test_yardstick_loops.py), so the ratio prices the harness, not
another network. The plugin is fed exactly as ``vaebench bench`` and the
runner feed it (:func:`vaebench.measure.worker.staged_feed`: NumPy through the
contract, staged on the prefetch thread); the yardstick gets its batches
converted to framework tensors up front (its best case), so the ratio includes
the whole harness overhead.

Timed with bench's method (:func:`time_rounds`): each contender's first step
timed alone (the compile), one probe step sizing its windows to about
:data:`vaebench.measure.bench.WINDOW_SECONDS`, an untimed warm-up round, then
rounds of one window each in an order rotated every round
(:func:`vaebench.measure.interleave.order`). The ratio is the median of the
per-round paired ratios with its 95% bootstrap interval
(:func:`vaebench.measure.stats.ratio_interval`), and the cost of the harness
is stated in time: step-time overhead ``1/ratio - 1`` with that interval.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from vaebench.measure.bench import WINDOW_SECONDS
from vaebench.measure.documents import read_bench_doc, write_harness
from vaebench.measure.interleave import order
from vaebench.measure.stats import images_per_second, ratio_interval, summarize
from vaebench.measure.timing import Clock, Step, Sync, steps_for, timed_call, window
from vaebench.measure.worker import staged_feed, synthetic_batches
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.plugin.host import usable_cores

# backend -> (label, module, keyword arguments) of each hand-written yardstick; the ratio is to the fastest, so the
# plugin is held to the best of what an expert of its framework writes: jax's sub-pixel transposed convolutions
# (models that have them), torch.compile, TensorFlow with XLA, Keras' guide loops on its JAX and PyTorch engines
YARDSTICKS = {
    "jax": [("yardstick", "jax_yardstick", {}), ("flax-subpixel", "jax_yardstick", {"transpose": "subpixel"})],
    "torch": [("yardstick", "torch_yardstick", {}), ("torch-compile", "torch_yardstick", {"compile": True})],
    "keras": [("tf-graph", "keras_yardstick", {"xla": False}), ("tf-xla", "keras_yardstick", {"xla": True})],
    # Keras on JAX and on PyTorch: the training loops of Keras' own guides for those engines
    "keras-jax": [("keras-guide", "keras3_yardstick", {})],
    "keras-torch": [("keras-guide", "keras3_yardstick", {})],
}
PLUGIN = "plugin"


def applies(model_name: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether a yardstick exists for the model: the sub-pixel form only where the model has transposed convs."""
    return kwargs.get("transpose", "lax") == "lax" or model_name in importlib.import_module("jax_yardstick").TRANSPOSED


def bench_variants(path: Path) -> dict[tuple[str, str, int], tuple[bool, dict[str, str]]]:
    """``(backend, model, batch size) -> (compile, options)`` of every row of a bench.json: the variant each cell
    ran, so ``--variants-from results/bench-best/bench.json`` holds what ``--profile best`` picked to the yardsticks."""
    doc = read_bench_doc(Path(path))
    return {
        (r["backend"], r["model"], r["batch_size"]): (
            bool(r["settings"]["variant"]["compile"]),
            dict(r["settings"]["variant"]["options"]),
        )
        for r in doc["results"]
    }


def time_rounds(
    contenders: Mapping[str, tuple[Step, Sync]],
    batch_size: int,
    rounds: int,
    window_seconds: float = WINDOW_SECONDS,
    warmup_rounds: int = 1,
    clock: Clock = time.perf_counter,
) -> dict[str, dict[str, Any]]:
    """Bench's windowed, rotated, paired timing of ``name -> (step, sync)`` contenders sharing this process.

    Per contender: its first step timed alone (``compile_seconds``), then one probe step whose time sizes
    its windows to about ``window_seconds`` (:func:`~vaebench.measure.timing.steps_for`). ``warmup_rounds``
    untimed rounds follow (the first windows after a compile still pay for warm-up), then ``rounds``
    rounds of one window per contender, in the order :func:`~vaebench.measure.interleave.order` rotates by
    one every round, so neither going first nor drift lands on one contender. Returns per contender
    :func:`~vaebench.measure.stats.summarize` of its windows' images/s, plus ``compile_seconds``,
    ``probe_seconds``, ``steps_per_window`` and ``rounds`` (the windows by round, for paired ratios).
    """
    if rounds < 1:
        raise ValueError(f"time_rounds needs at least one round, got {rounds}")
    names = list(contenders)
    compiled = {name: timed_call(step, sync, clock) for name, (step, sync) in contenders.items()}
    probe = {name: timed_call(step, sync, clock) for name, (step, sync) in contenders.items()}
    steps = {name: steps_for(probe[name], window_seconds) for name in names}
    for _ in range(warmup_rounds):
        for name in names:
            window(*contenders[name], steps[name], clock)
    by_round: dict[str, list[list[float]]] = {name: [[] for _ in range(rounds)] for name in names}
    for r in range(rounds):
        for name in order(names, r):
            seconds = window(*contenders[name], steps[name], clock)
            by_round[name][r].append(images_per_second(batch_size, steps[name], seconds))
    return {
        name: {
            **summarize([v for windows in by_round[name] for v in windows]),
            "compile_seconds": compiled[name],
            "probe_seconds": probe[name],
            "steps_per_window": steps[name],
            "rounds": by_round[name],
        }
        for name in names
    }


def harness_ratio(results: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The plugin against the fastest yardstick, from :func:`time_rounds`' results, paired by round.

    The fastest yardstick is the one with the highest paired ratio to the plugin. ``ratio`` is the plugin's
    throughput over it (median of per-round ratios), ``ratio_low``/``ratio_high`` its 95% bootstrap interval;
    ``step_time_overhead`` is ``1/ratio - 1`` (a ratio of 0.6 is 67% more time per step, not 40%), its interval
    the ratio's mapped through it (the high ratio gives the low overhead).
    """
    plugin = results[PLUGIN]["rounds"]
    yardsticks = [name for name in results if name != PLUGIN]
    if not yardsticks:
        raise ValueError("harness_ratio needs at least one yardstick besides the plugin")
    best = max(yardsticks, key=lambda name: ratio_interval(results[name]["rounds"], plugin)[0])
    value, low, high = ratio_interval(plugin, results[best]["rounds"])
    return {
        "fastest_yardstick": best,
        "ratio": value,
        "ratio_low": low,
        "ratio_high": high,
        "step_time_overhead": {"value": 1 / value - 1, "low": 1 / high - 1, "high": 1 / low - 1},
        "method": (
            f"one process; windows of about {WINDOW_SECONDS:g} s sized per contender from a probe step; "
            "1 warm-up round; order rotated every round; ratio = median of per-round paired ratios, "
            "95% bootstrap interval over rounds"
        ),
    }


def compare(
    backend_name: str, model_name: str, batch_size: int, rounds: int, options: dict | None = None, compile: bool = False
) -> dict:
    """The plugin (``compile``, ``options``: its variant) and its framework's yardsticks timed by :func:`time_rounds`
    from the same weights; the row a harness document holds (:func:`vaebench.measure.documents.write_harness`)."""
    spec = get_model(model_name).spec
    batches = synthetic_batches(np.random.default_rng(0), batch_size, spec.latent_dim)
    params = init_params(spec, 0)
    backend_cls, _ = registry.load(backend_name)
    model = backend_cls(device="cpu", threads=usable_cores(), compile=compile, options=options).build(spec, AdamConfig())
    model.load_weights(params)
    with staged_feed(model, batches) as plugin:
        contenders = {PLUGIN: plugin}
        for label, module, kwargs in YARDSTICKS[backend_name]:
            if "xla" in kwargs and (options or {}).get("xla") in ("0", "1") and kwargs["xla"] != (options["xla"] == "1"):
                continue  # the plugin's XLA setting is fixed: hold it to the hand-written loop with the same setting
            if not applies(model_name, kwargs):
                continue
            contenders[label] = importlib.import_module(module).make_step(model_name, batches, params=params, **kwargs)
        results = time_rounds(contenders, batch_size, rounds)
    return {
        "backend": backend_name,
        "model": model_name,
        "batch_size": batch_size,
        "options": options or {},
        "compile": compile,
        "results": results,
        **harness_ratio(results),
    }


def _line(model_name: str, bs: int, name: str, r: dict, row: dict) -> str:
    text = f"{model_name:8s} {bs:5d}  {name:10s} {r['median']:10.0f} ({r['q1']:.0f}-{r['q3']:.0f}) {r['compile_seconds']:9.1f}"
    if name == PLUGIN:
        o = row["step_time_overhead"]
        text += (
            f"  {row['ratio']:.3f} [{row['ratio_low']:.3f}, {row['ratio_high']:.3f}]"
            f"  {100 * o['value']:+.1f}% [{100 * o['low']:+.1f}%, {100 * o['high']:+.1f}%]"
        )
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, choices=sorted(YARDSTICKS))
    parser.add_argument("--models", default="mlp,conv,conv-sym,blog")
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds (one window per contender each)")
    parser.add_argument(
        "--json",
        type=Path,
        help="also write a harness document here (`vaebench compare` and its report read it, merging documents)",
    )
    parser.add_argument("-o", "--option", action="append", default=[], help="plugin option KEY=VALUE")
    parser.add_argument("--compile", action="store_true", help="the plugin under its --compile")
    parser.add_argument(
        "--variants-from",
        type=Path,
        help="a bench.json: each cell's plugin runs the variant that bench's row ran (its -o and --compile)",
    )
    args = parser.parse_args()
    rows = []
    print(
        f"{'model':8s} {'batch':>5s}  {'contender':10s} {'img/s median (IQR)':>26s} {'compile s':>9s}"
        "  ratio [95%]  step-time overhead (1/ratio-1) [95%]"
    )
    options = dict(o.split("=", 1) for o in args.option)
    picked = bench_variants(args.variants_from) if args.variants_from else {}
    for model_name in args.models.split(","):
        for bs in map(int, args.batch_sizes.split(",")):
            compile, cell_options = picked.get((args.backend, model_name, bs), (args.compile, options))
            row = compare(args.backend, model_name, bs, args.rounds, cell_options, compile)
            for name, r in row["results"].items():
                print(_line(model_name, bs, name, r, row), flush=True)
            rows.append(row)
    if args.json:
        write_harness(rows, args.json)


if __name__ == "__main__":
    main()
