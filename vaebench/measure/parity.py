"""Cross-backend parity: the same canonical weights, batches and noise in every backend.

Each backend runs in a process of its own (Keras fixes its engine per process)
and reports four things, which are then compared pairwise:

* ``neg_elbo``: per-example -ELBO of a fixed batch under the initial weights;
* ``grid``: the decoded 20x20 latent grid (pixel probabilities);
* ``losses``: the batch-mean -ELBO of each of ``steps`` Adam steps on fixed batches;
* ``params``: every parameter after those steps.

Tolerances (float32 arithmetic, different kernels and summation orders),
stated once, below, and read by the CLI and the tests: -ELBO and every step's
loss within :data:`ELBO_RTOL` relative; grid within :data:`GRID_ATOL` absolute;
parameters within :data:`PARAM_ATOL` absolute for all but a fraction
:data:`PARAM_OUTLIERS` of entries, and within ``steps * lr`` for all. The
loss trajectory is checked on its own: two backends whose losses part on the
way are not at parity even if their final weights happen to agree. The
``steps * lr`` bound is Adam's nature, not slack: Adam scales each coordinate's step
to about ``lr`` whatever its gradient's size, so a coordinate whose gradient is
float32 noise (a ReLU unit at its kink: measured here, PyTorch against XLA on
``conv``, one unit of the Dense-16 layer, 0.27% of all entries) moves by up to
``lr`` a step in one framework and not in another.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import BackendError
from vaebench.measure.paritycheck import compare
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.run.evaluation import grid_points
from vaebench.seeding import rng


def _batches(latent_dim: int, batch_size: int, seed: int, steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    gen = rng(seed, "parity")
    return [
        (gen.random((batch_size, 28, 28, 1), dtype=np.float32), gen.standard_normal((batch_size, latent_dim), dtype=np.float32))
        for _ in range(steps + 1)
    ]


def compute(backend: str, model_name: str, steps: int, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """One backend's side of the comparison (run it in a process of its own)."""
    spec = get_model(model_name).spec
    model = registry.load(backend)[0](device="cpu").build(spec, AdamConfig())
    model.load_weights(init_params(spec, seed))
    batches = _batches(spec.latent_dim, batch_size, seed, steps)
    out = {"neg_elbo": model.evaluate(*batches[0]).neg_elbo, "grid": model.decode(grid_points(spec.latent_dim, seed))}
    out["losses"] = model.fetch([model.train_step(x, eps) for x, eps in batches[1:]])
    out.update({f"param/{k}": v for k, v in model.export_weights().items()})
    return out


def _in_subprocess(backend: str, model_name: str, steps: int, batch_size: int) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.npz"
        proc = subprocess.run(
            [sys.executable, "-m", "vaebench.measure.parity", backend, model_name, str(steps), str(batch_size), str(target)],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            raise BackendError(f"parity run of {backend} failed: {lines[-1] if lines else proc.returncode}")
        with np.load(target) as data:
            return {k: data[k] for k in data.files}


def run_parity(backends: list[str], model_name: str, steps: int, batch_size: int, log: Any = print) -> list[dict[str, Any]]:
    """Compute every backend in its own process, then compare all pairs."""
    missing = [b for b in backends if b not in registry.installed()]
    if missing:
        registry.load(missing[0])  # raises the "not installed ... install with" error
    if len(backends) < 2:
        raise BackendError(f"parity needs two backends or more; installed: {', '.join(sorted(registry.installed()))}")
    results = {}
    for name in backends:
        log(f"running {name} ...")
        results[name] = _in_subprocess(name, model_name, steps, batch_size)
    return compare(results, steps)


def main() -> None:
    """Worker entry point: ``python -m vaebench.measure.parity BACKEND MODEL STEPS BATCH OUT.npz``."""
    backend, model_name, steps, batch_size, target = sys.argv[1:6]
    out = compute(backend, model_name, int(steps), int(batch_size))
    buffer = io.BytesIO()
    np.savez(buffer, **out)
    Path(target).write_bytes(buffer.getvalue())


if __name__ == "__main__":
    main()
