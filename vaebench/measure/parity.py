"""Cross-backend parity: the same canonical weights, batches and noise in every backend.

Each backend runs in a process of its own (Keras fixes its engine per process)
and reports four things, which are then compared pairwise:

* ``neg_elbo``: per-example -ELBO of a fixed batch under the initial weights;
* ``grid``: the decoded 20x20 latent grid (pixel probabilities);
* ``losses``: the batch-mean training objective of each of ``steps`` Adam steps on fixed batches
  (the -ELBO; ``--objective beta-vae`` or ``iwae`` trains, and so compares, that objective's steps);
* ``params``: every parameter after those steps.

Tolerances (float32 arithmetic, different kernels and summation orders),
stated once, below, and read by the CLI and the tests: -ELBO and every step's
loss within :data:`ELBO_RTOL` relative; grid within :data:`GRID_ATOL` absolute;
parameters within :data:`PARAM_ATOL` absolute for all but a fraction
:data:`PARAM_OUTLIERS` of entries (:data:`PARAM_OUTLIERS_IWAE` under the IWAE bound, whose float32 gradient is
less exact: :func:`~vaebench.measure.paritycheck.param_outliers`), and within ``steps * lr`` for all. The
loss trajectory is checked on its own: two backends whose losses part on the
way are not at parity even if their final weights happen to agree. The
``steps * lr`` bound is Adam's nature, not slack: Adam scales each coordinate's step
to about ``lr`` whatever its gradient's size, so a coordinate whose gradient is
float32 noise (a ReLU unit at its kink: measured here, PyTorch against XLA on
``conv``, one unit of the Dense-16 layer, 0.27% of all entries) moves by up to
``lr`` a step in one framework and not in another.

Variants: ``-o [BACKEND:]KEY=VALUE`` and ``--profile`` select the same variants
as ``bench`` does (:func:`~vaebench.plugin.profiles.variants`), so any variant a
bench row names can be checked here against the float64 reference. Under
``best`` every candidate of every backend is its own entry, named
``backend[options]``: a tuner may pick any of them, so every one must be at parity.

Objectives: ``--objective``, ``--beta`` and ``--iw-samples`` reach the spec as
``run``'s do (:meth:`~vaebench.model.layers.ModelSpec.with_objective`), and the
training noise takes the objective's shape (``(batch, K, latent)`` for the IWAE
bound); the first batch's -ELBO and the grid stay the plain ones, as a run's
evaluation does.
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import BackendError, ConfigError
from vaebench.measure.options import split_options
from vaebench.measure.paritycheck import compare
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.layers import ModelSpec
from vaebench.model.loss import PLAIN, Objective
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.plugin.profiles import PROFILES, Variant, levers_for, variants
from vaebench.run.evaluation import decode_points
from vaebench.seeding import rng


def _batches(
    latent_dim: int, batch_size: int, seed: int, steps: int, objective: Objective = PLAIN, vq: bool = False
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The evaluated batch (noise ``(batch, latent)``), then ``steps`` training batches with the objective's noise;
    a VQ model's (``vq``) draw none, so its images are the numbers the plain VAE's batches would hold."""
    gen = rng(seed, "parity")
    shapes = [(latent_dim,)] + [objective.noise_shape(latent_dim)] * steps  # the plain VAE's: the numbers it always drew
    shapes = [(0,)] * (steps + 1) if vq else shapes
    return [
        (gen.random((batch_size, 28, 28, 1), dtype=np.float32), gen.standard_normal((batch_size, *shape), dtype=np.float32))
        for shape in shapes
    ]


def compute(
    backend: str,
    model_name: str,
    steps: int,
    batch_size: int,
    seed: int = 0,
    compile: bool = False,
    options: Mapping[str, str] | None = None,
    device: str = "cpu",
    objective: Objective = PLAIN,
) -> dict[str, np.ndarray]:
    """One backend's side of the comparison (run it in a process of its own), as the variant ``compile``/``options``,
    on ``device`` (the NumPy reference is on the CPU whatever the others use), training on ``objective``."""
    spec = get_model(model_name).spec.with_objective(objective)
    backend_cls = registry.load(backend)[0]
    device = "cpu" if backend == "numpy" else device
    model = backend_cls(device=device, compile=compile, options=dict(options or {})).build(spec, AdamConfig())
    model.load_weights(init_params(spec, seed))
    batches = _batches(spec.latent_dim, batch_size, seed, steps, objective, vq=spec.quantizer is not None)
    out = {"neg_elbo": model.evaluate(*batches[0])[0], "grid": model.decode(decode_points(spec, seed))}
    out["losses"] = model.fetch([model.train_step(x, eps) for x, eps in batches[1:]])
    out.update({f"param/{k}": v for k, v in model.export_weights().items()})
    return out


def _in_subprocess(
    backend: str,
    model_name: str,
    steps: int,
    batch_size: int,
    variant: Variant | None = None,
    device: str = "cpu",
    objective: Objective = PLAIN,
) -> dict[str, np.ndarray]:
    chosen = {**(variant or Variant()).to_dict(), "device": device, "objective": dataclasses.asdict(objective)}
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "out.npz"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vaebench.measure.parity",
                backend,
                model_name,
                str(steps),
                str(batch_size),
                str(target),
                json.dumps(chosen),
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            raise BackendError(f"parity run of {backend} failed: {lines[-1] if lines else proc.returncode}")
        with np.load(target) as data:
            return {k: data[k] for k in data.files}


def entry_name(backend: str, variant: Variant) -> str:
    """``jax`` for the plugin's defaults, ``jax[transpose=subpixel]`` for a variant: the name in the table's pairs."""
    parts = (["compile"] if variant.compile else []) + [f"{k}={v}" for k, v in sorted(variant.options.items())]
    return f"{backend}[{','.join(parts)}]" if parts else backend


def check_options(per_backend: Mapping[str, Mapping[str, str]]) -> None:
    """Every option a known key with an allowed value, checked before any backend runs (one line, not minutes in)."""
    for name, options in per_backend.items():
        cls = registry.load(name)[0]
        for key, value in options.items():
            if key not in cls.option_defaults:
                known = ", ".join(sorted(cls.option_defaults)) or "none"
                raise ConfigError(f"-o {name}:{key}={value}: backend {name!r} has no option {key!r}; its options: {known}")
            allowed = cls.option_values.get(key)
            if allowed and value not in allowed:
                raise ConfigError(f"-o {name}:{key}={value}: {key} must be one of {', '.join(allowed)}")


def plan(
    backends: list[str], profile: str = "default", options: Mapping[str, str] | None = None, spec: ModelSpec | None = None
) -> list[tuple[str, str, Variant]]:
    """``(entry name, backend, variant)`` for every variant to check: one per backend under ``default``,
    every candidate :func:`~vaebench.plugin.profiles.variants` gives under ``best``; options routed as ``bench``
    routes them (:func:`~vaebench.measure.options.split_options`); a lever for a kind of layer ``spec`` lacks is not varied."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    per_backend = split_options(options or {}, backends)
    check_options(per_backend)
    out = []
    for name in backends:
        for v in variants(levers_for(registry.load(name)[0].tunables, spec), profile, False, per_backend[name]):
            out.append((entry_name(name, v), name, v))
    return out


def run_parity(
    backends: list[str],
    model_name: str,
    steps: int,
    batch_size: int,
    log: Any = print,
    profile: str = "default",
    options: Mapping[str, str] | None = None,
    device: str = "cpu",
    objective: Objective = PLAIN,
) -> list[dict[str, Any]]:
    """Compute every backend's variants (:func:`plan`), each in its own process, training on ``objective``, then
    compare all pairs."""
    missing = [b for b in backends if b not in registry.installed()]
    if missing:
        registry.load(missing[0])  # raises the "not installed ... install with" error
    if len(backends) < 2:
        raise BackendError(f"parity needs two backends or more; installed: {', '.join(sorted(registry.installed()))}")
    results, spec = {}, get_model(model_name).spec
    for entry, name, variant in plan(backends, profile, options, spec):
        log(f"running {entry} ...")
        results[entry] = _in_subprocess(name, model_name, steps, batch_size, variant, device, objective)
    return compare(results, steps, objective=parity_kind(spec, objective))


def parity_kind(spec: ModelSpec, objective: Objective) -> str:
    """What parity's tolerances are chosen by (:func:`~vaebench.measure.paritycheck.param_outliers`): the objective's
    name, or ``vq`` for a model with a vector-quantised bottleneck, whose codes flip at near-ties."""
    return "vq" if spec.quantizer is not None else objective.name


def main() -> None:
    """Worker entry point: ``python -m vaebench.measure.parity BACKEND MODEL STEPS BATCH OUT.npz [SETTINGS_JSON]``."""
    backend, model_name, steps, batch_size, target = sys.argv[1:6]
    variant = json.loads(sys.argv[6]) if len(sys.argv) > 6 else {}
    settings = {
        "compile": variant.get("compile", False),
        "options": variant.get("options"),
        "device": variant.get("device", "cpu"),
        "objective": Objective(**variant.get("objective", {})),
    }
    out = compute(backend, model_name, int(steps), int(batch_size), **settings)
    buffer = io.BytesIO()
    np.savez(buffer, **out)
    Path(target).write_bytes(buffer.getvalue())


if __name__ == "__main__":
    main()
