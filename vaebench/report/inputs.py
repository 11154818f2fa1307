"""What ``vaebench compare`` reads: ``bench.json`` files, harness and explain documents, run and sweep folders, each validated."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vaebench.errors import VaebenchError
from vaebench.measure.documents import read_bench_doc
from vaebench.report.explain import read_explain
from vaebench.run.results import METRICS, read_metrics, run_identity
from vaebench.sweep.plan import SWEEP_FILE, read_record, run_folder


def load_inputs(paths: list[Path]) -> tuple[list[dict], list[tuple[Path, dict]]]:
    """Bench results (from ``bench.json`` files or folders holding one) and runs (folders with ``metrics.json``).

    Time-to-quality entries ride along in the bench list, marked ``kind == "ttq"``, and so do the
    rows of harness documents (``harness_ratio.py --json``), marked ``kind == "harness"``, and of
    exactness documents (``vaebench exactness``), marked ``kind == "exactness"``. Every
    file is checked against its schema first: a malformed one is one error naming it.

    Each run and each file counts once, however often it is named: ``A ./A A/``,
    overlapping globs, a sweep folder with its own runs, or a copy of a run
    folder (the same ``run_id`` and weights) are one run, not seeds of a comparison.
    """
    bench: list[dict] = []
    runs: list[tuple[Path, dict]] = []
    seen_paths: set[Path] = set()
    seen_ids: set[tuple] = set()

    def add_run(folder: Path) -> None:
        real = folder.resolve()
        if real in seen_paths:
            return
        seen_paths.add(real)
        metrics = read_metrics(folder)
        if metrics.get("run_id") is not None:  # a copy: the same run id and the same weights
            identity = tuple(sorted(run_identity(folder, metrics).items()))
            if identity in seen_ids:
                return
            seen_ids.add(identity)
        runs.append((folder, metrics))

    for path in map(Path, paths):
        if path.is_dir() and (path / SWEEP_FILE).exists():  # a sweep: every run folder it lists
            record = read_record(path)
            folders = [run_folder(path, r) for r in record["runs"]]
            for f in folders:
                if f is not None and (f / METRICS).is_file():
                    add_run(f)
            continue
        if path.is_dir() and (path / METRICS).exists():
            add_run(path)
            continue
        file = path / "bench.json" if path.is_dir() else path
        for other in ("explain.json", "exactness.json"):  # a folder of vaebench explain or vaebench exactness
            if path.is_dir() and not file.is_file() and (path / other).is_file():
                file = path / other
        if not file.is_file():
            raise VaebenchError(f"{path} is neither a run folder, a bench.json, an explain.json nor an exactness.json")
        if file.name == "explain.json":  # vaebench explain's document: one entry, the whole document
            if file.resolve() not in seen_paths:
                seen_paths.add(file.resolve())
                bench.append({"kind": "explain", "doc": read_explain(file), "source": str(file)})
            continue
        if file.resolve() in seen_paths:
            continue
        seen_paths.add(file.resolve())
        doc = read_bench_doc(file)
        if doc["kind"] == "bench":
            _check_medians(file, doc["results"])
        machine = str((doc.get("environment") or {}).get("cpu_model", "?"))
        if doc["kind"] in ("harness", "exactness"):
            bench.extend({**r, "kind": doc["kind"], "source": str(file), "machine": machine} for r in doc["results"])
            continue
        bench.extend({**r, "source": str(file), "machine": machine} for r in doc["results"])
        bench.extend({**r, "kind": "ttq", "source": str(file), "machine": machine} for r in doc.get("time_to_quality") or [])
    return bench, runs


def _check_medians(file: Path, results: list[dict]) -> None:
    """A throughput no measurement gives (0, negative, not finite) is a damaged file, refused before any ratio divides by it."""
    for i, r in enumerate(results):
        median = r["train_images_per_second"]["median"]
        if not (isinstance(median, int | float) and math.isfinite(median) and median > 0):
            raise VaebenchError(
                f"{file}: results[{i}] ({r.get('backend')}, {r.get('model')}) has a median of {median!r} images/s, which no "
                "measurement gives; the file is damaged: run vaebench bench again"
            )


def by_kind(entries: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """What :func:`load_inputs` gathered, apart: throughput results, time to quality, harness rows
    (explain documents: :func:`explain_docs`)."""
    kinds: dict[Any, list[dict]] = {None: [], "ttq": [], "harness": [], "explain": [], "exactness": []}
    for e in entries:
        kinds[e.get("kind")].append(e)
    return kinds[None], kinds["ttq"], kinds["harness"]


def exactness_entries(entries: list[dict]) -> list[dict]:
    """The rows of exactness documents (``vaebench exactness``) :func:`load_inputs` gathered."""
    return [e for e in entries if e.get("kind") == "exactness"]


def explain_docs(entries: list[dict]) -> list[dict]:
    """The explain documents :func:`load_inputs` gathered, in the order given."""
    return [e["doc"] for e in entries if e.get("kind") == "explain"]
