"""``explain.json`` as people read it: a per-layer table, the step split, and a heat map.

Rows are a layer and one of its products (forward, gradient to the input,
gradient to the weights), columns are backends; a cell gives milliseconds per
batch and achieved GFLOP/s, and is flagged where it is more than the
document's ``slow_factor`` times the fastest backend on that row. The heat map
colours the same cells by how many times slower than the fastest they are, so
the one slow product stands out before anyone reads a number.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from vaebench.errors import VaebenchError
from vaebench.io.fileio import atomic_write_bytes, read_json
from vaebench.report.tables import Table, plain

#: the explain.json schema this module reads (written by :mod:`vaebench.measure.explain`)
READS_SCHEMA = 1
PHASE_LABELS = {"forward": "forward", "grad_input": "grad to input", "grad_weights": "grad to weights"}
STEP_LABELS = (
    ("step", "step (as bench times it)"),
    ("forward", "forward (loss alone)"),
    ("backward", "backward"),
    ("optimizer", "optimizer"),
)


def escape_markdown(text: str) -> str:
    """A name from a file, safe in a Markdown table cell: :func:`plain`, and ``|`` escaped."""
    return plain(text).replace("|", "\\|")


def read_explain(path: Path) -> dict[str, Any]:
    """An explain document, refused in one line if it is not one this version reads."""
    doc = read_json(path, "run `vaebench explain --out DIR` to write one")
    if not isinstance(doc, dict) or doc.get("kind") != "explain":
        raise VaebenchError(f"{path}: not an explain.json (no kind 'explain')")
    if doc.get("schema_version") != READS_SCHEMA:
        raise VaebenchError(f"{path}: explain schema {doc.get('schema_version')!r}; this vaebench reads {READS_SCHEMA}")
    return doc


def _ms(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "—"
    return f"{seconds * 1e3:.3g} ms"


def _timed(cell: dict[str, Any]) -> str:
    """A measured part: its median, or that it is within the noise (quartiles over rounds reach zero)."""
    return _ms(cell["seconds"]) if cell.get("resolved", True) else f"~0 ({_ms(cell['seconds'])}, within the noise)"


def _share(share: float | None) -> str:
    return "—" if share is None else f"{share:+.0%}"


def _cell(cell: dict[str, Any] | None, slow: float) -> str:
    if cell is None:
        return "— (no step computes it)"
    text = _timed(cell)
    if cell.get("gflops") is not None:
        text += f" · {cell['gflops']:.3g} GF/s"
    factor = cell.get("vs_fastest")
    if factor is not None and factor > slow:
        text += f" · **{factor:.1f}x the fastest**"
    return text


def rows(doc: dict[str, Any]) -> list[tuple[str, str, list[dict[str, Any] | None]]]:
    """``(layer, phase, cells per backend)`` in spec order."""
    backends = doc["backends"]
    out = []
    for i, layer in enumerate(backends[0]["layers"] if backends else []):
        for phase in PHASE_LABELS:
            out.append((layer["name"], phase, [b["layers"][i]["phases"][phase] for b in backends]))
    return out


def explain_table(doc: dict[str, Any]) -> Table:
    """The per-layer table as a report :class:`~vaebench.report.tables.Table` (text and HTML alike)."""
    slow = float(doc["slow_factor"])
    t = Table(["layer", "phase", *(b["backend"] for b in doc["backends"])])
    for layer, phase, cells in rows(doc):
        t.add(layer, PHASE_LABELS[phase], *((_cell(c, slow).replace("**", ""), (c or {}).get("seconds", -1.0)) for c in cells))
    steps = [b["step"] for b in doc["backends"]]
    for key, label in STEP_LABELS:
        t.add("whole step", label, *((_timed(s[key]), s[key]["seconds"]) for s in steps))
    t.add(
        "whole step",
        "remainder",
        *((f"{_ms(s['remainder_seconds'])} ({_share(s['remainder_share'])})", s["remainder_seconds"]) for s in steps),
    )
    return t


def trained_on(doc: dict[str, Any]) -> str:
    """``, trained on iwae (K=5)`` for a document whose step trained on another objective than the plain -ELBO
    (documents from before ``--objective`` trained on it and say nothing)."""
    objective = doc.get("objective") or {}
    if objective.get("objective", "vae") == "vae":
        return ""
    return f", trained on {escape_markdown(str(objective.get('text')))}"


def table_lines(doc: dict[str, Any]) -> list[str]:
    """The Markdown of explain.md: method, the per-layer table, flags, the step split per backend."""
    names = [escape_markdown(b["backend"]) for b in doc["backends"]]
    slow = float(doc["slow_factor"])
    lines = [
        f"# Where the time goes: {escape_markdown(doc['model'])}, batch {doc['batch_size']}, {doc['precision']}{trained_on(doc)}",
        "",
        f"Method: {doc['method']}.",
        "",
        f"FLOPs: {doc['convention']}.",
        "",
        "| layer | phase | " + " | ".join(names) + " |",
        "|---|---|" + "---|" * len(names),
    ]
    for layer, phase, cells in rows(doc):
        lines.append(f"| {layer} | {PHASE_LABELS[phase]} | " + " | ".join(_cell(c, slow) for c in cells) + " |")
    lines += ["", f"## Cells more than {slow:g}x the fastest backend on the same layer and phase", ""]
    flags = sorted(doc["flags"], key=lambda f: -f["times_fastest"])
    lines += [
        f"- {escape_markdown(f['backend'])}: {f['layer']} {PHASE_LABELS[f['phase']]}, {f['times_fastest']:.1f}x the fastest"
        for f in flags
    ] or ["- none"]
    lines += ["", "## The step, split", "", "| part | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    steps = [b["step"] for b in doc["backends"]]
    for key, label in STEP_LABELS:
        lines.append(f"| {label} | " + " | ".join(_timed(s[key]) for s in steps) + " |")
    lines.append("| layers' forward (sum) | " + " | ".join(_ms(s["layers_forward_seconds"]) for s in steps) + " |")
    lines.append("| layers' gradients (sum) | " + " | ".join(_ms(s["layers_backward_seconds"]) for s in steps) + " |")
    lines.append(
        "| remainder: step − layers − optimizer | "
        + " | ".join(f"{_ms(s['remainder_seconds'])} ({_share(s['remainder_share'])})" for s in steps)
        + " |"
    )
    notes = [f"- {escape_markdown(b['backend'])}: {b['step']['note']}" for b in doc["backends"] if b["step"]["note"]]
    tolerance = steps[0]["tolerance"] if steps else 0.25
    lines += ["", f"Parts add up within ±{tolerance:.0%} of the step unless noted:", ""] + (notes or ["- all do"])
    return lines


def heatmap(doc: dict[str, Any], path: Path) -> Path:
    """:func:`heatmap_png` written to ``path``."""
    atomic_write_bytes(path, heatmap_png(doc))
    return path


def heatmap_png(doc: dict[str, Any]) -> bytes:
    """A PNG: one row per layer and phase, one column per backend, coloured by times the fastest (log scale)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    table = rows(doc)
    names = [b["backend"] for b in doc["backends"]]
    grid = np.full((len(table), len(names)), np.nan)
    for r, (_, _, cells) in enumerate(table):
        for c, cell in enumerate(cells):
            if cell is not None and cell.get("vs_fastest"):
                grid[r, c] = math.log10(cell["vs_fastest"])
    fig, ax = plt.subplots(figsize=(2.2 + 2.4 * len(names), 0.9 + 0.32 * len(table)))
    top = max(math.log10(max(float(doc["slow_factor"]) * 3, 2)), float(np.nanmax(grid)) if np.isfinite(grid).any() else 1)
    image = ax.imshow(grid, cmap="Reds", vmin=0, vmax=top, aspect="auto")
    for r, (_, _, cells) in enumerate(table):
        for c, cell in enumerate(cells):
            text = "—" if cell is None else _ms(cell["seconds"]) if cell.get("resolved", True) else "~0"
            if cell is not None and cell.get("gflops") is not None:
                text += f"\n{cell['gflops']:.3g} GF/s"
            ax.text(c, r, text, ha="center", va="center", fontsize=7)
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(table)), [f"{layer} {PHASE_LABELS[phase]}" for layer, phase, _ in table], fontsize=7)
    bar = fig.colorbar(image, ax=ax)
    ticks = [t for t in (1, 2, 3, 10, 30, 100) if math.log10(t) <= top]
    bar.set_ticks([math.log10(t) for t in ticks], labels=[f"{t}x" for t in ticks])
    bar.set_label("times the fastest backend on the row")
    title = f"Where the time goes: {doc['model']}, batch {doc['batch_size']}{trained_on(doc)} (ms per batch, GFLOP/s)"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def write_readable(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """explain.md and explain.png beside explain.json."""
    md = Path(out_dir) / "explain.md"
    atomic_write_bytes(md, ("\n".join(table_lines(doc)) + "\n").encode())
    return [md, heatmap(doc, Path(out_dir) / "explain.png")]
