"""``vaebench compare``: what it reads (``bench.json`` files, harness documents, run and sweep folders) and its tables.

Nothing here runs a framework: it reads what ``vaebench bench`` and
``vaebench run`` wrote, each file checked against its schema first. Each table
is built once as a :class:`Table` and rendered as text (terminal, report.md)
or as a sortable HTML table (:mod:`vaebench.report.page`).
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaebench.measure.stats import EQUIVALENCE_MARGIN, equivalence, mean_std, trend
from vaebench.run.results import COMPARABLE, comparable, objective_of


def plain(text: str) -> str:
    """``text`` safe for a terminal and a Markdown code block: control characters (a newline, an escape sequence)
    written as ``\\n`` or ``\\x1b``, and backticks as ``\\```, so a name from a file cannot end the block or draw."""
    out = []
    for c in str(text):
        if c == "`":
            out.append("\\`")
        elif unicodedata.category(c).startswith("C"):
            out.append(repr(c)[1:-1] if c.isascii() else f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)


@dataclass
class Table:
    """A table once, rendered twice: fixed-width text (the terminal, report.md) and a sortable HTML table.

    Each cell is its display text and the value a column sorts by (numbers sort
    as numbers, ``nan`` last), so the HTML can sort without reparsing text.
    """

    header: list[str]
    rows: list[list[tuple[str, Any]]] = field(default_factory=list)
    right: set[int] = field(default_factory=set)  # columns aligned right (numbers)

    def add(self, *cells: tuple[str, Any] | str) -> None:
        self.rows.append([c if isinstance(c, tuple) else (c, c) for c in cells])

    def lines(self) -> list[str]:
        """Fixed-width text, every cell through :func:`plain` (the HTML escapes its own way)."""
        header = [plain(h) for h in self.header]
        rows = [[(plain(text), key) for text, key in r] for r in self.rows]
        widths = [max([len(h)] + [len(r[i][0]) for r in rows]) for i, h in enumerate(header)]

        def fmt(cells: list[str]) -> str:
            return " ".join(
                c.rjust(w) if i in self.right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ).rstrip()

        return [fmt(header), *(fmt([c[0] for c in r]) for r in rows)]


def _n(value: float | None, spec: str) -> tuple[str, float]:
    """A number cell: formatted text, and the value to sort by (``nan`` for missing)."""
    v = float("nan") if value is None else float(value)
    return format(v, spec), v


def variant_text(compile: bool | None, options: dict | None) -> str:
    """A variant as one cell: ``compile`` and each option ``k=v``, or ``plugin defaults`` for none of them."""
    parts = (["compile"] if compile else []) + [f"{k}={v}" for k, v in sorted((options or {}).items())]
    return ", ".join(parts) or "plugin defaults"


def ttq_rows(entries: list[dict]) -> Table:
    """Time to quality per model, profile and backend: the variant trained, median and full range over seeds, and
    how many reached the target (an entry without a profile is from before bench recorded one: ``default``)."""
    t = Table(["model", "profile", "backend", "variant", "target", "median s", "range s", "reached"], right={4, 5, 6, 7})

    def order(e: dict) -> tuple:
        return (e["model"], e.get("profile", "default"), e["median"] if e["median"] is not None else float("inf"))

    for e in sorted(entries, key=order):
        span = f"{e['min']:.1f}-{e['max']:.1f}" if e["median"] is not None else "-"
        med = _n(e["median"], ".1f") if e["median"] is not None else ("never", float("inf"))
        target = e.get("target", e["runs"][0]["target"] if e.get("runs") else None)
        variant = e.get("variant") or {}
        t.add(
            e["model"],
            e.get("profile", "default"),
            e["backend"],
            variant_text(variant.get("compile"), variant.get("options")),
            _n(target, ".1f"),
            med,
            (span, e["min"] or 0),
            (f"{e['reached']}/{e['seeds']}", e["reached"]),
        )
    return t


def ttq_table(entries: list[dict]) -> list[str]:
    """:func:`ttq_rows` as text."""
    return ttq_rows(entries).lines()


def _harness_ratio(r: dict) -> tuple[float, float | None, float | None]:
    """A harness row's plugin/yardstick throughput ratio and its interval: ``ratio`` with ``ratio_low`` and
    ``ratio_high`` (bench's paired method, as ``harness_ratio.py`` writes it; the schema's ``ratio`` stays a
    number), a dict ``{value, low, high}``, or, in rows written before either, a bare number with no interval."""
    ratio = r["ratio"]
    if isinstance(ratio, dict):
        return ratio["value"], ratio.get("low"), ratio.get("high")
    return ratio, r.get("ratio_low"), r.get("ratio_high")


def _overhead_text(ratio: float, low: float | None, high: float | None) -> str:
    """Step-time overhead ``1/ratio - 1`` (a throughput ratio of 0.6 is +67% time per step), with its interval."""
    text = f"{100 * (1 / ratio - 1):+.1f}%"
    if low and high:
        text += f" [{100 * (1 / high - 1):+.1f}%, {100 * (1 / low - 1):+.1f}%]"
    return text


def harness_rows(rows: list[dict]) -> Table:
    """Each plugin against the fastest hand-written yardstick of its framework, timed side by side in one process.

    The last column is what the harness costs in time: step-time overhead ``1/ratio - 1`` with the
    ratio's interval mapped through it (not ``1 - ratio``, which is a throughput shortfall).
    """
    t = Table(
        [
            "backend",
            "model",
            "batch",
            "plugin variant",
            "plugin img/s",
            "IQR",
            "yardstick",
            "img/s",
            "IQR",
            "ratio",
            "step-time overhead (1/ratio-1)",
        ],
        right={2, 4, 5, 7, 8, 9, 10},
    )
    for r in sorted(rows, key=lambda r: (r["backend"], r["model"], r["batch_size"])):
        p, ref = r["results"]["plugin"], r["results"][r["fastest_yardstick"]]
        ratio, low, high = _harness_ratio(r)
        ratio_text = f"{ratio:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low and high else "")
        t.add(
            r["backend"],
            r["model"],
            (str(r["batch_size"]), r["batch_size"]),
            variant_text(r.get("compile"), r.get("options")),
            _n(p["median"], ".0f"),
            (f"{p['q1']:.0f}-{p['q3']:.0f}", p["q1"]),
            r["fastest_yardstick"],
            _n(ref["median"], ".0f"),
            (f"{ref['q1']:.0f}-{ref['q3']:.0f}", ref["q1"]),
            (ratio_text, ratio),
            (_overhead_text(ratio, low, high), 1 / ratio - 1),
        )
    return t


def harness_table(rows: list[dict]) -> list[str]:
    """:func:`harness_rows` as text."""
    return harness_rows(rows).lines()


def exactness_rows(rows: list[dict]) -> Table:
    """Each backend's cost of exactness: the source's network (TF 'same' padding) against its symmetrically padded twin.

    Both timed as one interleaved cell (``vaebench exactness``); the ratio is the exact model's images/s over the
    twin's, paired by round, and the last column its cost in time, step-time overhead ``1/ratio - 1`` with the
    interval mapped through it. A row whose windows saw other processes busy says so.
    """
    t = Table(
        ["backend", "model", "batch", "exact img/s", "twin", "img/s", "ratio", "step-time cost (1/ratio-1)", "load"],
        right={2, 3, 5, 6, 7},
    )
    for r in sorted(rows, key=lambda r: (r["model"], r["batch_size"], r["cost"]["value"])):
        ratio = r["ratio"]
        t.add(
            r["backend"],
            r["model"],
            (str(r["batch_size"]), r["batch_size"]),
            _n(r["exact"]["median"], ".0f"),
            r["twin"],
            _n(r["native"]["median"], ".0f"),
            (f"{ratio['value']:.3f} [{ratio['low']:.3f}, {ratio['high']:.3f}]", ratio["value"]),
            (_overhead_text(ratio["value"], ratio["low"], ratio["high"]), r["cost"]["value"]),
            "busy" if (r.get("load") or {}).get("busy") else "",
        )
    return t


def exactness_table(rows: list[dict]) -> list[str]:
    """:func:`exactness_rows` as text."""
    return exactness_rows(rows).lines()


def _ratio_text(r: dict, fastest: float) -> str:
    ratio = r.get("ratio")
    if ratio:  # schema 2: measured interleaved, with its bootstrap interval
        return ratio["text"]
    return f"{r['train_images_per_second']['median'] / fastest:.2f}"


def _setting(r: dict) -> str:
    s = r.get("settings", {})
    busy = " BUSY" if (r.get("load") or {}).get("busy") else ""  # timed with --allow-busy on a loaded machine
    return f"{s.get('profile', '?')}/{s.get('precision', '?')}{busy}"


def bench_rows(results: list[dict]) -> Table:
    """Throughput per (model, batch): median, IQR and windows; the ratio to the cell's fastest with its 95% interval
    (printed to the digits the interval supports); achieved GFLOP/s of the training step (the cost model's FLOPs per image
    times the median images/s) and its share of the machine's measured fp32 GEMM peak; profile/precision; compile, eval,
    grid and memory (the cell's own
    worker process: peak RSS, and the accelerator allocator's peak where a GPU ran, else ``-``)."""
    t = Table(
        [
            "model",
            "batch",
            "backend",
            "img/s median",
            "IQR",
            "n",
            "ratio (95% CI)",
            "GFLOP/s",
            "% peak",
            "profile",
            "compile s",
            "eval s",
            "grid ms",
            "peak MB",
            "GPU MB",
            "source",
        ],
        right={1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14},
    )
    # a cell is (machine, model, batch): ratios are paired within one bench on one machine, never across machines
    keys = sorted({(str(r.get("machine", "")), r["model"], r["batch_size"]) for r in results})
    machines = sorted({m for m, _, _ in keys})
    for machine, model, batch in keys:
        group = [r for r in results if (str(r.get("machine", "")), r["model"], r["batch_size"]) == (machine, model, batch)]
        fastest = max(r["train_images_per_second"]["median"] for r in group)

        def paired(r: dict, fastest: float = fastest) -> float:  # rows and the ratio column sort by the printed ratio
            ratio = r.get("ratio") or {}
            return ratio["value"] if "value" in ratio else r["train_images_per_second"]["median"] / fastest

        for r in sorted(group, key=lambda r: -paired(r)):
            s = r["train_images_per_second"]
            ev, grid = r.get("eval_pass_seconds"), r.get("grid_decode_seconds")
            gpu, work = r.get("peak_device_memory_mb"), r.get("work") or {}
            share = work.get("fraction_of_peak")
            where = f" @m{machines.index(machine) + 1}" if len(machines) > 1 else ""
            t.add(
                model,
                (str(batch), batch),
                r["backend"] + where,
                _n(s["median"], ".0f"),
                (f"{s['q1']:.0f}-{s['q3']:.0f}", s["q1"]),
                (str(s["windows"]), s["windows"]),
                (_ratio_text(r, fastest), paired(r)),
                _n(work.get("achieved_gflops"), ".1f"),
                ("-", -1.0) if share is None else _n(100 * share, ".1f"),
                _setting(r),
                _n(s["compile_seconds"], ".2f"),
                _n(ev["median"] if ev else None, ".2f"),
                _n(1000 * grid["median"] if grid else None, ".1f"),
                _n(r["peak_rss_mb"], ".0f"),
                ("-", -1.0) if gpu is None else _n(gpu, ".0f"),
                Path(r["source"]).parent.name or ".",
            )
    return t


def batch_fit_rows(results: list[dict]) -> Table:
    """Fixed and per-image cost per backend and model (:func:`vaebench.measure.fit.batch_fits`): ``a`` in µs per step,
    asymptotic images/s ``1/b``, the fixed share of a step at the smallest batch timed, and the fit's relative residual."""
    from vaebench.measure.fit import batch_fits

    t = Table(
        ["model", "backend", "setting", "batches", "fixed µs/step", "asymptote img/s", "fixed share", "residual"],
        right={4, 5, 6, 7},
    )
    for f in batch_fits(results):
        smallest, step = f["points"][0]
        share = f["fixed_seconds"] / step
        asymptote = f["asymptotic_images_per_second"]
        linear = f["fixed_seconds"] >= 0  # a < 0: the step time grows faster than the batch, not a + b * batch
        t.add(
            f["model"],
            f["backend"],
            f["setting"],
            ",".join(str(b) for b, _ in f["points"]),
            _n(1e6 * f["fixed_seconds"], ".0f") if linear else ("not linear", -1.0),
            _n(asymptote, ".0f"),
            (f"{share:.0%} at {smallest}", share) if linear else ("-", -1.0),
            ("-", -1.0) if f["residual"] is None else (f"{f['residual']:.1%}", f["residual"]),
        )
    return t


def tuning_rows(results: list[dict]) -> Table:
    """What ``--profile best`` is worth per backend and cell: every candidate the tuner timed in one process (rounds
    rotated), its images/s, and its paired ratio to the variant ``--profile default`` runs, with its 95% interval."""
    t = Table(["model", "batch", "backend", "candidate", "img/s median", "vs default (95% CI)", "chosen"], right={1, 4, 5})
    for r in sorted(results, key=lambda r: (r["model"], r["batch_size"], r["backend"])):
        tuning = (r.get("settings") or {}).get("tuning") or {}
        chosen = (r.get("settings") or {}).get("variant") or {}
        for c in tuning.get("candidates") or []:
            vs = c.get("vs_default") or {}
            picked = c.get("compile") == chosen.get("compile") and c.get("options") == chosen.get("options")
            t.add(
                r["model"],
                (str(r["batch_size"]), r["batch_size"]),
                r["backend"],
                c.get("label", "?") + (" (default)" if c.get("label") == tuning.get("default") else ""),
                _n(c.get("median"), ".0f"),
                (vs.get("text", "-"), vs.get("value", float("nan"))),
                "yes" if picked else "",
            )
    return t


def bench_table(results: list[dict]) -> list[str]:
    """:func:`bench_rows` as text."""
    return bench_rows(results).lines()


def run_nll(metrics: dict) -> tuple[float | None, int | None]:
    """A run's importance-weighted test NLL and its ``k``: from the run itself, else from ``vaebench eval``.

    ``eval`` stores its result under ``evaluations.<backend>``; the training
    backend's own evaluation comes first, then the one with the largest ``k``.
    """
    final = metrics.get("final") or {}
    if final.get("test_nll") is not None:
        return final["test_nll"], final.get("iwae_k")
    run_id = metrics.get("run_id")
    evaluations = {  # a score recorded for another run (another run_id) never stands for this one
        name: e
        for name, e in (metrics.get("evaluations") or {}).items()
        if isinstance(e, dict) and (run_id is None or e.get("run_id") in (None, run_id))
    }
    scored = [e for e in evaluations.values() if isinstance(e.get("test_nll"), int | float)]
    own = evaluations.get(metrics["config"]["backend"])
    if isinstance(own, dict) and isinstance(own.get("test_nll"), int | float):
        return own["test_nll"], own.get("iwae_k")
    if scored:
        best = max(scored, key=lambda e: e.get("iwae_k") or 0)
        return best["test_nll"], best.get("iwae_k")
    return None, None


def nll_cell(nll: float | None, k: int | None) -> tuple[str, float]:
    """An NLL cell that names its ``k``: ``88.21 (k=100)``. A k=10 and a k=5000 NLL are different numbers
    (the bound tightens with k), so none is shown bare; sorting is by the value."""
    text, value = _n(nll, ".2f")
    return (text if nll is None else f"{text} (k={k if k is not None else '?'})"), value


def _throughput(m: dict) -> float | None:
    """A run's median training images/s over its epochs."""
    ips = [h["train_images_per_second"] for h in m.get("history", []) if h.get("train_images_per_second")]
    return float(np.median(ips)) if ips else None


def runs_rows(runs: list[tuple[Path, dict]]) -> Table:
    """Final quality and speed of each run; unfinished runs flagged."""
    t = Table(
        ["run", "backend", "model", "epochs", "test -ELBO", "NLL (IWAE k)", "AU", "s/epoch", "img/s", "status"],
        right=set(range(3, 9)),
    )
    vq = any(_is_vq(m) for _, m in runs)  # a VQ model's figures in columns of their own, only where one ran
    if vq:
        t = Table([*t.header[:7], "VQ recon", "perplexity", *t.header[7:]], right=set(range(3, 11)))
    for path, m in runs:
        cfg, hist, final = m["config"], m.get("history", []), m.get("final") or {}
        epoch_s = float(np.median([h["epoch_seconds"] for h in hist])) if hist else None
        au = final.get("active_units")
        nll, nll_k = run_nll(m)
        own = [_n(final.get("test_recon"), ".4f"), _n(final.get("perplexity"), ".1f")] if _is_vq(m) else [("", math.nan)] * 2
        t.add(
            path.name[:40],
            cfg["backend"],
            cfg["model"],
            (str(len(hist)), len(hist)),
            _n(final.get("test_neg_elbo"), ".2f"),
            nll_cell(nll, nll_k),
            ("" if au is None else str(au), -1 if au is None else au),
            *(own if vq else []),
            _n(epoch_s, ".1f"),
            _n(_throughput(m), ".0f"),
            m["status"],
        )
    return t


def _is_vq(m: dict) -> bool:
    """Whether a run's model has a vector-quantised bottleneck: its final figures are the VQ ones (no -ELBO)."""
    return (m.get("final") or {}).get("test_loss") is not None


def vq_rows(runs: list[tuple[Path, dict]]) -> Table:
    """Completed runs of VQ models by model, setting and backend, over seeds: the test and training-set
    reconstruction loss (MSE over the recipe's variance; keras.io reports the training set's), the codebook's
    perplexity and the fraction of codes used, the bits an image's code map costs, the median images/s."""
    t = Table(
        ["model", "setting", "backend", "seeds", "test recon", "train recon", "perplexity", "codes used", "bits", "img/s"],
        right=set(range(3, 10)),
    )
    cells: dict[tuple[str, str, str], list[dict]] = {}
    for _path, m in runs:
        if m.get("status") == "completed" and _is_vq(m):
            cfg = m["config"]
            cells.setdefault((cfg["model"], _setting_of(cfg), cfg["backend"]), []).append(m)
    for (model, setting, backend), ms in sorted(cells.items()):
        ips = [v for v in map(_throughput, ms) if v is not None]
        t.add(
            model,
            setting,
            backend,
            (str(len(ms)), len(ms)),
            _spread(_finals(ms, "test_recon"), ".4f"),
            _spread(_finals(ms, "train_recon"), ".4f"),
            _spread(_finals(ms, "perplexity"), ".1f"),
            _spread(_finals(ms, "codes_used"), ".2f"),
            _n(ms[0]["final"].get("bits_per_image"), ".0f"),
            _n(float(np.median(ips)) if ips else None, ".0f"),
        )
    return t


def runs_table(runs: list[tuple[Path, dict]]) -> list[str]:
    """:func:`runs_rows` as text."""
    return runs_rows(runs).lines()


def _setting_of(cfg: dict) -> str:
    """What besides backend and seed defines a run, as a short label: runs with the same label are comparable."""
    parts = [f"bs{cfg.get('batch_size')}", f"lr{cfg.get('lr'):g}", f"ep{cfg.get('epochs')}"]
    if cfg.get("dataset", "mnist") != "mnist":
        parts.insert(0, str(cfg["dataset"]))
    parts += [f"z{cfg['latent_dim']}"] if cfg.get("latent_dim") is not None else []
    parts += [objective_of(cfg)] if objective_of(cfg) != "elbo" else []  # an objective axis is a group, not a clash
    parts += ["binarized"] if cfg.get("binarize") else []
    parts += [f"first {cfg['limit_train']}"] if cfg.get("limit_train") else []
    parts += [str(cfg["precision"])] if cfg.get("precision", "fp32") != "fp32" else []
    parts += ["compiled"] if cfg.get("compile") else []
    parts += [f"{k}={v}" for k, v in sorted((cfg.get("options") or {}).items())]
    return " ".join(parts)


def _comparable_cells(runs: list[tuple[Path, dict]]) -> dict[tuple[str, str], dict[tuple, list[dict]]]:
    """Completed runs by their (model, setting) label, then by the full comparability rule
    (:func:`~vaebench.run.results.comparable`): more than one entry under a label means runs that look alike but are not."""
    cells: dict[tuple[str, str], dict[tuple, list[dict]]] = {}
    for _path, m in runs:
        final = m.get("final") or {}
        if m.get("status") != "completed" or final.get("test_neg_elbo") is None:
            continue
        cfg = m["config"]
        key = tuple(comparable(m).items())
        cells.setdefault((cfg["model"], _setting_of(cfg)), {}).setdefault(key, []).append(m)
    return cells


def _differs(keys: list[tuple]) -> list[str]:
    """The comparability fields whose values differ between ``keys``."""
    values = [dict(k) for k in keys]
    return [f for f in COMPARABLE if len({v[f] for v in values}) > 1]


def seed_groups(runs: list[tuple[Path, dict]]) -> dict[tuple[str, str], dict[str, list[dict]]]:
    """Completed runs by (model, setting), then backend: the cells of a sweep.

    Only comparable runs share a cell (same data, model, objective and recipe):
    runs that share a label but differ in one of those are split, and each part's
    setting names what differs (``data 1a2b3c4d5e6f``), so no verdict pairs them.
    """
    cells: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for (model, setting), parts in _comparable_cells(runs).items():
        fields = _differs(list(parts)) if len(parts) > 1 else []
        for key, ms in parts.items():
            tag = " ".join(f"{f} {dict(key)[f]}" for f in fields)
            label = f"{setting} [{tag}]" if tag else setting
            for m in ms:
                cells.setdefault((model, label), {}).setdefault(m["config"]["backend"], []).append(m)
    return dict(sorted(cells.items()))


def comparability_notes(runs: list[tuple[Path, dict]]) -> list[str]:
    """One line per label whose runs were split because they are not comparable, naming the field that differs."""
    notes = []
    for (model, setting), parts in sorted(_comparable_cells(runs).items()):
        if len(parts) > 1:
            fields = _differs(list(parts))
            values = "; ".join(f"{f}: {' vs '.join(sorted({dict(k)[f] for k in parts}))}" for f in fields)
            notes.append(
                f"runs of {model} ({setting}) differ in {', '.join(fields)} ({values}): they are not seeds of one "
                "comparison and are shown apart"
            )
    return notes


def has_seeds(runs: list[tuple[Path, dict]]) -> bool:
    """Whether some backend has two or more seeds of one setting: then the seed tables say something."""
    return any(len(ms) > 1 for cell in seed_groups(runs).values() for ms in cell.values())


def _spread(values: list[float], spec: str) -> tuple[str, float]:
    """``mean ± std`` over seeds (the mean alone for one seed; blank when no run recorded it)."""
    if not values:
        return "", float("nan")
    mean, std = mean_std(values)
    return (f"{mean:{spec}}" + (f" ± {std:{spec}}" if std is not None else "")), mean


def _finals(ms: list[dict], key: str) -> list[float]:
    return [float(m["final"][key]) for m in ms if (m.get("final") or {}).get(key) is not None]


def seed_rows(runs: list[tuple[Path, dict]]) -> Table:
    """Per model, setting and backend: final test -ELBO as mean ± std over seeds, its split into reconstruction
    and KL, the IWAE NLL where runs computed one (with its k), active units, and the median throughput."""
    header = ["model", "setting", "backend", "seeds", "test -ELBO mean", "± std", "recon", "KL", "NLL", "AU"]
    t = Table([*header, "img/s (median)", "placement"], right={3, 4, 5, 6, 7, 8, 9, 10})
    for (model, setting), cell in seed_groups(runs).items():
        for backend, ms in sorted(cell.items()):
            mean, std = mean_std([m["final"]["test_neg_elbo"] for m in ms])
            ips = [v for v in map(_throughput, ms) if v is not None]
            placed = {(m.get("placement") or {}).get("exclusive") for m in ms}
            where = "exclusive" if placed == {True} else "packed" if placed == {False} else "mixed" if len(placed) > 1 else ""
            ks = {m["final"].get("iwae_k") for m in ms if m["final"].get("test_nll") is not None}
            nll = _spread(_finals(ms, "test_nll"), ".2f")
            t.add(
                model,
                setting,
                backend,
                (str(len(ms)), len(ms)),
                _n(mean, ".2f"),
                _n(std, ".2f") if std is not None else ("", float("nan")),
                _spread(_finals(ms, "test_recon"), ".2f"),
                _spread(_finals(ms, "test_kl"), ".2f"),
                (f"{nll[0]} (k={ks.pop()})" if len(ks) == 1 else nll[0], nll[1]),
                _spread(_finals(ms, "active_units"), ".1f"),
                _n(float(np.median(ips)) if ips else None, ".0f"),
                where,
            )
    return t


def beta_trends(runs: list[tuple[Path, dict]]) -> list[str]:
    """Per model, backend and the rest of the setting, over the KL weights its runs trained at (the plain ELBO is
    beta 1): the seed means of KL, reconstruction and active units in beta order, each with its :func:`trend`.
    The beta-VAE's claim is KL decreasing and reconstruction increasing with beta; a line says whether it held."""
    series: dict[tuple[str, str, str], dict[float, list[dict]]] = {}
    for (model, _label), cell in seed_groups(runs).items():
        for backend, ms in cell.items():
            cfg = ms[0]["config"]
            name = str(cfg.get("objective") or "vae")
            if name not in ("vae", "beta-vae"):
                continue
            beta = 1.0 if name == "vae" else float(cfg.get("beta", 1.0))
            rest = _setting_of({**cfg, "objective": "vae", "beta": 1.0})
            series.setdefault((model, rest, backend), {}).setdefault(beta, []).extend(ms)
    lines = []
    for (model, rest, backend), by_beta in sorted(series.items()):
        if len(by_beta) < 2:
            continue
        betas = sorted(by_beta)
        parts = []
        for key, name in (("test_kl", "KL"), ("test_recon", "recon"), ("active_units", "AU")):
            means = [mean_std(_finals(by_beta[b], key))[0] if _finals(by_beta[b], key) else math.nan for b in betas]
            if any(math.isnan(v) for v in means):
                continue
            parts.append(f"{name} {' -> '.join(f'{v:.2f}' for v in means)} ({trend(means)})")
        lines.append(f"{model} ({rest}) on {backend}, beta {' -> '.join(f'{b:g}' for b in betas)}: {'; '.join(parts)}")
    return lines


def equivalence_rows(runs: list[tuple[Path, dict]], margin: float = EQUIVALENCE_MARGIN) -> Table:
    """Every pair of backends in a cell: difference of mean test -ELBO, its 95% interval, TOST p and the verdict."""
    t = Table(["model", "setting", "A - B", "pairs", "diff (nats)", "95% interval", "TOST p", "verdict"], right={3, 4, 6})
    for (model, setting), cell in seed_groups(runs).items():
        names = sorted(cell)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                per_seed = [{m["config"]["seed"]: m["final"]["test_neg_elbo"] for m in cell[x]} for x in (a, b)]
                e = equivalence(per_seed[0], per_seed[1], margin)
                verdict = f"{e['verdict']} (±{margin:g})" if e["method"] else e["verdict"]
                if e["method"] is None:
                    blank = ("", float("nan"))
                    t.add(model, setting, f"{a} - {b}", (str(e["n"]), e["n"]), blank, "", blank, verdict)
                    continue
                t.add(
                    model,
                    setting,
                    f"{a} - {b}",
                    (f"{e['n']}{'' if e['method'] == 'paired' else ' (welch)'}", e["n"]),
                    _n(e["diff"], "+.3f"),
                    f"{e['low']:+.3f} to {e['high']:+.3f}",
                    _n(e["p_tost"], ".3g"),
                    verdict,
                )
    return t
