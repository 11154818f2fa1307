"""Where the time goes: every layer's forward pass and both backward products, timed per backend.

Why: bench says how fast a backend trains a model, not why. A training step
is a sum of matrix products (each layer's forward pass, its gradient to the
input, its gradient to the weights), the loss, the optimizer and whatever the
framework does between them. Timing each product alone, on every backend,
points at the one that is slow (XLA CPU's transposed-convolution weight
gradient, for one) and says how much of the step it costs.

Method (recorded in every ``explain.json`` as :data:`METHOD`):

* One process per backend, one after another (frameworks set their own
  thread pools; Keras fixes its engine per process). In that process, each
  layer's three probes (:data:`vaebench.plugin.contract.LAYER_PROBES`) are
  timed together: each probe's first call is timed alone (``compile_seconds``),
  a second sizes its window (about ``window_seconds``), then ``rounds``
  rounds time one window of each probe, the order rotated every round.
* A gradient's time is a **difference**: forward-then-gradient minus forward,
  per round (the two windows of one round are paired), median over rounds.
  Every framework computes a gradient from its forward pass, and timing a
  backward product without the forward it reads is not possible in all of
  them (a ``tf.function`` cannot keep a tape between calls), so every backend
  is timed the same way.
* The whole step is split the same way: ``forward`` (the loss alone),
  ``backward`` (loss and gradients, minus forward), ``optimizer`` (the
  training step as bench times it, minus loss and gradients). The layers'
  products are then set against it: what the per-layer times do not cover is
  the ``remainder`` (the loss, reparameterisation, dispatch and host work,
  and what fusing layers saves). When the remainder is more than
  :data:`COVERAGE_TOLERANCE` of the step, the table says so.
* Achieved GFLOP/s divide :mod:`vaebench.model.costs`' count (its convention
  is recorded) by the median time. A cell more than :data:`SLOW_FACTOR` times
  slower than the fastest backend on the same layer and phase is flagged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.errors import BackendError
from vaebench.io.fileio import atomic_write_json, read_json
from vaebench.measure.interleave import order
from vaebench.measure.timing import Clock, steps_for
from vaebench.measure.worker import staged_feed, synthetic_batches
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.costs import CONVENTION, PHASES, layer_costs, model_costs, passes
from vaebench.model.loss import PLAIN, Objective
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.plugin.contract import Model

EXPLAIN_SCHEMA = 1
STEP_PARTS = ("forward", "backward", "optimizer")
SLOW_FACTOR = 3.0
COVERAGE_TOLERANCE = 0.25
METHOD = (
    "one process per backend, in turn; in it each layer's probes (forward; forward then gradient to the input; forward "
    "then gradient to the weights) are timed in rotated rounds of one window each, after a compile call and a sizing call; "
    "a gradient's time = (forward+gradient) - forward, paired per round, median over rounds (q1-q3 over rounds shown); "
    "step split: forward = the loss alone, backward = loss and gradients - forward, optimizer = the training step "
    "(bench's staged feed) - loss and gradients; remainder = step - (layers' forward + layers' gradients + optimizer)"
)


@dataclass
class ExplainRequest:
    """What one backend's process measures (JSON on its command line)."""

    backend: str
    model: str
    batch_size: int
    rounds: int = 5
    window_seconds: float = 0.25
    threads: int | None = None
    device: str = "cpu"
    options: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    seed: int = 0
    objective: str = "vae"  # what the step trains on, in the run's flags' names (--objective, --beta, --iw-samples)
    beta: float = 1.0
    iw_samples: int = 1

    @property
    def training_objective(self) -> Objective:
        """The objective the step minimises: under the IWAE bound the decoder's layers are timed at ``batch * K``."""
        return Objective(self.objective, self.beta, self.iw_samples)


def time_probes(
    probes: Mapping[str, Callable[[], Any]], rounds: int, window_seconds: float, clock: Clock = time.perf_counter
) -> dict[str, dict[str, Any]]:
    """Each probe's compile time, steps per window and seconds per call in each round (rotated order).

    A probe blocks until its result is ready, so a window is ``steps`` calls
    between two clock reads, with nothing else to wait for.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    out: dict[str, dict[str, Any]] = {}
    for name, probe in probes.items():
        t0 = clock()
        probe()
        t1 = clock()
        probe()
        t2 = clock()
        out[name] = {"compile_seconds": t1 - t0, "steps": steps_for(t2 - t1, window_seconds), "seconds": []}
    names = list(probes)
    for r in range(rounds):
        for name in order(names, r):
            steps = out[name]["steps"]
            t0 = clock()
            for _ in range(steps):
                probes[name]()
            out[name]["seconds"].append((clock() - t0) / steps)
    return out


def _summary(per_round: list[float], flops: float | None) -> dict[str, Any]:
    """Median and quartiles over rounds of seconds per call, with GFLOP/s at the median when the count applies.

    ``resolved`` is whether the lower quartile is above zero: a difference of
    two windows whose quartiles reach zero is within the noise, so it gets no
    GFLOP/s and is never called slow or fast.
    """
    median = statistics.median(per_round)
    q = statistics.quantiles(per_round, n=4, method="inclusive") if len(per_round) > 1 else [median] * 3
    resolved = q[0] > 0
    gflops = flops / median / 1e9 if flops is not None and resolved else None
    summary = {"seconds": median, "q1": q[0], "q3": q[2], "rounds": per_round, "resolved": resolved}
    return {**summary, "flops": flops, "gflops": gflops}


def difference(with_part: list[float], without: list[float]) -> list[float]:
    """Per-round time of a part: the window with it minus the paired window without it."""
    if len(with_part) != len(without):
        raise ValueError("a difference needs the same rounds on both sides")
    return [a - b for a, b in zip(with_part, without, strict=True)]


def layer_phases(timed: Mapping[str, Mapping[str, Any]], flops: Mapping[str, float], needs_input_grad: bool) -> dict[str, Any]:
    """The three phases of one layer from its timed probes; ``grad_input`` is ``None`` where no step computes it."""
    forward = timed["forward"]["seconds"]
    phases: dict[str, Any] = {"forward": _summary(forward, flops["forward"])}
    phases["grad_input"] = (
        _summary(difference(timed["forward+grad_input"]["seconds"], forward), flops["grad_input"]) if needs_input_grad else None
    )
    phases["grad_weights"] = _summary(difference(timed["forward+grad_weights"]["seconds"], forward), flops["grad_weights"])
    return phases


def step_split(timed: Mapping[str, Mapping[str, Any]], layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The step as forward, backward and optimizer, and what the per-layer times leave of it.

    ``timed`` holds the probes ``step``, ``forward`` and ``forward+backward``;
    ``layers`` the per-layer phases. ``remainder`` is the step's median minus
    the layers' forward, the layers' gradients and the optimizer: the loss,
    dispatch and host work (positive), or fusion across layers (negative).
    """
    step, fwd, fwdbwd = (timed[k]["seconds"] for k in ("step", "forward", "forward+backward"))
    parts = {
        "step": _summary(step, None),
        "forward": _summary(fwd, None),
        "backward": _summary(difference(fwdbwd, fwd), None),
        "optimizer": _summary(difference(step, fwdbwd), None),
    }

    def total(phase: str) -> float:
        return sum(layer["phases"][phase]["seconds"] for layer in layers if layer["phases"][phase] is not None)

    layers_forward = total("forward")
    layers_backward = total("grad_input") + total("grad_weights")
    step_s = parts["step"]["seconds"]
    remainder = step_s - layers_forward - layers_backward - parts["optimizer"]["seconds"]
    share = remainder / step_s if step_s > 0 else None
    what = "the loss, dispatch and host work" if remainder > 0 else "fusion across layers (the step costs less than them)"
    note = None
    if share is None or abs(share) > COVERAGE_TOLERANCE:
        note = "the step took no time" if share is None else f"the per-layer times leave {share:+.0%} of the step out: {what}"
    return {
        **parts,
        "layers_forward_seconds": layers_forward,
        "layers_backward_seconds": layers_backward,
        "remainder_seconds": remainder,
        "remainder_share": share,
        "tolerance": COVERAGE_TOLERANCE,
        "note": note,
    }


def measure_backend(model: Model, request: ExplainRequest, clock: Clock = time.perf_counter) -> dict[str, Any]:
    """Every layer's phases and the step split of ``model`` (weights loaded) at ``request.batch_size``."""
    spec, batch = model.spec, request.batch_size
    gen = np.random.default_rng(request.seed)
    params = model.export_weights()
    costs = {c.name: c for c in layer_costs(spec)}
    layers = []
    for info in spec.layers():
        if info.name not in costs or costs[info.name].kind == "quantizer":
            continue  # flatten and reshape: no work; a VQ quantizer is no layer a plugin runs alone: in the remainder
        cost, rows = costs[info.name], batch * passes(spec, info.name)  # the IWAE step decodes batch * K latents
        x = gen.random((rows, *info.in_shape), dtype=np.float32)
        g = gen.standard_normal((rows, *info.out_shape), dtype=np.float32)
        probes = model.layer_probe(info, {k: params[k] for k in info.param_shapes}, x, g)
        needs_input_grad = cost.grad_input_flops > 0
        if not needs_input_grad:
            probes.pop("forward+grad_input")
        timed = time_probes(probes, request.rounds, request.window_seconds, clock)
        flops = {
            "forward": cost.forward_flops * rows,
            "grad_input": cost.grad_input_flops * rows,
            "grad_weights": cost.grad_weight_flops * rows,
        }
        layers.append(
            {
                "name": info.name,
                "kind": cost.kind,
                "in_shape": list(info.in_shape),
                "out_shape": list(info.out_shape),
                "rows": rows,
                "activation": info.layer.activation,
                "phases": layer_phases(timed, flops, needs_input_grad),
                "compile_seconds": {k: v["compile_seconds"] for k, v in timed.items()},
            }
        )
    batches = synthetic_batches(gen, batch, spec.latent_dim, noise_shape=spec.noise_shape)
    with staged_feed(model, batches) as (step, sync):
        probes = {"step": lambda: sync(step()), **model.step_probe(*batches[0])}
        timed = time_probes(probes, request.rounds, request.window_seconds, clock)
    return {"layers": layers, "step": step_split(timed, layers)}


def serve(request: ExplainRequest) -> dict[str, Any]:
    """Build ``request.backend`` in this process and measure it (the worker's whole job)."""
    cls, _ = registry.load(request.backend)
    backend = cls(device=request.device, threads=request.threads, options=request.options, precision=request.precision)
    spec = get_model(request.model).spec.with_objective(request.training_objective)
    model = backend.build(spec, AdamConfig())
    model.load_weights(init_params(spec, request.seed))
    result = measure_backend(model, request)
    return {"backend": request.backend, "environment": backend.environment(), **result}


def _in_subprocess(request: ExplainRequest) -> dict[str, Any]:
    with _Scratch() as out:
        cmd = [sys.executable, "-m", "vaebench.measure.explain", json.dumps(dataclasses.asdict(request)), str(out)]
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
            raise BackendError(f"explain on {request.backend}: {lines[-1] if lines else f'exit {proc.returncode}'}")
        return read_json(out, "the explain worker wrote an unreadable answer")


class _Scratch:
    """A temporary file path for one worker's answer, removed afterwards."""

    def __enter__(self) -> Path:
        import tempfile

        fd, name = tempfile.mkstemp(prefix="vaebench-explain-", suffix=".json")
        os.close(fd)
        self.path = Path(name)
        return self.path

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)


def flag_slow(backends: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mark every layer phase more than :data:`SLOW_FACTOR` times the fastest backend's time on it
    (``slow_factor`` on the phase, the flags also returned as a list)."""
    flags = []
    for i, layer in enumerate(backends[0]["layers"] if backends else []):
        for phase in PHASES:
            cells = [(b["backend"], b["layers"][i]["phases"][phase]) for b in backends]
            times = [c["seconds"] for _, c in cells if c is not None and c["resolved"]]
            if not times:
                continue
            best = min(times)
            for name, cell in cells:
                if cell is None:
                    continue
                cell["vs_fastest"] = cell["seconds"] / best if cell["resolved"] else None
                if cell["vs_fastest"] is not None and cell["vs_fastest"] > SLOW_FACTOR:
                    flags.append({"backend": name, "layer": layer["name"], "phase": phase, "times_fastest": cell["vs_fastest"]})
    return flags


def explain(
    backends: list[str],
    model: str,
    batch_size: int,
    rounds: int = 5,
    window_seconds: float = 0.25,
    threads: int | None = None,
    options: Mapping[str, Mapping[str, str]] | None = None,
    log: Callable[[str], None] = print,
    run: Callable[[ExplainRequest], dict[str, Any]] = _in_subprocess,
    device: str = "cpu",
    objective: Objective = PLAIN,
) -> dict[str, Any]:
    """The explain document: each backend measured in its own process, then compared layer by layer, every step
    training on ``objective`` (the IWAE bound's decoder layers timed at ``batch * K`` rows, as its step runs them)."""
    spec = get_model(model).spec.with_objective(objective)
    results = []
    for i, name in enumerate(backends, 1):
        log(f"[{i}/{len(backends)}] {name}: {len(layer_costs(spec))} layers x 3 phases, {rounds} rounds ...")
        t0 = time.perf_counter()
        settings = dict((options or {}).get(name, {}))
        request = ExplainRequest(
            name, model, batch_size, rounds, window_seconds, threads, device, settings, **_objective_fields(objective)
        )
        results.append(run(request))
        log(f"[{i}/{len(backends)}] {name}: done in {time.perf_counter() - t0:.0f} s")
    flags = flag_slow(results)
    return {
        "schema_version": EXPLAIN_SCHEMA,
        "kind": "explain",
        "model": model,
        "batch_size": batch_size,
        "rounds": rounds,
        "window_seconds": window_seconds,
        "threads": threads,
        "device": device,
        "precision": "fp32",
        "objective": {**_objective_fields(objective), "text": objective.describe()},
        "method": METHOD,
        "slow_factor": SLOW_FACTOR,
        "costs": model_costs(spec, batch_size),
        "convention": CONVENTION,
        "backends": results,
        "flags": flags,
    }


def _objective_fields(objective: Objective) -> dict[str, Any]:
    """The objective in the run's flags' names, as :class:`ExplainRequest` and the document carry it."""
    return {"objective": objective.name, "beta": objective.beta, "iw_samples": objective.samples}


def write_explain(doc: dict[str, Any], out_dir: Path) -> Path:
    """``explain.json`` in ``out_dir`` (written whole or not at all)."""
    path = Path(out_dir) / "explain.json"
    atomic_write_json(path, doc)
    return path


def main() -> None:
    """Worker entry point: ``python -m vaebench.measure.explain '<ExplainRequest JSON>' OUT.json``."""
    request = ExplainRequest(**json.loads(sys.argv[1]))
    try:
        atomic_write_json(Path(sys.argv[2]), serve(request))
    except BackendError as exc:
        sys.exit(str(exc))


if __name__ == "__main__":
    main()
