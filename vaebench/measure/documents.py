"""What bench writes and what the report reads: ``bench.json`` / ``bench.csv``, harness and exactness documents, schemas.

The schemas and the version-1 migration live here, apart from the matrix, so that :mod:`vaebench.report` can read
a document without importing the worker, the registry or a framework.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

from vaebench.errors import BackendError, VaebenchError
from vaebench.io.fileio import atomic_write_bytes, atomic_write_json, read_json
from vaebench.io.schema import NUM, Maybe, check
from vaebench.model.catalogue import canonical_model
from vaebench.plugin.host import host_environment

BENCH_SCHEMA = 2


def default_bench_dir(root: Path = Path("results/bench")) -> Path:
    """``results/bench/<UTC timestamp>``: a new folder per bench, so that no bench replaces another unasked."""
    return root / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def write_bench(
    results: list[dict],
    out_dir: Path,
    ttq: list[dict] | None = None,
    method: dict[str, Any] | None = None,
    peak: dict[str, Any] | None = None,
) -> tuple[Path, Path]:
    """``bench.json`` (results, time to quality, method, host environment with the measured fp32 ``peak``) and
    ``bench.csv`` (one row per result)."""
    out_dir = Path(out_dir)
    doc = {
        "schema_version": BENCH_SCHEMA,
        "kind": "bench",
        "environment": {**host_environment(), "peak": peak},
        "method": method or {},
        "results": results,
        "time_to_quality": ttq or [],
    }
    atomic_write_json(out_dir / "bench.json", doc)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(
        [
            "backend",
            "model",
            "objective",
            "batch_size",
            "profile",
            "precision",
            "variant",
            "schedule",
            "images_per_second_median",
            "q1",
            "q3",
            "windows",
            "ratio_to_fastest",
            "ratio_low",
            "ratio_high",
            "compile_seconds",
            "eval_pass_seconds",
            "grid_decode_seconds",
            "peak_rss_mb",
            "peak_device_memory_mb",
            "threads",
            "execution",
            "achieved_gflops",
            "fraction_of_peak",
        ]
    )
    for r in results:
        t, s, ratio = r["train_images_per_second"], r["settings"], r["ratio"]
        variant = ", ".join(
            (["compile"] if s["variant"]["compile"] else []) + [f"{k}={v}" for k, v in s["variant"]["options"].items()]
        )
        writer.writerow(
            [
                r["backend"],
                r["model"],
                (s.get("objective") or {}).get("text", "vae"),  # rows written before objectives trained the VAE
                r["batch_size"],
                s["profile"],
                s["precision"],
                variant or "plugin defaults",
                s["schedule"],
                f"{t['median']:.1f}",
                f"{t['q1']:.1f}",
                f"{t['q3']:.1f}",
                t["windows"],
                f"{ratio['value']:.4f}",
                f"{ratio['low']:.4f}",
                f"{ratio['high']:.4f}",
                f"{t['compile_seconds']:.3f}",
                "" if r.get("eval_pass_seconds") is None else f"{r['eval_pass_seconds']['median']:.3f}",
                "" if r.get("grid_decode_seconds") is None else f"{r['grid_decode_seconds']['median']:.4f}",
                f"{r['peak_rss_mb']:.0f}",
                "" if r.get("peak_device_memory_mb") is None else f"{r['peak_device_memory_mb']:.0f}",
                s["threads"],
                r["environment"].get("execution", ""),
                "" if not r.get("work") else f"{r['work']['achieved_gflops']:.2f}",
                "" if not r.get("work") or r["work"]["fraction_of_peak"] is None else f"{r['work']['fraction_of_peak']:.4f}",
            ]
        )
    atomic_write_bytes(out_dir / "bench.csv", buffer.getvalue().encode())
    return out_dir / "bench.json", out_dir / "bench.csv"


def write_harness(rows: list[dict], path: Path) -> Path:
    """Add plugin-against-yardstick rows (``tests/benchmarks/harness_ratio.py --json``) to a harness document,
    replacing rows of the same (backend, model, batch size, options), so one file gathers every backend's run."""
    path = Path(path)
    doc: dict[str, Any] = {"schema_version": BENCH_SCHEMA, "kind": "harness", "environment": host_environment(), "results": []}
    if path.exists():
        old = read_json(path, "move it away or pick another --json")
        if not isinstance(old, dict) or old.get("kind") != "harness" or not isinstance(old.get("results"), list):
            raise BackendError(f"{path} is not a harness document; pick another --json")
        doc["results"] = old["results"]

    def key(r: dict) -> tuple:
        return r["backend"], r["model"], r["batch_size"], json.dumps(r.get("options", {}), sort_keys=True)

    new = {key(r) for r in rows}
    doc["results"] = [r for r in doc["results"] if key(r) not in new] + rows
    atomic_write_json(path, doc)
    return path


_TIMES = {"median": NUM, "q1": NUM, "q3": NUM, "min": NUM, "max": NUM, "windows": int, "compile_seconds": NUM}
THROUGHPUT_SCHEMA = {
    "backend": str,
    "model": str,
    "batch_size": int,
    "train_images_per_second": _TIMES,
    "peak_rss_mb": NUM,
    "peak_device_memory_mb": Maybe(NUM),
    "ratio": Maybe({"text": str}),
    "eval_pass_seconds": Maybe({"median": NUM}),
    "grid_decode_seconds": Maybe({"median": NUM}),
    "settings": Maybe(dict),
    "load": Maybe({"busy": bool}),
    "work": Maybe({"achieved_gflops": NUM, "step_flops_per_image": NUM, "fraction_of_peak": Maybe(NUM)}),
}
TTQ_SCHEMA = {
    "backend": str,
    "model": str,
    "median": Maybe(NUM),
    "min": Maybe(NUM),
    "max": Maybe(NUM),
    "reached": int,
    "seeds": int,
    "target": Maybe(NUM),
    "runs": Maybe([{"target": NUM}]),
}
_SIDE = {"median": NUM, "q1": NUM, "q3": NUM}
HARNESS_SCHEMA = {
    "backend": str,
    "model": str,
    "batch_size": int,
    "fastest_yardstick": str,
    "ratio": NUM,
    "results": {"plugin": _SIDE},
}
_RATIO = {"value": NUM, "low": NUM, "high": NUM}
EXACTNESS_SCHEMA = {
    "backend": str,
    "model": str,
    "twin": str,
    "batch_size": int,
    "exact": _SIDE,
    "native": _SIDE,
    "ratio": _RATIO,
    "cost": _RATIO,
}
BENCH_VERSIONS = (1, BENCH_SCHEMA)  # version 1: measured sequentially, no ratio intervals


def read_bench_doc(file: Path) -> dict:
    """A ``bench.json`` or harness document, checked before any of it is used."""
    fix = "point compare at a bench.json written by vaebench bench, or a run folder"
    doc = read_json(file, fix)
    if not isinstance(doc, dict) or doc.get("kind") not in ("bench", "harness", "exactness"):
        raise VaebenchError(f"{file} is not a vaebench bench.json, harness or exactness document; {fix}")
    if doc.get("schema_version") not in BENCH_VERSIONS:
        raise VaebenchError(
            f"{file} has schema version {doc.get('schema_version')!r}; this vaebench reads {BENCH_VERSIONS}; {fix}"
        )
    if doc["kind"] == "harness":  # harness documents before the yardsticks were named so called them references
        for r in doc.get("results") if isinstance(doc.get("results"), list) else []:
            if isinstance(r, dict) and "fastest_reference" in r:
                r["fastest_yardstick"] = r.pop("fastest_reference")
    rows = {"harness": HARNESS_SCHEMA, "exactness": EXACTNESS_SCHEMA}.get(doc["kind"], THROUGHPUT_SCHEMA)
    check(doc, {"results": [rows], "time_to_quality": Maybe([TTQ_SCHEMA]), "environment": Maybe(dict)}, file, fix)
    for r in [*doc["results"], *(doc.get("time_to_quality") or [])]:  # rows written before a model was renamed
        if isinstance(r.get("model"), str):
            r["model"] = canonical_model(r["model"])
    for i, r in enumerate(doc["results"] if doc["kind"] == "harness" else []):
        check(r["results"].get(r["fastest_yardstick"]), _SIDE, f"{file} results[{i}].results.{r['fastest_yardstick']}", fix)
    return doc
