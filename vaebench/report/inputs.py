"""What ``vaebench compare`` reads: ``bench.json`` files, harness documents, run and sweep folders, each validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vaebench.errors import VaebenchError
from vaebench.measure.documents import read_bench_doc
from vaebench.run.results import METRICS, read_metrics
from vaebench.sweep.plan import SWEEP_FILE, read_record, run_folder


def load_inputs(paths: list[Path]) -> tuple[list[dict], list[tuple[Path, dict]]]:
    """Bench results (from ``bench.json`` files or folders holding one) and runs (folders with ``metrics.json``).

    Time-to-quality entries ride along in the bench list, marked ``kind == "ttq"``, and so do the
    rows of harness documents (``harness_ratio.py --json``), marked ``kind == "harness"``. Every
    file is checked against its schema first: a malformed one is one error naming it.
    """
    bench: list[dict] = []
    runs: list[tuple[Path, dict]] = []
    for path in map(Path, paths):
        if path.is_dir() and (path / SWEEP_FILE).exists():  # a sweep: every run folder it lists
            record = read_record(path)
            folders = [run_folder(path, r) for r in record["runs"]]
            runs.extend((f, read_metrics(f)) for f in folders if f is not None and (f / METRICS).is_file())
            continue
        if path.is_dir() and (path / METRICS).exists():
            runs.append((path, read_metrics(path)))
            continue
        file = path / "bench.json" if path.is_dir() else path
        if not file.is_file():
            raise VaebenchError(f"{path} is neither a run folder nor a bench.json")
        doc = read_bench_doc(file)
        machine = str((doc.get("environment") or {}).get("cpu_model", "?"))
        if doc["kind"] == "harness":
            bench.extend({**r, "kind": "harness", "source": str(file), "machine": machine} for r in doc["results"])
            continue
        bench.extend({**r, "source": str(file), "machine": machine} for r in doc["results"])
        bench.extend({**r, "kind": "ttq", "source": str(file), "machine": machine} for r in doc.get("time_to_quality") or [])
    return bench, runs


def by_kind(entries: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """What :func:`load_inputs` gathered, apart: throughput results, time to quality, harness rows."""
    kinds: dict[Any, list[dict]] = {None: [], "ttq": [], "harness": []}
    for e in entries:
        kinds[e.get("kind")].append(e)
    return kinds[None], kinds["ttq"], kinds["harness"]
