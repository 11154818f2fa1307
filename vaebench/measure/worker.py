"""The bench worker: one backend, one (model, batch size) cell, in a process of its own, driven by a coordinator.

Why a process per (backend, cell): Keras fixes its engine per process, each
framework sets its own thread pools, and a fresh process gives each cell its
own peak memory (no row carries the peaks of the rows before it).

The protocol is typed and JSON, one object a line. The coordinator starts
``python -m vaebench.measure.worker '<CellRequest as JSON>'``; the worker builds
the model (trained on the request's objective, ``--objective``) and answers
``{"ready": ...}``; then it obeys commands on stdin and answers each with one line:

* ``{"op": "compile"}``: the first train step timed alone, one more discarded,
  one timed to size the windows -> ``compile_seconds``, ``probe_seconds``;
* ``{"op": "window", "steps": n}``: ``n`` steps closed by the backend's
  synchronisation -> ``seconds``;
* ``{"op": "tune", "windows": n}``: ``--profile best``: every variant timed,
  interleaved, in this process -> the fastest and every candidate's figures;
* ``{"op": "inference", "repeats": n}``: an evaluation pass over 10,000 images
  and the 20x20 grid decode;
* ``{"op": "finish"}``: peak memory, environment, plugin -> then exit.

Replies go to the original stdout; the worker points file descriptor 1 at
stderr first, so nothing a framework prints can corrupt the protocol. An error
is answered as ``{"error": "..."}`` and ends the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from vaebench.errors import BackendError
from vaebench.measure.interleave import order
from vaebench.measure.stats import format_ratio, ratio_interval, summarize
from vaebench.measure.timing import Clock, Step, Sync, steps_for, timed_call, window
from vaebench.model.catalogue import get_model
from vaebench.model.config import AdamConfig
from vaebench.model.loss import Objective
from vaebench.model.weights import init_params
from vaebench.plugin import registry
from vaebench.plugin.contract import Backend, Model
from vaebench.plugin.profiles import check_precision, choose, levers_for, variants
from vaebench.run.evaluation import decode_points
from vaebench.run.prefetch import Prefetcher

EVAL_IMAGES = 10_000
EVAL_CHUNK = 1_000


@dataclass
class CellRequest:
    """What one worker measures: serialised to JSON on the command line, never positional strings."""

    backend: str
    model: str
    batch_size: int
    threads: int
    device: str = "auto"
    precision: str = "fp32"
    profile: str = "default"  # ``best``: build every variant of the plugin's tunables, for ``tune``
    compile: bool = False
    options: dict[str, str] = field(default_factory=dict)
    objective: str = "vae"  # what the timed step trains on, named as TrainConfig names it (--objective, --beta, --iw-samples)
    beta: float = 1.0
    iw_samples: int = 1

    @property
    def training_objective(self) -> Objective:
        """The objective the timed step minimises (checked: a bad one is a ConfigError before any model is built)."""
        return Objective(self.objective, self.beta, self.iw_samples)

    def to_json(self) -> str:
        """The request as one JSON line."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CellRequest:
        """Parse a request: an unknown field is refused, and so is a missing one of the four without a default
        (``backend``, ``model``, ``batch_size``, ``threads``); the other fields take their defaults."""
        data = json.loads(text)
        return cls(**data)


def synthetic_batches(
    gen: np.random.Generator, batch_size: int, latent_dim: int, n: int = 4, noise_shape: tuple[int, ...] | None = None
) -> list[tuple[Any, Any]]:
    """``n`` distinct ``(x, eps)`` batches of the real shapes, cycled by :func:`staged_feed`; ``noise_shape`` is one
    image's training noise (default ``(latent_dim,)``; ``(K, latent_dim)`` for the IWAE bound).

    Speed does not depend on pixel values, so the bench needs no data set.
    """
    return [
        (
            gen.random((batch_size, 28, 28, 1), dtype=np.float32),
            gen.standard_normal((batch_size, *(noise_shape or (latent_dim,))), dtype=np.float32),
        )
        for _ in range(n)
    ]


@contextlib.contextmanager
def staged_feed(model: Model, batches: list[tuple[np.ndarray, np.ndarray]]) -> Iterator[tuple[Step, Sync]]:
    """``(step, sync)`` that trains as the runner does.

    Each step takes the next of ``batches`` (cycled), staged ahead on the
    :class:`~vaebench.run.prefetch.Prefetcher` thread, so the timed path is the
    runner's: contract checks, staging, ``train_staged``, and a fetch to close
    each window.
    """
    with Prefetcher(itertools.cycle(batches), lambda b: model.stage(*b)) as feed:
        yield (lambda: model.train_staged(next(feed)[1])), (lambda out: model.fetch([out]))


def _timed(fn: Callable[[], Any], repeats: int, clock: Clock = time.perf_counter) -> dict[str, float]:
    fn()  # warm-up: compiles the evaluation graph where there is one
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return {"median": statistics.median(times), "min": min(times), "max": max(times)}


class Cell:
    """The models of one worker and what it measures on them.

    ``clock`` times every figure (a parameter so tests can count what a window timed with a fake one).
    """

    def __init__(self, request: CellRequest, clock: Clock = time.perf_counter) -> None:
        self.request = request
        self.clock = clock
        backend_cls, self.plugin = registry.load(request.backend)
        objective = request.training_objective
        self.spec = get_model(request.model).spec.with_objective(objective)
        self.gen = np.random.default_rng(0)
        noise = self.spec.noise_shape
        self.batches = synthetic_batches(self.gen, request.batch_size, self.spec.latent_dim, noise_shape=noise)
        tunables = levers_for(backend_cls.tunables, self.spec)  # no lever for a kind of layer the model lacks
        self.variants = variants(tunables, request.profile, request.compile, request.options)
        self.backends: list[Backend] = []
        self.models: list[Model] = []
        for v in self.variants:
            be = backend_cls(
                device=request.device,
                threads=request.threads,
                compile=v.compile,
                options=dict(v.options),
                precision=request.precision,
            )
            check_precision(request.precision, be.environment())
            model = be.build(self.spec, AdamConfig())
            model.load_weights(init_params(self.spec, 0))
            self.backends.append(be)
            self.models.append(model)
        self.stack = contextlib.ExitStack()
        self.feed = self.stack.enter_context(staged_feed(self.models[0], self.batches))

    def compile(self) -> dict[str, Any]:
        step, sync = self.feed
        compile_seconds = timed_call(step, sync, self.clock)
        sync(step())  # discarded: the second call may still pay for allocation
        return {"compile_seconds": compile_seconds, "probe_seconds": timed_call(step, sync, self.clock)}

    def window(self, steps: int) -> dict[str, Any]:
        step, sync = self.feed
        return {"seconds": window(step, sync, steps, self.clock), "steps": steps}

    def tune(self, windows: int) -> dict[str, Any]:
        """Every variant timed in this process, in rounds of one window each (the order rotated every round, as bench
        does across processes); each candidate's paired ratio to the default variant with its interval; the choice
        (:func:`~vaebench.plugin.profiles.choose`: the fastest whose interval lies above 1, else the default).

        The default is the variant the ``default`` profile would run (the plugin's option defaults and the user's own
        settings), so ``vs_default`` is what ``best`` is worth on this cell: ``best`` / ``default`` images/s.
        """
        with contextlib.ExitStack() as stack:
            contenders = {
                v.label(): stack.enter_context(staged_feed(m, self.batches))
                for v, m in zip(self.variants, self.models, strict=True)
            }
            compiles = {name: timed_call(*c, self.clock) for name, c in contenders.items()}  # first calls: compile, apart
            probe = min(timed_call(*c, self.clock) for c in contenders.values())
            steps = steps_for(probe)
            for step, sync in contenders.values():
                sync(step())  # one warm-up call each, untimed
            names, batch = list(contenders), self.request.batch_size
            per_round: dict[str, list[float]] = {n: [] for n in names}
            for r in range(windows):
                for name in order(names, r):
                    per_round[name].append(batch * steps / window(*contenders[name], steps, self.clock))
        default = self._default_label()
        candidates = []
        for v in self.variants:
            ips = per_round[v.label()]
            summary = {k: s for k, s in summarize(ips).items() if k != "samples"}
            value, low, high = ratio_interval([[x] for x in ips], [[x] for x in per_round[default]])
            vs_default = {"value": value, "low": low, "high": high, "text": format_ratio(value, low, high)}
            candidates.append(
                {**v.to_dict(), "label": v.label(), **summary, "compile_seconds": compiles[v.label()], "vs_default": vs_default}
            )
        best = choose(candidates, default)  # the default, unless a variant's interval lies wholly above 1
        rule = "the fastest variant whose ratio to the default has its 95% interval above 1; else the default"
        choice = {"compile": best["compile"], "options": best["options"]}
        return {"choice": choice, "default": default, "candidates": candidates, "rule": rule}

    def _default_label(self) -> str:
        """The label of the variant ``--profile default`` runs: no compile unless asked, the plugin's option defaults.

        Where a default is a rule rather than a value (Keras' ``xla=auto``), the backend says what the rule means on
        its device (:meth:`~vaebench.plugin.contract.Backend.resolved_options`: XLA off on a CPU, on with a GPU),
        so the candidate with that value is the default's row. Only if none matches does the first stand for it.
        """
        backend = self.backends[0]
        defaults = backend.resolved_options({**type(backend).option_defaults, **self.request.options})
        for v in self.variants:
            if v.compile == self.request.compile and all(defaults.get(k) == val for k, val in v.options.items()):
                return v.label()
        return self.variants[0].label()

    def inference(self, repeats: int) -> dict[str, Any]:
        model = self.models[0]
        ex = self.gen.random((EVAL_CHUNK, 28, 28, 1), dtype=np.float32)
        eeps = self.gen.standard_normal((EVAL_CHUNK, self.spec.noise_dim), dtype=np.float32)
        evaluation = _timed(lambda: [model.evaluate(ex, eeps) for _ in range(EVAL_IMAGES // EVAL_CHUNK)], repeats, self.clock)
        z = decode_points(self.spec, 0)
        return {"eval_pass_seconds": evaluation, "grid_decode_seconds": _timed(lambda: model.decode(z), repeats, self.clock)}

    def finish(self) -> dict[str, Any]:
        self.stack.close()
        return {
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "peak_device_memory_mb": self.models[0].peak_device_memory_mb(),
            "environment": self.backends[0].environment(),
            "plugin": self.plugin.describe(),
        }


def serve(request: CellRequest, commands: TextIO, replies: TextIO, clock: Clock = time.perf_counter) -> None:
    """Build the cell, then answer ``commands`` until ``finish`` or end of input (``clock``: see :class:`Cell`)."""

    def reply(obj: dict[str, Any]) -> None:
        replies.write(json.dumps(obj) + "\n")
        replies.flush()

    try:
        t0 = clock()
        cell = Cell(request, clock)
        reply({"ready": True, "build_seconds": clock() - t0, "variants": len(cell.variants)})
        for line in commands:
            cmd = json.loads(line)
            op = cmd["op"]
            if op == "compile":
                reply(cell.compile())
            elif op == "window":
                reply(cell.window(int(cmd["steps"])))
            elif op == "tune":
                reply(cell.tune(int(cmd["windows"])))
            elif op == "inference":
                reply(cell.inference(int(cmd["repeats"])))
            elif op == "finish":
                reply(cell.finish())
                return
            else:
                reply({"error": f"unknown op {op!r}"})
                return
    except Exception as exc:  # the coordinator turns this into one line naming the backend
        reply({"error": f"{type(exc).__name__}: {exc}"})
        raise


class WorkerProcess:
    """``python -m vaebench.measure.worker`` for one request; one JSON line per command and reply."""

    def __init__(self, request: CellRequest) -> None:
        self.name = request.backend
        # stderr to a file, not a pipe: a chatty framework must not block the worker on a full pipe
        self.errors = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vaebench.measure.worker", request.to_json()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            text=True,
        )

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        reply = json.loads(line) if line.startswith("{") else None
        if reply is None or "error" in reply:
            self.proc.wait(timeout=60)
            self.errors.seek(0)
            last = [ln for ln in self.errors.read().strip().splitlines() if ln.strip()]
            why = reply["error"] if reply else (last[-1] if last else f"exit code {self.proc.returncode}")
            raise BackendError(f"benchmark worker of {self.name} failed: {why}")
        return reply

    def ready(self) -> dict[str, Any]:
        return self._read()

    def call(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def pause(self) -> None:
        """Freeze the whole process (SIGSTOP): no thread of an idle worker may spin, prefetch or collect garbage."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Let the process run again (SIGCONT)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.resume()
            self.proc.kill()
        self.proc.wait()
        self.errors.close()


def main() -> None:
    """``python -m vaebench.measure.worker '<CellRequest JSON>'``."""
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a framework prints goes to stderr, not into the protocol
    sys.stdout = sys.stderr
    serve(CellRequest.from_json(sys.argv[1]), sys.stdin, replies)


if __name__ == "__main__":
    main()
