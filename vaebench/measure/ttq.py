"""Time to quality, in the manner of MLPerf: wall-clock seconds from the first touch of the data to a target test -ELBO.

Each (backend, model, seed) runs in a fresh process of its own, one at a time,
so every run pays its own start-up and carries only its own peak memory. Over
seeds the figure is the median with the *full* range (nothing is trimmed) and
how many seeds reached the target within :data:`TTQ_MAX_EPOCHS`.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from vaebench.errors import BackendError, ConfigError
from vaebench.measure.options import split_options
from vaebench.measure.stats import ttq_summary
from vaebench.plugin import registry

# Targets (test -ELBO, nats; [0, 1] targets, default batch sizes): reached by every backend
# within a few epochs on MNIST here (mlp: ~128 after one epoch; conv: ~192 after one, ~172 after
# two). conv's 200 is what one epoch reaches: at the default profile's ~320 images/s (jax) an
# epoch takes ~3 minutes, so a lower target would put 5 seeds x 5 backends x 2 profiles past hours.
TTQ_TARGETS = {"mlp": 120.0, "conv": 200.0, "blog": 200.0}
TTQ_MAX_EPOCHS = 10
DEFAULT_SEEDS = 5


def time_to_quality(
    backend: str,
    model_name: str,
    seed: int,
    threads: int,
    data_dir: str | None,
    device: str = "auto",
    precision: str = "fp32",
    compile: bool = False,
    options: dict[str, str] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    load: Callable[[str, str | None], Any] | None = None,
) -> dict[str, Any]:
    """Seconds from the first touch of the data until the test -ELBO first reaches the model's target.

    The clock starts before the data set is read and includes building the
    model, compiling, every epoch and every evaluation. ``seconds`` is ``None``
    when the target is not reached within :data:`TTQ_MAX_EPOCHS`. ``clock`` and
    ``load`` (``(dataset, data_dir) -> Dataset``, by default
    :func:`vaebench.io.datasets.load_dataset`) are parameters so a test can
    prove, with a fake clock and a slow stub loader, that the data load is
    inside the figure.
    """
    from vaebench.io.datasets import load_dataset
    from vaebench.model.config import TrainConfig
    from vaebench.model.weights import init_params
    from vaebench.run.evaluation import evaluate_split
    from vaebench.run.runner import train_epoch
    from vaebench.run.signals import StopFlag

    t0 = clock()
    cfg = TrainConfig(
        backend=backend,
        model=model_name,
        seed=seed,
        threads=threads,
        device=device,
        precision=precision,
        compile=compile,
        options=dict(options or {}),
    ).resolved()
    data = (load or load_dataset)(cfg.dataset, data_dir)
    be = registry.load(backend)[0](device=device, threads=threads, compile=compile, options=cfg.options, precision=precision)
    model = be.build(cfg.spec, cfg.adam)
    model.load_weights(init_params(cfg.spec, seed))
    timing: dict = {"first_step_seconds": None}
    target = TTQ_TARGETS[model_name]
    result: dict[str, Any] = {
        "backend": backend,
        "model": model_name,
        "seed": seed,
        "target": target,
        "epochs": None,
        "seconds": None,
    }
    for epoch in range(1, TTQ_MAX_EPOCHS + 1):
        train_epoch(model, data.train_images, cfg, epoch, timing, False, StopFlag())
        result["test_neg_elbo"] = evaluate_split(model, data.test_images, cfg.eval_batch_size, seed)["neg_elbo"]
        if result["test_neg_elbo"] <= target:
            result.update(epochs=epoch, seconds=clock() - t0)
            break
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def _in_subprocess(request: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryFile("w+") as errors:
        proc = subprocess.run(
            [sys.executable, "-m", "vaebench.measure.ttq", json.dumps(request)], stdout=subprocess.PIPE, stderr=errors, text=True
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            errors.seek(0)
            last = [ln for ln in errors.read().strip().splitlines() if ln.strip()]
            raise BackendError(f"time to quality of {request['backend']} failed: {last[-1] if last else proc.returncode}")
    return json.loads(lines[-1])


def ttq_batch_size(model_name: str) -> int:
    """The batch size time to quality trains ``model_name`` at: the model's own default, as ``vaebench run`` would."""
    from vaebench.model.catalogue import get_model

    return get_model(model_name).batch_size


def picked_variants(
    rows: list[dict[str, Any]], backends: list[str], models: list[str], where: str
) -> dict[tuple[str, str], dict[str, Any]]:
    """``--profile best``: each (backend, model)'s variant as a best bench picked it at :func:`ttq_batch_size`.

    Time to quality under ``best`` trains what the tuner kept for that cell
    (its tuning windows are not inside the clock; they are the bench's). A
    (backend, model) the rows do not hold at that batch size, or rows of
    another profile, is a :class:`ConfigError` naming ``where`` they came from.
    """
    picked: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        if r.get("settings", {}).get("profile") == "best" and r["batch_size"] == ttq_batch_size(r["model"]):
            variant = r["settings"].get("variant") or {}
            picked[(r["backend"], r["model"])] = {
                "compile": bool(variant.get("compile")),
                "options": dict(variant.get("options") or {}),
            }
    missing = [f"{b} {m} at batch {ttq_batch_size(m)}" for m in models for b in backends if (b, m) not in picked]
    if missing:
        raise ConfigError(
            f"--profile best times to quality the variant a best bench picked; {where} has none for {', '.join(missing)}"
        )
    return {k: v for k, v in picked.items() if k[0] in backends and k[1] in models}


def run_ttq(
    backend: str,
    model_name: str,
    seeds: int,
    log: Callable[[str], None] | None = None,
    profile: str = "default",
    **settings: Any,
) -> Iterator[dict[str, Any]]:
    """Yield each seed's run (a fresh process each), then the summary entry (``kind: ttq``), which names ``profile``."""
    runs = []
    for seed in range(seeds):
        run = _in_subprocess({"backend": backend, "model_name": model_name, "seed": seed, **settings})
        runs.append(run)
        if log:
            shown = f"{run['seconds']:.1f} s" if run["seconds"] is not None else "not reached"
            log(f"time to quality {backend} {model_name} seed {seed}: {shown}")
        yield run
    yield {
        "kind": "ttq",
        "backend": backend,
        "model": model_name,
        "target": TTQ_TARGETS[model_name],
        "profile": profile,
        "precision": settings.get("precision", "fp32"),
        "variant": {"compile": bool(settings.get("compile")), "options": dict(settings.get("options") or {})},
        "runs": runs,
        **ttq_summary([r["seconds"] for r in runs]),
    }


def run_ttq_grid(
    backends: list[str],
    models: list[str],
    seeds: int,
    threads: int,
    data_dir: str | None,
    device: str = "auto",
    precision: str = "fp32",
    compile: bool = False,
    options: Mapping[str, str] | None = None,
    log: Callable[[str], None] | None = None,
    profile: str = "default",
    variants: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """``bench --ttq-models``: the summary entry of every (model, backend), models outer, after the matrix.

    ``options`` are routed as the matrix routes them (``[BACKEND:]KEY=VALUE``,
    :func:`~vaebench.measure.options.split_options`), and ``compile`` applies
    only to backends that have it, so one bench command means the same variant
    in its matrix and in its time to quality. Each seed's own run stays inside
    its summary's ``runs``. ``variants`` (``profile="best"``, :func:`picked_variants`)
    replaces both for each (backend, model) it holds with the variant a best bench kept.
    """
    per_backend = split_options(options or {}, backends)
    entries = []
    for model in models:
        for b in backends:
            settings = {"threads": threads, "data_dir": data_dir, "device": device, "precision": precision}
            settings.update(compile=compile and "compile" in registry.load(b)[0].tunables, options=per_backend[b])
            settings.update((variants or {}).get((b, model), {}))
            entries += [e for e in run_ttq(b, model, seeds, log=log, profile=profile, **settings) if e.get("kind") == "ttq"]
    return entries


def main() -> None:
    """``python -m vaebench.measure.ttq '<JSON keyword arguments of time_to_quality>'``."""
    print(json.dumps(time_to_quality(**json.loads(sys.argv[1]))), flush=True)


if __name__ == "__main__":
    main()
