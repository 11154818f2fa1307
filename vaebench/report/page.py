"""``report.md`` and ``report.html``: the tables of :mod:`vaebench.report.tables`, with figures people would rather look at.

``report.html`` is one self-contained file (no network: pictures inlined as
PNG data, a few lines of inline JavaScript): real tables that sort by any
column (click a header; ``#sort=<table>:<column>`` in the URL sorts on load),
throughput bars with their interquartile ranges, test -ELBO curves per epoch
and per training second for every run, every run's grid side by side at full
size, and the environment in a collapsible block. Everything that comes from
a file or a folder name is escaped; only this module writes markup.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.io.fileio import atomic_write_files
from vaebench.measure.stats import EQUIVALENCE_MARGIN
from vaebench.report.explain import explain_table, heatmap_png, trained_on
from vaebench.report.inputs import by_kind, exactness_entries, explain_docs
from vaebench.report.tables import (
    Table,
    batch_fit_rows,
    bench_rows,
    beta_trends,
    comparability_notes,
    equivalence_rows,
    exactness_rows,
    harness_rows,
    has_seeds,
    plain,
    runs_rows,
    seed_rows,
    ttq_rows,
    tuning_rows,
    vq_rows,
)
from vaebench.run.outputs.plots import pyplot

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1400px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid #ddd;white-space:nowrap}
th{background:#f4f4f4;cursor:pointer;user-select:none;position:sticky;top:0}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.r{text-align:right;font-variant-numeric:tabular-nums}
.grids{display:flex;flex-wrap:wrap;gap:1em}.grids figure{margin:0;width:420px}.grids img{width:100%}
img.fig{max-width:100%}code{background:#f4f4f4;padding:0 3px}details{margin:1em 0}
"""

# Sorts a table by a column: numbers by data-sort, text as text; click again to reverse. #sort=T:C sorts on load.
SCRIPT = """
function sortTable(table, col, descending) {
  const body = table.tBodies[0], rows = Array.from(body.rows);
  const key = r => { const v = r.cells[col].dataset.sort; const n = parseFloat(v); return isNaN(n) ? v : n; };
  rows.sort((a, b) => { const x = key(a), y = key(b);
    const c = (typeof x === "number" && typeof y === "number") ? x - y : String(x).localeCompare(String(y));
    return descending ? -c : c; });
  rows.forEach(r => body.appendChild(r));
  Array.from(table.tHead.rows[0].cells).forEach((th, i) =>
    th.setAttribute("aria-sort", i === col ? (descending ? "descending" : "ascending") : "none"));
}
document.querySelectorAll("table.sortable").forEach(table =>
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => th.addEventListener("click", () =>
    sortTable(table, i, th.getAttribute("aria-sort") === "ascending"))));
window.addEventListener("load", () => {  // what a reader (or a test) can check: did every picture decode?
  const imgs = Array.from(document.images);
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
const m = location.hash.match(/^#sort=([\\w-]+):(\\d+)(:desc)?$/);
if (m && document.getElementById(m[1])) sortTable(document.getElementById(m[1]), +m[2], !!m[3]);
"""


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    pyplot().close(fig)
    return buffer.getvalue()


def _throughput_figure(results: list[dict]) -> bytes:
    """Median training images/s per backend and cell; the bars span the interquartile range of the windows."""
    plt = pyplot()
    keys = sorted({(r["model"], r["batch_size"]) for r in results})
    machines = sorted({str(r.get("machine", "")) for r in results})

    def bar(r: dict) -> str:  # one bar per backend and machine: bars of two machines are never one backend's
        m = str(r.get("machine", ""))
        return r["backend"] + (f" @m{machines.index(m) + 1}" if len(machines) > 1 else "")

    backends = sorted({bar(r) for r in results})
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 4), squeeze=False)
    for ax, (model, batch) in zip(axes[0], keys, strict=True):
        rows = {bar(r): r["train_images_per_second"] for r in results if (r["model"], r["batch_size"]) == (model, batch)}
        names = [b for b in backends if b in rows]
        med = [rows[b]["median"] for b in names]
        err = [[rows[b]["median"] - rows[b]["q1"] for b in names], [rows[b]["q3"] - rows[b]["median"] for b in names]]
        ax.bar(names, med, yerr=err, capsize=4, color="tab:blue")
        ax.set_title(f"{model}, batch {batch}")
        ax.tick_params(axis="x", rotation=45)
    axes[0][0].set_ylabel("training images/s (median; bars: IQR)")
    legend = "; ".join(f"m{i + 1}: {m}" for i, m in enumerate(machines)) if len(machines) > 1 else machines[0]
    fig.suptitle(f"Steady-state training throughput ({legend})")
    fig.tight_layout()
    return _png(fig)


def _batch_figure(results: list[dict]) -> bytes | None:
    """Step time against batch size per backend (log-log), one panel per model: the points bench measured and the
    fitted ``a + b*B`` line; where the lines flatten on the left, the fixed cost dominates."""
    from vaebench.measure.fit import batch_fits

    fits = batch_fits(results)
    if not fits:
        return None
    plt = pyplot()
    models = sorted({f["model"] for f in fits})
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for f in (f for f in fits if f["model"] == model):
            bs = np.array([b for b, _ in f["points"]], float)
            (line,) = ax.plot(bs, [1e3 * t for _, t in f["points"]], "o", label=f"{f['backend']} {f['setting']}")
            grid = np.geomspace(bs.min(), bs.max(), 50)
            ax.plot(grid, 1e3 * (f["fixed_seconds"] + f["seconds_per_image"] * grid), "-", color=line.get_color())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_title(model)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("ms per training step (median)")
    fig.suptitle("Fixed and per-image cost: step time = a + b·batch")
    fig.tight_layout()
    return _png(fig)


def _curves_figure(runs: list[tuple[Path, dict]]) -> bytes:
    """Test -ELBO per epoch and per training second. Each run has its own colour, marker and dash, so runs that
    agree exactly (same seed, two backends) still show as two lines."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    styles = itertools.cycle(itertools.product(["-", "--", ":", "-."], ["o", "s", "^", "D", "v", "x"]))
    for (path, m), (dash, marker) in zip(runs, styles, strict=False):  # styles cycle forever
        hist = m["history"]
        label = f"{m['config']['backend']} · {m['config']['model']} · {path.name}"
        elbo = [np.nan if h.get("test_neg_elbo") is None else h["test_neg_elbo"] for h in hist]  # a VQ run has none
        kw = {"linestyle": dash, "marker": marker, "alpha": 0.8, "markerfacecolor": "none", "label": label}
        left.plot([h["epoch"] for h in hist], elbo, **kw)
        right.plot(np.cumsum([h["epoch_seconds"] for h in hist]), elbo, **kw)
    left.set_xlabel("epoch")
    right.set_xlabel("training wall-clock seconds")
    left.set_ylabel("test -ELBO (nats)")
    left.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.suptitle("Test -ELBO per epoch and per second")
    return _png(fig)


def _grids_figure(runs: list[tuple[Path, dict]]) -> bytes | None:
    """Every run's grid.png for report.md, three to a row at a readable size."""
    plt = pyplot()
    have = [(p, m) for p, m in runs if (p / "grid.png").exists()]
    if not have:
        return None
    cols = min(3, len(have))
    rows = math.ceil(len(have) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 6.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (path, m) in zip(axes.ravel(), have, strict=False):  # the last row may have empty axes
        ax.imshow(plt.imread(path / "grid.png"))
        ax.set_title(f"{m['config']['backend']} · {m['config']['model']} · {path.name}")
    return _png(fig)


def _method_lines(results: list[dict]) -> list[str]:
    """How the throughput figures were measured, read from the rows themselves."""
    schedules = sorted({r.get("settings", {}).get("schedule", "sequential (schema 1)") for r in results})
    lines = [f"Schedule: {', '.join(schedules)}.", ""]
    if "interleaved" in schedules:
        lines += [
            "Interleaved: for each (model, batch) cell every backend ran in a live worker process of its own, with the",
            "same thread count, and only one computed at a time: timing windows were handed out in turn, the order",
            "rotated every round and every other worker frozen, so machine drift landed on every backend alike.",
            "Ratios are to the cell's fastest backend: the median of per-round paired ratios, with a 95% bootstrap",
            "interval over rounds, printed to the digits the interval supports.",
            "",
        ]
    lines += [
        "Memory: peak RSS of a fresh worker process per (backend, cell); no row carries another row's peak.",
        "",
        "Profile/precision: `default` is each framework's usual idiom, `best` its fastest setting measured here;",
        "`fp32` is strict float32 (no TF32).",
    ]
    return lines


def _versions(env: dict) -> str:
    """The framework versions an environment record holds, as one line."""
    return ", ".join(f"{k} {v}" for k, v in env.items() if k in ("torch", "jax", "flax", "optax", "keras", "tensorflow"))


def _environment(bench: list[dict], runs: list[tuple[Path, dict]]) -> Table:
    """Where each figure came from: machine, threads, versions, profile and precision, one row per source."""
    t = Table(["source", "machine", "backend", "device", "threads", "profile/precision", "execution", "versions"])
    seen = set()
    for r in bench:
        env, settings = r.get("environment") or {}, r.get("settings") or {}
        versions = _versions(env)
        row = (
            Path(r.get("source", "?")).parent.name or ".",
            r.get("machine", "?"),
            r.get("backend", "?"),
            str(env.get("device", "?")),
            str(env.get("threads", "?")),
            f"{settings.get('profile', '?')}/{settings.get('precision', '?')}",
            str(env.get("execution", "?")),
            versions,
        )
        if row not in seen:
            seen.add(row)
            t.add(*row)
    for path, m in runs:
        env = m.get("environment") or {}
        backend = env.get("backend") or {}
        versions = _versions(backend)
        execution = m.get("execution") or {}
        t.add(
            path.name,
            str(env.get("cpu_model", "?")),
            m["config"]["backend"],
            str(backend.get("device", "?")),
            str(backend.get("threads", "?")),
            f"{execution.get('profile', 'default')}/{execution.get('precision', m['config'].get('precision', '?'))}",
            str(backend.get("execution", "?")),
            versions,
        )
    return t


def _inline(text: str) -> str:
    """Escaped text with `code` spans: the only markup in prose, and only in prose this module wrote."""
    parts = html.escape(text, quote=False).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_table(table: Table, table_id: str) -> str:
    head = "".join(f'<th aria-sort="none">{html.escape(h)}</th>' for h in table.header)
    body = []
    for row in table.rows:
        cells = []
        for i, (text, key) in enumerate(row):
            if isinstance(key, float) and not math.isfinite(key):
                key = "Infinity" if key > 0 else "-Infinity" if key < 0 else "NaN"
            cls = ' class="r"' if i in table.right else ""
            cells.append(f'<td{cls} data-sort="{html.escape(str(key))}">{html.escape(text)}</td>')
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<table class="sortable" id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def _img(data: bytes, alt: str, cls: str = "fig") -> str:
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def write_report(
    bench: list[dict], runs: list[tuple[Path, dict]], out_dir: Path, margin: float = EQUIVALENCE_MARGIN
) -> tuple[Path, Path]:
    """``report.md`` (text tables, pictures beside it) and a self-contained ``report.html`` (see the module)."""
    out_dir = Path(out_dir)
    done = [(p, m) for p, m in runs if m.get("status") == "completed"]
    throughput, ttq, harness = by_kind(bench)
    figures: dict[str, bytes] = {}
    if throughput:
        figures["throughput.png"] = _throughput_figure(throughput)
        batch = _batch_figure(throughput)
        if batch:
            figures["batch.png"] = batch
    if done:
        figures["curves.png"] = _curves_figure(done)
        grids = _grids_figure(done)
        if grids:
            figures["grids.png"] = grids

    # (title, prose lines, table id, table, figure names) per section, rendered twice below
    sections: list[tuple[str, list[str], str, Table | None, list[str]]] = []
    if throughput:
        machines = sorted({r["machine"] for r in throughput})
        named = ", ".join(f"m{i + 1} = {m}" for i, m in enumerate(machines)) if len(machines) > 1 else machines[0]
        prose = [f"Machine(s): {named}. Ratios pair backends within one bench on one machine.", "", *_method_lines(throughput)]
        sections.append(("Training throughput", prose, "throughput", bench_rows(throughput), ["throughput.png"]))
        tuned = tuning_rows(throughput)
        if tuned.rows:
            prose = [
                "`--profile best`: every candidate variant of a backend (its tunables: compile, layout, XLA, the",
                "formulation of transposed convolutions) timed in one process, rounds rotated, and its paired ratio to",
                "the variant `--profile default` runs, with a 95% bootstrap interval. The chosen one is timed in the",
                "matrix above like any row. Every candidate computes the same function (each passes the kit).",
            ]
            sections.append(("What best is worth", prose, "tuning", tuned, []))
        if "batch.png" in figures:
            prose = [
                "Step time (batch / median images/s) fitted as a + b·batch per backend and model, least squares on",
                "relative residuals: a is what every step costs whatever its size (dispatch, host work, the optimizer),",
                "1/b the images/s a backend approaches at large batches. The fixed share is a's part of the smallest",
                "batch's step; the residual is the fit's RMS relative error (none with two batch sizes). A fit whose",
                "a comes out below 0 is shown as not linear: that backend's time per image grows with the batch",
                "(its images/s falls from one batch size to the next), so no fixed cost can be read from the line.",
            ]
            sections.append(("Fixed and per-image cost", prose, "batchfit", batch_fit_rows(throughput), ["batch.png"]))
    if harness:
        prose = [
            "Each plugin, fed as the runner feeds it and run as its variant column says (`--variants-from` a",
            "bench.json: the variant that bench's row ran), against the fastest minimal hand-written loop of its own",
            "framework (`tests/benchmarks/*_yardstick.py`, given tensors made up front; the fastest of Flax with",
            "ConvTranspose or the sub-pixel form, torch eager or under torch.compile, TensorFlow graph or XLA). Each",
            "yardstick computes the plugin's function: same canonical weights in, same loss, outputs and gradients",
            "out (`tests/test_yardstick_loops.py`).",
            "Both in one process (`python tests/benchmarks/harness_ratio.py --backend B --json harness.json`), windows of",
            "about bench's length in rounds whose order rotates, after a warm-up round; the ratio is the median of the",
            "per-round paired ratios with its 95% bootstrap interval (in brackets where recorded), and the last column is",
            "the plugin's step-time overhead 1/ratio - 1 with that interval mapped through it. Negative: the plugin ran",
            "faster. An interval holding 0 means no overhead was measured.",
        ]
        sections.append(("What the harness costs", prose, "harness", harness_rows(harness), []))
    exact = exactness_entries(bench)
    if exact:
        prose = [
            "`conv` is the keras.io network as written, with TensorFlow's 'same' padding: (0, 1) before each stride-2",
            "convolution, each transposed convolution computed in full and cropped. Keras has that rule built in on",
            "every engine; torch pads and crops around its own convolutions. `conv-sym` is its twin with symmetric",
            "padding (the same layers, FLOPs and parameter shapes, the pixels shifted by one), which torch's Conv2d and",
            "ConvTranspose2d take as arguments and Keras, with only 'valid' and 'same', emulates with padding and",
            "cropping layers; lax takes any padding pair, so jax computes both natively. A positive cost is the price",
            "of exactness; a negative one says the exact network is the one the framework computes natively.",
            "Each backend's pair is timed as one cell of bench's coordinator (`vaebench exactness`: a worker process per",
            "model, windows in turn, the order rotated every round), so drift between benches does not enter the ratio.",
            "The ratio is the exact network's images/s over the twin's (median of per-round paired ratios, 95% bootstrap",
            "interval); the last column is its cost in time, 1/ratio - 1.",
        ]
        sections.append(("What exactness costs", prose, "exactness", exactness_rows(exact), []))
    slugs: set[str] = set()
    for doc in explain_docs(bench):
        objective = (doc.get("objective") or {}).get("objective", "vae")
        base = f"{doc['model']}-b{doc['batch_size']}" + ("" if objective == "vae" else f"-{objective}")
        first = slug = re.sub(r"[^A-Za-z0-9_.-]", "_", base)  # names from a file: no path in them
        for n in itertools.count(2):  # two documents of one cell (another variant) keep a figure each
            if slug not in slugs:
                break
            slug = f"{first}-{n}"
        slugs.add(slug)
        name = f"explain-{slug}.png"
        figures[name] = heatmap_png(doc)
        prose = [
            f"`vaebench explain`, {doc['model']} at batch {doc['batch_size']}, {doc['precision']}{trained_on(doc)}: each "
            "layer's forward pass",
            "and its two gradients per backend, ms per batch and achieved GFLOP/s; a cell more than",
            f"{doc['slow_factor']:g}x the fastest backend on its row is marked. Method: {doc['method']}.",
        ]
        title = f"Where the time goes: {doc['model']}, batch {doc['batch_size']}{trained_on(doc)}"
        sections.append((title, prose, f"explain-{slug}", explain_table(doc), [name]))
    if ttq:
        prose = [
            "Seconds from the first touch of the data to the target test -ELBO, each seed in a fresh process,",
            "at the model's own batch size; median and full range over seeds (nothing trimmed), and how many seeds",
            "reached the target. `best` trains the variant a best bench's tuner picked for that model and batch",
            "size (its tuning windows are the bench's, outside the clock); `default` the plugin defaults.",
        ]
        sections.append(("Time to quality", prose, "ttq", ttq_rows(ttq), []))
    # runs that look alike but differ in data, model, objective or recipe: said where the reader looks for the pairing
    found = comparability_notes(runs)
    notes = ["", *(plain(n).replace("\\`", "'") for n in found)] if found else []
    if has_seeds(runs):
        prose = [
            "Completed runs grouped by model and setting: each backend's final test -ELBO as mean ± sample std over",
            "seeds, its split into reconstruction and KL, the IWAE NLL (with its k) where runs computed one, active units",
            "(AU), and its median training images/s (`packed` runs shared their node: not timing-grade; see `--exclusive`).",
            *notes,
            *(["", *(f"beta trend: {plain(line)}" for line in beta_trends(runs))] if beta_trends(runs) else []),
        ]
        notes = []
        sections.append(("Over seeds", prose, "seeds", seed_rows(runs), []))
        prose = [
            "For each pair of backends, the difference of mean test -ELBO (A - B) with its 95% t interval, paired by",
            "seed (same seed: same initial weights, batches and noise) or Welch's where seeds differ. TOST asks whether",
            f"the difference lies within ±{margin:g} nats: `equivalent` when both one-sided tests reject at 5%,",
            "`different` when the interval excludes zero without equivalence, `inconclusive` otherwise.",
        ]
        sections.append(("Same quality?", prose, "equivalence", equivalence_rows(runs, margin), []))
    if any(m.get("status") == "completed" and (m.get("final") or {}).get("test_loss") is not None for _, m in runs):
        prose = [
            "Models with a vector-quantised bottleneck have no ELBO: each backend's test and training-set",
            "reconstruction loss (MSE over the recipe's pixel variance, lower is better) as mean ± std over seeds, the",
            "codebook's perplexity (exp of the entropy of the test set's codes; the codebook's size if all are used",
            "alike) and the fraction of codes used, the bits an image's code map costs, and the median images/s.",
        ]
        sections.append(("Vector-quantised models", prose, "vq", vq_rows(runs), []))
    if runs:
        prose = ["Runs whose status is not `completed` are listed and left out of the curves and grids.", *notes]
        names = [n for n in ("curves.png", "grids.png") if n in figures]
        sections.append(("Runs", prose, "runs", runs_rows(runs), names))

    md = ["# vaebench report", ""]
    for title, prose, _tid, table, names in sections:
        md += [f"## {title}", "", *prose, ""]
        if table is not None:
            md += ["```", *table.lines(), "```", ""]
        md += [line for name in names for line in (f"![{name}]({name})", "")]

    body = ["<h1>vaebench report</h1>"]
    for title, prose, tid, table, names in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        paragraphs = "\n".join(prose).split("\n\n")
        body += [f"<p>{_inline(' '.join(p.split()))}</p>" for p in paragraphs if p.strip()]
        if table is not None:
            body.append(_html_table(table, tid))
        for name in names:
            if name == "grids.png":  # in the page, each grid at full size, side by side
                grids = [
                    f"<figure>{_img((p / 'grid.png').read_bytes(), f'grid of {p.name}', 'grid')}"
                    f"<figcaption>{html.escape(m['config']['backend'])} · {html.escape(m['config']['model'])} · "
                    f"{html.escape(p.name)}</figcaption></figure>"
                    for p, m in done
                    if (p / "grid.png").exists()
                ]
                body.append(f'<div class="grids">{"".join(grids)}</div>')
            else:
                body.append(_img(figures[name], name))
    if bench or runs:
        env = _environment(throughput, runs)
        body.append(f"<details><summary>Environment</summary>{_html_table(env, 'environment')}</details>")
    page = (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><title>vaebench report</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + f"\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
    # only now, with every part built, is anything written: the report as a whole or not at all
    atomic_write_files(out_dir, {**figures, "report.md": "\n".join(md).encode(), "report.html": page.encode()})
    return out_dir / "report.md", out_dir / "report.html"
