"""``vaebench compare``: tables and a report from ``bench.json`` files and run folders only.

Nothing here runs a framework: it reads what ``vaebench bench`` and
``vaebench run`` wrote. Runs whose status is not ``completed`` are listed as
such and left out of the figures.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.bench import BENCH_SCHEMA
from vaebench.errors import VaebenchError
from vaebench.fileio import atomic_write_bytes, read_json
from vaebench.plots import pyplot
from vaebench.results import METRICS, read_metrics
from vaebench.schema import NUM, Maybe, check


def ttq_table(entries: list[dict]) -> list[str]:
    """Time to quality per model and backend: median and full range over seeds, and how many reached the target."""
    lines = [f"{'model':6s} {'backend':12s} {'target':>7s} {'median s':>9s} {'range s':>15s} {'reached':>8s}"]
    for e in sorted(entries, key=lambda e: (e["model"], e["median"] if e["median"] is not None else float("inf"))):
        span = f"{e['min']:.1f}-{e['max']:.1f}" if e["median"] is not None else "-"
        med = f"{e['median']:9.1f}" if e["median"] is not None else f"{'never':>9s}"
        target = e.get("target", e["runs"][0]["target"] if e.get("runs") else float("nan"))
        lines.append(f"{e['model']:6s} {e['backend']:12s} {target:7.1f} {med} {span:>15s} {e['reached']:>4d}/{e['seeds']}")
    return lines


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
BENCH_VERSIONS = (1, BENCH_SCHEMA)  # version 1: measured sequentially, no ratio intervals


def _bench_doc(file: Path) -> dict:
    """A ``bench.json`` or harness document, checked before any of it is used."""
    fix = "point compare at a bench.json written by vaebench bench, or a run folder"
    doc = read_json(file, fix)
    if not isinstance(doc, dict) or doc.get("kind") not in ("bench", "harness"):
        raise VaebenchError(f"{file} is not a vaebench bench.json or harness document; {fix}")
    if doc.get("schema_version") not in BENCH_VERSIONS:
        raise VaebenchError(
            f"{file} has schema version {doc.get('schema_version')!r}; this vaebench reads {BENCH_VERSIONS}; {fix}"
        )
    if doc["kind"] == "harness":  # harness documents before the yardsticks were named so called them references
        for r in doc.get("results") if isinstance(doc.get("results"), list) else []:
            if isinstance(r, dict) and "fastest_reference" in r:
                r["fastest_yardstick"] = r.pop("fastest_reference")
    rows = HARNESS_SCHEMA if doc["kind"] == "harness" else THROUGHPUT_SCHEMA
    check(doc, {"results": [rows], "time_to_quality": Maybe([TTQ_SCHEMA]), "environment": Maybe(dict)}, file, fix)
    for i, r in enumerate(doc["results"] if doc["kind"] == "harness" else []):
        check(r["results"].get(r["fastest_yardstick"]), _SIDE, f"{file} results[{i}].results.{r['fastest_yardstick']}", fix)
    return doc


def load_inputs(paths: list[Path]) -> tuple[list[dict], list[tuple[Path, dict]]]:
    """Bench results (from ``bench.json`` files or folders holding one) and runs (folders with ``metrics.json``).

    Time-to-quality entries ride along in the bench list, marked ``kind == "ttq"``, and so do the
    rows of harness documents (``harness_ratio.py --json``), marked ``kind == "harness"``. Every
    file is checked against its schema first: a malformed one is one error naming it.
    """
    bench: list[dict] = []
    runs: list[tuple[Path, dict]] = []
    for path in map(Path, paths):
        if path.is_dir() and (path / METRICS).exists():
            runs.append((path, read_metrics(path)))
            continue
        file = path / "bench.json" if path.is_dir() else path
        if not file.is_file():
            raise VaebenchError(f"{path} is neither a run folder nor a bench.json")
        doc = _bench_doc(file)
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


def harness_table(rows: list[dict]) -> list[str]:
    """Each plugin against the fastest hand-written loop of its framework, timed side by side in one process."""
    lines = [
        f"{'backend':8s} {'model':6s} {'batch':>5s} {'plugin img/s':>12s} {'IQR':>15s} {'yardstick':>10s} {'img/s':>7s} "
        f"{'IQR':>15s} {'ratio':>6s}  harness cost"
    ]
    for r in sorted(rows, key=lambda r: (r["backend"], r["model"], r["batch_size"])):
        p, ref = r["results"]["plugin"], r["results"][r["fastest_yardstick"]]
        lines.append(
            f"{r['backend']:8s} {r['model']:6s} {r['batch_size']:5d} {p['median']:12.0f} {p['q1']:7.0f}-{p['q3']:<7.0f} "
            f"{r['fastest_yardstick']:>10s} {ref['median']:7.0f} {ref['q1']:7.0f}-{ref['q3']:<7.0f} {r['ratio']:6.3f}  "
            f"{100 * (1 - r['ratio']):+.1f}%"
        )
    return lines


def _mb(result: dict) -> str:
    gpu = result.get("peak_device_memory_mb")
    return "-" if gpu is None else f"{gpu:.0f}"


def _ratio_text(r: dict, fastest: float) -> str:
    ratio = r.get("ratio")
    if ratio:  # schema 2: measured interleaved, with its bootstrap interval
        return ratio["text"]
    return f"{r['train_images_per_second']['median'] / fastest:.2f}"


def _setting(r: dict) -> str:
    s = r.get("settings", {})
    return f"{s.get('profile', '?')}/{s.get('precision', '?')}"


def bench_table(results: list[dict]) -> list[str]:
    """Throughput per (model, batch): median, IQR and windows; the ratio to the cell's fastest with its 95% interval
    (printed to the digits the interval supports); profile/precision; compile, eval, grid and memory (the cell's own
    worker process: peak RSS, and the accelerator allocator's peak where a GPU ran, else ``-``)."""
    lines = [
        f"{'model':6s} {'batch':>5s} {'backend':12s} {'img/s median':>12s} {'IQR':>15s} {'n':>3s} {'ratio (95% CI)':>22s} "
        f"{'profile':>12s} {'compile s':>9s} {'eval s':>7s} {'grid ms':>8s} {'peak MB':>8s} {'GPU MB':>7s}  source"
    ]
    keys = sorted({(r["model"], r["batch_size"]) for r in results})
    for model, batch in keys:
        group = [r for r in results if (r["model"], r["batch_size"]) == (model, batch)]
        fastest = max(r["train_images_per_second"]["median"] for r in group)
        for r in sorted(group, key=lambda r: -r["train_images_per_second"]["median"]):
            t = r["train_images_per_second"]
            ev, grid = r.get("eval_pass_seconds"), r.get("grid_decode_seconds")
            lines.append(
                f"{model:6s} {batch:5d} {r['backend']:12s} {t['median']:12.0f} {t['q1']:7.0f}-{t['q3']:<7.0f} "
                f"{t['windows']:3d} {_ratio_text(r, fastest):>22s} {_setting(r):>12s} {t['compile_seconds']:9.2f} "
                f"{ev['median'] if ev else float('nan'):7.2f} {1000 * grid['median'] if grid else float('nan'):8.1f} "
                f"{r['peak_rss_mb']:8.0f} {_mb(r):>7s}  {Path(r['source']).parent.name or '.'}"
            )
    return lines


def _num(value: float | None) -> float:
    """A number to format: ``None`` (JSON's stand-in for NaN, or absent) prints as ``nan``."""
    return float("nan") if value is None else float(value)


def run_nll(metrics: dict) -> tuple[float | None, int | None]:
    """A run's importance-weighted test NLL and its ``k``: from the run itself, else from ``vaebench eval``.

    ``eval`` stores its result under ``evaluations.<backend>``; the training
    backend's own evaluation comes first, then the one with the largest ``k``.
    """
    final = metrics.get("final") or {}
    if final.get("test_nll") is not None:
        return final["test_nll"], final.get("iwae_k")
    evaluations = metrics.get("evaluations") or {}
    scored = [e for e in evaluations.values() if isinstance(e, dict) and isinstance(e.get("test_nll"), int | float)]
    own = evaluations.get(metrics["config"]["backend"])
    if isinstance(own, dict) and isinstance(own.get("test_nll"), int | float):
        return own["test_nll"], own.get("iwae_k")
    if scored:
        best = max(scored, key=lambda e: e.get("iwae_k") or 0)
        return best["test_nll"], best.get("iwae_k")
    return None, None


def runs_table(runs: list[tuple[Path, dict]]) -> list[str]:
    """Final quality and speed of each run; unfinished runs flagged."""
    lines = [
        f"{'run':40s} {'backend':12s} {'model':6s} {'epochs':>6s} {'test -ELBO':>10s} {'NLL':>8s} {'AU':>4s} "
        f"{'s/epoch':>8s} {'img/s':>8s}  status"
    ]
    for path, m in runs:
        cfg, hist, final = m["config"], m.get("history", []), m.get("final") or {}
        epoch_s = np.median([h["epoch_seconds"] for h in hist]) if hist else float("nan")
        ips = np.median([h["train_images_per_second"] for h in hist if h.get("train_images_per_second")] or [np.nan])
        elbo, au = final.get("test_neg_elbo"), final.get("active_units")
        nll, _ = run_nll(m)
        lines.append(
            f"{path.name[:40]:40s} {cfg['backend']:12s} {cfg['model']:6s} {len(hist):6d} "
            f"{_num(elbo):10.2f} {_num(nll):8.2f} {'' if au is None else au:>4} {epoch_s:8.1f} {ips:8.0f}  {m['status']}"
        )
    return lines


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def _throughput_figure(results: list[dict]) -> bytes:
    plt = pyplot()
    keys = sorted({(r["model"], r["batch_size"]) for r in results})
    backends = sorted({r["backend"] for r in results})
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4), squeeze=False)
    for ax, (model, batch) in zip(axes[0], keys, strict=True):
        rows = {r["backend"]: r["train_images_per_second"] for r in results if (r["model"], r["batch_size"]) == (model, batch)}
        names = [b for b in backends if b in rows]
        med = [rows[b]["median"] for b in names]
        err = [[rows[b]["median"] - rows[b]["min"] for b in names], [rows[b]["max"] - rows[b]["median"] for b in names]]
        ax.bar(names, med, yerr=err, capsize=4, color="tab:blue")
        ax.set_title(f"{model}, batch {batch}")
        ax.tick_params(axis="x", rotation=45)
    axes[0][0].set_ylabel("training images/s (median; bars: min-max)")
    fig.suptitle("Steady-state training throughput")
    fig.tight_layout()
    return _png(fig)


def _curves_figure(runs: list[tuple[Path, dict]]) -> bytes:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for _path, m in runs:
        hist = m["history"]
        label = f"{m['config']['backend']} · {m['config']['model']}"
        left.plot([h["epoch"] for h in hist], [h["test_neg_elbo"] for h in hist], "o-", label=label)
        right.plot(np.cumsum([h["epoch_seconds"] for h in hist]), [h["test_neg_elbo"] for h in hist], "o-", label=label)
    left.set_xlabel("epoch")
    right.set_xlabel("training wall-clock seconds")
    left.set_ylabel("test -ELBO (nats)")
    left.legend()
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle("Test -ELBO per epoch and per second")
    return _png(fig)


def _grids_figure(runs: list[tuple[Path, dict]]) -> bytes | None:
    plt = pyplot()
    have = [(p, m) for p, m in runs if (p / "grid.png").exists()]
    if not have:
        return None
    fig, axes = plt.subplots(1, len(have), figsize=(5 * len(have), 5.4), squeeze=False)
    for ax, (path, m) in zip(axes[0], have, strict=True):
        ax.imshow(plt.imread(path / "grid.png"))
        ax.set_axis_off()
        ax.set_title(f"{m['config']['backend']} · {m['config']['model']}")
    return _png(fig)


def _method_lines(results: list[dict]) -> list[str]:
    """How the throughput figures were measured, read from the rows themselves."""
    schedules = sorted({r.get("settings", {}).get("schedule", "sequential (schema 1)") for r in results})
    lines = [f"Schedule: {', '.join(schedules)}."]
    if "interleaved" in schedules:
        lines += [
            "Interleaved: for each (model, batch) cell every backend ran in a live worker process of its own, with the",
            "same thread count, and only one computed at a time: timing windows were handed out in turn, the order",
            "rotated every round and every other worker frozen, so machine drift landed on every backend alike.",
            "Ratios are to the cell's fastest backend: the median of per-round paired ratios, with a 95% bootstrap",
            "interval over rounds, printed to the digits the interval supports.",
        ]
    lines += [
        "Memory: peak RSS of a fresh worker process per (backend, cell); no row carries another row's peak.",
        "Profile/precision: `default` is each framework's usual idiom, `best` its fastest setting measured here;",
        "`fp32` is strict float32 (no TF32).",
        "",
    ]
    return lines


def write_report(bench: list[dict], runs: list[tuple[Path, dict]], out_dir: Path) -> tuple[Path, Path]:
    """``report.md`` (tables, pictures beside it) and a self-contained ``report.html`` (pictures inlined)."""
    out_dir = Path(out_dir)
    done = [(p, m) for p, m in runs if m.get("status") == "completed"]
    figures: dict[str, bytes] = {}
    throughput, ttq, harness = by_kind(bench)
    if throughput:
        figures["throughput.png"] = _throughput_figure(throughput)
    if done:
        figures["curves.png"] = _curves_figure(done)
        grids = _grids_figure(done)
        if grids:
            figures["grids.png"] = grids
    md = ["# vaebench report", ""]
    if throughput:
        machines = sorted({r["machine"] for r in throughput})
        md += ["## Training throughput", "", f"Machine(s): {', '.join(machines)}.", ""]
        md += _method_lines(throughput)
        md += ["```", *bench_table(throughput), "```", ""]
    if harness:
        md += [
            "## What the harness costs",
            "",
            "Each plugin, fed as the runner feeds it, against the fastest minimal hand-written loop of its own",
            "framework (`tests/benchmarks/*_yardstick.py`, given tensors made up front), windows interleaved in one",
            "process (`python tests/benchmarks/harness_ratio.py --backend B --json harness.json`). A negative",
            "cost means the plugin ran faster; differences within the IQRs are noise.",
            "",
            "```",
            *harness_table(harness),
            "```",
            "",
        ]
    if ttq:
        md += [
            "## Time to quality",
            "",
            "Seconds from the first touch of the data to the target test -ELBO, each seed in a fresh process;",
            "median and full range over seeds (nothing trimmed), and how many seeds reached the target.",
            "",
            "```",
            *ttq_table(ttq),
            "```",
            "",
        ]
    if runs:
        md += ["## Runs", "", "```", *runs_table(runs), "```", ""]
    for name in figures:
        md += [f"![{name}]({name})", ""]
    for name, data in figures.items():
        atomic_write_bytes(out_dir / name, data)
    atomic_write_bytes(out_dir / "report.md", "\n".join(md).encode())
    html_body = []
    in_pre = False
    for line in md:
        # Only lines outside code blocks are markup, and only the ones this function wrote; everything
        # else (table rows holding folder names, models, backends read from files) is escaped text.
        if line == "```":
            html_body.append("</pre>" if in_pre else "<pre>")
            in_pre = not in_pre
        elif not in_pre and line.startswith("![") and line.endswith(")") and line[line.index("(") + 1 : -1] in figures:
            name = line[line.index("(") + 1 : -1]
            html_body.append(
                f'<img src="data:image/png;base64,{base64.b64encode(figures[name]).decode()}" alt="{html.escape(name)}" '
                'style="max-width:100%">'
            )
        elif not in_pre and line.startswith("## "):
            html_body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif not in_pre and line.startswith("# "):
            html_body.append(f"<h1>{html.escape(line[2:])}</h1>")
        else:
            html_body.append(html.escape(line, quote=False))
    page = "<!doctype html><meta charset='utf-8'><title>vaebench report</title><body style='font-family:sans-serif'>\n"
    atomic_write_bytes(out_dir / "report.html", (page + "\n".join(html_body) + "\n</body>\n").encode())
    return out_dir / "report.md", out_dir / "report.html"
