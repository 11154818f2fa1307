"""A sweep's plan and its record: the grid, the runs it expands to, and ``sweep.json``.

This module owns what a sweep *is*, with no Ray in it: a grid of axes
(backends x models x seeds x batch sizes x learning rates x epochs x objectives) plus the
run options every run shares, read from flags or a TOML file; the runs it
expands to, each with a folder name that says what differs; and ``sweep.json``,
the one file that says which runs exist, which finished and where their folders
are. :mod:`vaebench.sweep.cluster` executes a plan on Ray and keeps this record up to
date; ``vaebench sweep --resume`` and ``vaebench compare`` read it back. Keeping
the plan apart from the executor means ``--dry-run``, the TOML checks and the
record's schema are tested without starting Ray.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vaebench.errors import ConfigError, VaebenchError
from vaebench.io.fileio import atomic_write_json, read_json, read_text
from vaebench.io.schema import NUM, Maybe, check
from vaebench.model.config import TrainConfig
from vaebench.model.loss import OBJECTIVES
from vaebench.plugin.profiles import for_backend, routed

SWEEP_FILE = "sweep.json"
RUNS = "runs"  # run folders live in <sweep>/runs/<name>, whether written there by workers or brought home
SCHEMA_VERSION = 1
MAX_TOML_BYTES = 1 << 20  # a sweep file of every setting is a few hundred bytes
# a run's state in sweep.json: the run folder's own statuses, plus the two only a sweep has
PENDING, RUNNING, COMPLETED, INTERRUPTED, LOST = "pending", "running", "completed", "interrupted", "lost"
SWEEP_STATUSES = (PENDING, RUNNING, COMPLETED, INTERRUPTED, "diverged", "failed", LOST)
# the axes a sweep varies, in the order they nest (and name run folders)
AXES = ("backends", "models", "batch_sizes", "lrs", "epochs", "objectives", "betas", "iw_samples", "seeds")
# run options every run of a sweep shares, as TrainConfig fields (plus data_dir and tensorboard)
RUN_OPTIONS = (
    "dataset",
    "latent_dim",
    "binarize",
    "device",
    "limit_train",
    "threads",
    "compile",
    "options",
    "precision",
    "eval_k",
    "lr_schedule",
    "adam_eps",
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")  # a backend name, which starts each run's folder name
_SAFE_RUN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,250}$")

RUN_SCHEMA = {
    "name": str,
    "status": str,
    "config": dict,
    "folder": Maybe(str),
    "error": Maybe(str),
    "node": Maybe(dict),
    "seconds": Maybe(NUM),
    "attempts": Maybe(int),
}
SWEEP_SCHEMA = {
    "schema_version": int,
    "kind": str,
    "grid": dict,
    "settings": dict,
    "runs": [RUN_SCHEMA],
    "sessions": Maybe([dict]),
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One point of the grid: its folder name and its full config."""

    name: str
    config: TrainConfig


@dataclasses.dataclass
class Grid:
    """The axes of a sweep and the settings all its runs share."""

    backends: list[str]
    models: list[str]
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    batch_sizes: list[int | None] = dataclasses.field(default_factory=lambda: [None])
    lrs: list[float] = dataclasses.field(default_factory=lambda: [1e-3])
    epochs: list[int | None] = dataclasses.field(default_factory=lambda: [None])
    objectives: list[str] = dataclasses.field(default_factory=lambda: ["vae"])
    betas: list[float] | None = None  # --beta: applies to the beta-vae runs only; None: beta 1
    iw_samples: list[int] | None = None  # --iw-samples: applies to the iwae runs only; None: K = 1
    run: dict[str, Any] = dataclasses.field(default_factory=dict)  # RUN_OPTIONS given

    def axes(self) -> dict[str, list]:
        """The axes as stored in ``sweep.json``."""
        given = {"betas": self.betas or [1.0], "iw_samples": self.iw_samples or [1]}
        return {axis: list(given.get(axis) or getattr(self, axis)) for axis in AXES}

    def variants(self) -> list[tuple[str, float, int, str]]:
        """The objectives trained: ``(objective, beta, K, folder-name part)`` for each.

        ``--beta`` applies to ``beta-vae`` only and ``--iw-samples`` to ``iwae``
        only, so ``--objective vae,iwae --iw-samples 5`` is two objectives, not
        a vae run per K. An axis given for an objective the sweep does not train
        would vary nothing, and is refused.
        """
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown or not self.objectives:
            raise ConfigError(f"--objective {unknown[0] if unknown else ''!r}: choose among {', '.join(OBJECTIVES)}")
        for values, flag, owner in ((self.betas, "--beta", "beta-vae"), (self.iw_samples, "--iw-samples", "iwae")):
            if values is not None and owner not in self.objectives:
                raise ConfigError(
                    f"{flag} {','.join(f'{v:g}' for v in values)} applies to --objective {owner} only, which this sweep "
                    f"does not train (--objective {','.join(self.objectives)}); add {owner} to --objective or leave {flag} out"
                )
        out: list[tuple[str, float, int, str]] = []
        for objective in dict.fromkeys(self.objectives):
            if objective == "beta-vae":
                out += [(objective, float(b), 1, f"-beta{float(b):g}") for b in dict.fromkeys(self.betas or [1.0])]
            elif objective == "iwae":
                out += [(objective, 1.0, int(k), f"-iwae{int(k)}") for k in dict.fromkeys(self.iw_samples or [1])]
            else:
                out.append((objective, 1.0, 1, ""))
        return out

    def expand(self) -> list[Run]:
        """Every run, in nesting order; each config checked (a bad one fails the whole sweep before any starts)."""
        for name in self.backends:
            if not _SAFE_NAME.match(name):
                raise ConfigError(f"backend name {name!r} cannot name a folder; use letters, digits and -_.+")
        variants = self.variants()
        options = route_options(self.run.get("options") or {}, self.backends)
        runs, seen = [], set()
        for backend in self.backends:
            for model in self.models:
                for batch in self.batch_sizes:
                    for lr in self.lrs:
                        for epochs in self.epochs:
                            for objective, beta, k, tag in variants:
                                for seed in self.seeds:
                                    cfg = TrainConfig(
                                        **{**self.run, "options": options[backend]},
                                        backend=backend,
                                        model=model,
                                        batch_size=batch,
                                        lr=lr,
                                        epochs=epochs,
                                        seed=seed,
                                        objective=objective,
                                        beta=beta,
                                        iw_samples=k,
                                    ).resolved()
                                    name = f"{backend}-{model}-bs{cfg.batch_size}-lr{cfg.lr:g}-ep{cfg.epochs}{tag}-seed{cfg.seed}"
                                    # the same run twice is one: --batch-sizes 128 and the model's default 128, or
                                    # --objective vae,beta-vae --beta 1 (beta-vae at beta 1 is the VAE)
                                    same = (backend, cfg.model, cfg.batch_size, cfg.lr, cfg.epochs, cfg.seed, _objective_key(cfg))
                                    if same not in seen:
                                        seen.add(same)
                                        runs.append(Run(name, cfg))
        return runs


def _objective_key(cfg: TrainConfig) -> tuple:
    """What a run trains on, as a comparison tells objectives apart: the plain -ELBO however it is named."""
    objective = cfg.training_objective
    return ("elbo",) if objective.plain else (objective.name, objective.beta, objective.samples)


def route_options(options: Mapping[str, str], backends: list[str]) -> dict[str, dict[str, str]]:
    """Each backend's ``-o`` settings: every ``KEY=VALUE``, and the ``BACKEND:KEY=VALUE`` that name it (prefix dropped).

    The syntax ``vaebench bench`` and ``run`` take, read by :func:`~vaebench.plugin.profiles.routed`
    (no plugin loaded: the report reads this module); what it means here:
    a ``KEY=VALUE`` goes to every run (and a backend without the key refuses
    it, :func:`vaebench.sweep.preflight.check_runs`), a ``BACKEND:KEY=VALUE``
    to that backend's runs only, and a prefix naming no backend of the sweep is
    refused here.
    """
    for target, key, value in routed(options):
        if target is not None and target not in backends:
            raise ConfigError(
                f"-o {target}:{key}={value} names backend {target!r}, which this sweep does not train (--backends "
                f"{','.join(backends)}); give -o BACKEND:KEY=VALUE with one of them, or -o KEY=VALUE for every run"
            )
    return {backend: for_backend(options, backend) for backend in backends}


def parse_seeds(text: str) -> list[int]:
    """``"0-4"``, ``"0,3,7"`` or ``"0-2,10"`` as a sorted list without repeats."""
    seeds: set[int] = set()
    for part in str(text).split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not a seed or a range like 0-4")
        low, high = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if high < low or high - low >= 10_000:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not a range of at most 10,000 seeds, low to high")
        seeds.update(range(low, high + 1))
    return sorted(seeds)


def _as_list(key: str, value: Any, kind: type) -> list:
    values = value if isinstance(value, list) else [value]
    out = []
    for v in values:
        if isinstance(v, str) and kind is not str:
            try:
                v = kind(v)
            except ValueError:
                raise ConfigError(f"{key}: {v!r} is not {kind.__name__}") from None
        if isinstance(v, bool) or not isinstance(v, (kind, int) if kind is float else kind):
            raise ConfigError(f"{key}: {v!r} is not {kind.__name__}")
        out.append(kind(v))
    if not out:
        raise ConfigError(f"{key} is empty; give at least one value")
    return out


_TOML_AXES = {
    "backends": str,
    "models": str,
    "batch_sizes": int,
    "lr": float,
    "epochs": int,
    "objective": str,
    "beta": float,
    "iw_samples": int,
}
_TOML_RUN = {
    "dataset": str,
    "latent_dim": int,
    "binarize": bool,
    "device": str,
    "limit_train": int,
    "threads": int,
    "compile": bool,
    "options": dict,
    "precision": str,
    "eval_k": int,
    "lr_schedule": str,
    "adam_eps": float,
}
_TOML_SWEEP = {"data_dir": str, "tensorboard": bool, "exclusive": bool, "storage": str, "address": str, "max_retries": int}


def read_toml(path: Path) -> dict[str, Any]:
    """A sweep file's settings as keyword values for :func:`make_grid` (keys as the flags, ``-`` or ``_``)."""
    fix = "give a sweep file like the example in docs/sweep.md (linked from the README)"
    try:  # bounded: /dev/zero or a 2 GB file is refused at MAX_TOML_BYTES, not read into memory
        text = read_text(path, MAX_TOML_BYTES, fix, what="a sweep file")
    except VaebenchError as exc:
        raise ConfigError(str(exc)) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc}); see docs/sweep.md (README links it) for an example") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        norm = key.replace("-", "_")
        norm = {
            "batch_size": "batch_sizes",
            "backend": "backends",
            "model": "models",
            "seed": "seeds",
            "objectives": "objective",
            "betas": "beta",
        }.get(norm, norm)
        if norm == "seeds":
            out["seeds"] = parse_seeds(",".join(map(str, value)) if isinstance(value, list) else value)
        elif norm in _TOML_AXES:
            out[norm] = _as_list(f"{path}: {key}", value, _TOML_AXES[norm])
        elif norm in _TOML_RUN or norm in _TOML_SWEEP:
            kind = {**_TOML_RUN, **_TOML_SWEEP}[norm]
            if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
                raise ConfigError(f"{path}: {key} = {value!r} is not {kind.__name__}")
            out[norm] = {k: str(v) for k, v in value.items()} if kind is dict else value
        else:
            known = sorted({*_TOML_AXES, "seeds", *_TOML_RUN, *_TOML_SWEEP})
            raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(known)}")
    return out


SETTINGS = (*_TOML_AXES, "seeds", *_TOML_RUN, *_TOML_SWEEP)  # what a flag or a TOML key may set


def merge_settings(toml_file: Path | None, flags: Mapping[str, Any]) -> dict[str, Any]:
    """A sweep's settings: the TOML file's values, each overridden by the flag of the same name that was given.

    A flag counts as given when it is not ``None`` (switches are tri-state for
    this reason: ``--no-binarize`` must override ``binarize = true``). Only the
    keys in :data:`SETTINGS` are taken, so a caller can hand over all of its
    options; ``seeds`` arrives as the flag's text (``0-4``) and is parsed here,
    as the TOML file's is.
    """
    settings: dict[str, Any] = read_toml(Path(toml_file)) if toml_file else {}
    given = {key: flags[key] for key in SETTINGS if flags.get(key) is not None}
    if "seeds" in given:
        given["seeds"] = parse_seeds(str(given["seeds"]))
    return {**settings, **given}


def make_grid(settings: dict[str, Any]) -> Grid:
    """A :class:`Grid` from merged TOML and flag values (``backends``, ``models``, ``seeds``, ``lr``, ...)."""
    if not settings.get("backends"):
        raise ConfigError("no backends: give --backends torch,jax (or backends = [...] in the TOML file)")
    if not settings.get("models"):
        raise ConfigError("no models: give --models mlp,conv (or models = [...] in the TOML file)")
    run = {k: settings[k] for k in RUN_OPTIONS if settings.get(k) is not None}
    return Grid(
        backends=list(settings["backends"]),
        models=list(settings["models"]),
        seeds=list(settings.get("seeds") or [0]),
        batch_sizes=list(settings.get("batch_sizes") or [None]),
        lrs=list(settings.get("lr") or [1e-3]),
        epochs=list(settings.get("epochs") or [None]),
        objectives=list(settings.get("objective") or ["vae"]),
        betas=list(settings["beta"]) if settings.get("beta") is not None else None,
        iw_samples=list(settings["iw_samples"]) if settings.get("iw_samples") is not None else None,
        run=run,
    )


def default_sweep_dir(root: Path | None = None) -> Path:
    """``<root>/<UTC timestamp>``; ``root`` is ``results/sweeps`` unless a shared ``--storage`` is given."""
    return (root or Path("results/sweeps")) / dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def new_record(grid: Grid, runs: list[Run], settings: dict[str, Any]) -> dict[str, Any]:
    """The first ``sweep.json`` of a sweep: every run pending."""
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": "vaebench-sweep",
        "created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "grid": grid.axes(),
        "settings": {**settings, "run": grid.run},
        "runs": [{"name": r.name, "status": PENDING, "config": r.config.to_dict(), "folder": None, "attempts": 0} for r in runs],
        "sessions": [],
    }


def read_record(sweep_dir: Path) -> dict[str, Any]:
    """``sweep.json`` of ``sweep_dir``, checked."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"{sweep_dir} holds no {SWEEP_FILE}; give the folder `vaebench sweep` printed")
    record = read_json(path, "it is not a sweep record vaebench wrote")
    check(record, SWEEP_SCHEMA, path, "it is not a sweep record this vaebench can read")
    if record["schema_version"] != SCHEMA_VERSION or record["kind"] != "vaebench-sweep":
        raise VaebenchError(f"{path} is a {record['kind']!r} record, version {record['schema_version']}; not a sweep")
    for run in record["runs"]:
        folder = run.get("folder")
        if (
            run["status"] not in SWEEP_STATUSES
            or not _SAFE_RUN.match(run["name"])
            or folder not in (None, f"{RUNS}/{run['name']}")  # a damaged or hostile record must not point elsewhere
        ):
            raise VaebenchError(
                f"{path}: run {run['name'][:60]!r} (status {run['status'][:30]!r}, folder {str(folder)[:60]!r}) is not one "
                "vaebench wrote; the file is damaged: start a new sweep"
            )
    return record


def write_record(sweep_dir: Path, record: dict[str, Any]) -> None:
    """Atomically replace ``sweep.json``."""
    atomic_write_json(Path(sweep_dir) / SWEEP_FILE, record)


def run_folder(sweep_dir: Path, entry: dict[str, Any]) -> Path | None:
    """Where a run's folder is, if it has one (always ``<sweep>/runs/<name>``)."""
    return Path(sweep_dir) / entry["folder"] if entry.get("folder") else None


def counts(record: dict[str, Any]) -> dict[str, int]:
    """How many runs are in each state."""
    out = dict.fromkeys(SWEEP_STATUSES, 0)
    for run in record["runs"]:
        out[run["status"]] += 1
    return out


def sweep_dir_for(settings: dict[str, Any], out: str | None) -> Path:
    """``--out`` if given, else a new timestamped folder under the shared ``storage`` (or ``results/sweeps``)."""
    storage = settings.get("storage")
    return Path(out) if out else default_sweep_dir(Path(str(storage)) if storage else None)


def record_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """How to execute the sweep, as ``sweep.json`` keeps it so that ``--resume`` needs no flags.

    The data folder is recorded resolved, from the settings or else from
    ``VAEBENCH_DATA_DIR``: workers on other nodes, or a resume from another
    shell, must find the same files.
    """
    data_dir = settings.get("data_dir") or os.environ.get("VAEBENCH_DATA_DIR")
    return {
        "storage": "shared" if settings.get("storage") else "object-store",
        "address": settings.get("address"),
        "exclusive": bool(settings.get("exclusive")),
        "data_dir": str(Path(str(data_dir)).resolve()) if data_dir else None,
        "tensorboard": settings.get("tensorboard", True),
        "max_retries": settings.get("max_retries", 3),
    }


RESUME_SETTINGS = ("data_dir", "address", "quiet")  # what may change on --resume: where things are, not what runs


def check_data(datasets: list[str], data_dir: str | os.PathLike | None, address: str | None = None, read: bool = True) -> None:
    """Find (and with ``read``, read and validate) every data set the runs train on, once, before any run starts.

    Without it, each run finds the data missing on its own and a sweep of six
    runs fails six times. ``read=False`` (``--dry-run``) only looks for the files
    and downloads nothing, and only where a folder is named (``--data-dir``,
    ``data_dir`` or ``VAEBENCH_DATA_DIR``): without one the runs would download.
    Skipped for a Ray client (``ray://``), whose driver need not see the
    workers' files.
    """
    if address and str(address).startswith("ray://"):
        return
    from vaebench.errors import DataError
    from vaebench.io.datasets import load_dataset, locate

    if not read and not (data_dir or os.environ.get("VAEBENCH_DATA_DIR")):
        return
    for dataset in sorted(set(datasets)):
        try:
            load_dataset(dataset, data_dir) if read else locate(dataset, data_dir, download=False)
        except DataError as exc:
            raise DataError(f"{exc}; no run was started") from None


def resume_settings(record: dict[str, Any], data_dir: str | None) -> dict[str, Any]:
    """The record's settings, with the data folder ``--resume --data-dir`` gave (resolved, as a new sweep records it).

    The data may have moved since the sweep began (or never been where it
    said): the grid and recipe stay, where the files are may change.
    """
    settings = dict(record["settings"])
    if data_dir:
        settings["data_dir"] = str(Path(data_dir).expanduser().resolve())
    return settings


def reservation(run: Run, exclusive: bool) -> str:
    """What a run reserves, in words for ``--dry-run``: a whole node or its threads' CPUs, plus a GPU for cuda."""
    cores = "a whole node" if exclusive else f"{run.config.threads or 1} CPU"
    return cores + (" + 1 GPU" if run.config.device == "cuda" else "")
