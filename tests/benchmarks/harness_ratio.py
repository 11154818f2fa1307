"""Plugin vs minimal hand-written loop of the same framework, side by side in one process.

    python tests/benchmarks/harness_ratio.py --backend jax --models mlp,blog --batch-sizes 128,512

Both train the same model, cycling through the same four batches; windows
are interleaved (:func:`vaebench.measure.timing.measure`). The plugin is fed exactly
as ``vaebench bench`` and the runner feed it (:func:`vaebench.measure.worker.staged_feed`:
NumPy through the contract, staged on the prefetch thread); the yardstick gets
its batches converted to framework tensors up front (its best case), so the
ratio includes the whole harness overhead.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from vaebench.measure.documents import write_harness
from vaebench.measure.timing import measure
from vaebench.measure.worker import staged_feed, synthetic_batches
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.weights import init_params
from vaebench.plugin import registry

# backend -> (label, module, keyword arguments) of each hand-written yardstick; the ratio is to the fastest.
YARDSTICKS = {
    "jax": [("yardstick", "jax_yardstick", {})],
    "torch": [("yardstick", "torch_yardstick", {})],
    "keras": [("tf-graph", "keras_yardstick", {"xla": False}), ("tf-xla", "keras_yardstick", {"xla": True})],
}


# steps per window: about half a second on a 2-core CPU for the slowest contender of each model
STEPS = {"mlp": 40, "conv": 4, "conv-sym": 4, "blog": 2}


def compare(backend_name: str, model_name: str, batch_size: int, windows: int, steps: int, options: dict | None = None) -> dict:
    """Interleaved timings of the plugin and the yardstick loop; returns both summaries and the ratio."""
    spec = get_model(model_name).spec
    batches = synthetic_batches(np.random.default_rng(0), batch_size, spec.latent_dim)
    backend_cls, _ = registry.load(backend_name)
    model = backend_cls(device="cpu", options=options).build(spec, AdamConfig())
    model.load_weights(init_params(spec, 0))
    with staged_feed(model, batches) as plugin:
        contenders = {"plugin": plugin}
        for label, module, kwargs in YARDSTICKS[backend_name]:
            if "xla" in kwargs and (options or {}).get("xla") in ("0", "1") and kwargs["xla"] != (options["xla"] == "1"):
                continue  # the plugin's XLA setting is fixed: hold it to the hand-written loop with the same setting
            contenders[label] = importlib.import_module(module).make_step(model_name, batches, **kwargs)
        results = {name: r.summary() for name, r in measure(contenders, batch_size, windows=windows, steps=steps).items()}
    best = max((name for name in results if name != "plugin"), key=lambda name: results[name]["median"])
    return {
        "backend": backend_name,
        "model": model_name,
        "batch_size": batch_size,
        "options": options or {},
        "results": results,
        "fastest_yardstick": best,
        "ratio": results["plugin"]["median"] / results[best]["median"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, choices=sorted(YARDSTICKS))
    parser.add_argument("--models", default="mlp,conv,blog")
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument(
        "--json",
        type=Path,
        help="also write a harness document here (`vaebench compare` and its report read it, merging documents)",
    )
    parser.add_argument("-o", "--option", action="append", default=[], help="plugin option KEY=VALUE")
    args = parser.parse_args()
    rows = []
    print(f"{'model':6s} {'batch':>5s}  {'contender':10s} {'img/s median (IQR)':>26s} {'compile s':>9s}  ratio")
    for model_name in args.models.split(","):
        for bs in map(int, args.batch_sizes.split(",")):
            steps = STEPS[model_name]
            options = dict(o.split("=", 1) for o in args.option)
            row = compare(args.backend, model_name, bs, args.windows, steps, options)
            for name, r in row["results"].items():
                ratio = f"{r['median'] / row['results'][row['fastest_yardstick']]['median']:.3f}"
                print(
                    f"{model_name:6s} {bs:5d}  {name:10s} {r['median']:10.0f} ({r['q1']:.0f}-{r['q3']:.0f}) "
                    f"{r['compile_seconds']:9.1f}  {ratio}",
                    flush=True,
                )
            rows.append(row)
    if args.json:
        write_harness(rows, args.json)


if __name__ == "__main__":
    main()
