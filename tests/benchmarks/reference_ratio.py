"""Plugin vs minimal hand-written loop of the same framework, side by side in one process.

    python tests/benchmarks/reference_ratio.py --backend jax --models mlp,seed --batch-sizes 128,512

Both train the same model on the same fixed batch; windows are interleaved
(:func:`vaebench.timing.measure`). The plugin is fed NumPy batches through the
contract, as the runner feeds it; the reference gets its batch already on the
device (its best case), so the ratio includes the whole harness overhead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from vaebench import registry
from vaebench.spec import AdamConfig, get_model
from vaebench.timing import measure
from vaebench.weights import init_params

REFERENCES = {"jax": "jax_reference", "torch": "torch_reference"}


def compare(backend_name: str, model_name: str, batch_size: int, windows: int, steps: int) -> dict:
    """Interleaved timings of the plugin and the reference loop; returns both summaries and the ratio."""
    gen = np.random.default_rng(0)
    spec = get_model(model_name).spec
    x = gen.random((batch_size, 28, 28, 1), dtype=np.float32)
    eps = gen.standard_normal((batch_size, spec.latent_dim), dtype=np.float32)
    backend_cls, _ = registry.load(backend_name)
    model = backend_cls(device="cpu").build(spec, AdamConfig())
    model.load_weights(init_params(spec, 0))
    reference = importlib.import_module(REFERENCES[backend_name]).make_step(model_name, x, eps)
    results = measure(
        {"plugin": (lambda: model.train_step(x, eps), lambda out: model.fetch([out])), "reference": reference},
        batch_size,
        windows=windows,
        steps=steps,
    )
    plugin, ref = results["plugin"].summary(), results["reference"].summary()
    return {
        "backend": backend_name,
        "model": model_name,
        "batch_size": batch_size,
        "plugin": plugin,
        "reference": ref,
        "ratio": plugin["median"] / ref["median"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", required=True, choices=sorted(REFERENCES))
    parser.add_argument("--models", default="mlp,seed")
    parser.add_argument("--batch-sizes", default="128,512")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    print(
        f"{'model':6s} {'batch':>5s} {'plugin img/s (IQR)':>26s} {'reference img/s (IQR)':>26s} {'ratio':>6s} {'compile s':>10s}"
    )
    for model_name in args.models.split(","):
        for bs in map(int, args.batch_sizes.split(",")):
            steps = 40 if model_name == "mlp" else 2
            row = compare(args.backend, model_name, bs, args.windows, steps)
            p, r = row["plugin"], row["reference"]
            print(
                f"{model_name:6s} {bs:5d} {p['median']:10.0f} ({p['q1']:.0f}-{p['q3']:.0f}) {r['median']:10.0f} "
                f"({r['q1']:.0f}-{r['q3']:.0f}) {row['ratio']:6.3f} {p['compile_seconds']:5.1f}/{r['compile_seconds']:.1f}",
                flush=True,
            )
            rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
