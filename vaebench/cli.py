"""The ``vaebench`` command: parses options and calls the core. No maths here.

Errors the user can fix arrive as :class:`~vaebench.errors.VaebenchError` and
leave as one line on stderr with a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from vaebench.cli_options import (
    MODELS_CSV,
    backends_option,
    csv,
    data_dir_option,
    device_option,
    eval_k_option,
    key_values,
    model_option,
    objective_of,
    objective_options,
    options_option,
    out_option,
    peak_option,
    precision_option,
    profile_option,
    quiet_option,
    recipe_options,
    resume_options,
    schedule_options,
    threads_option,
    tracking_options,
    train_config,
    ttq_options,
    writable_out,
)
from vaebench.errors import Terminated, VaebenchError
from vaebench.model.catalogue import DATASETS
from vaebench.model.config import TrainConfig
from vaebench.model.loss import OBJECTIVES
from vaebench.model.schedule import SCHEDULES as LR_SCHEDULES
from vaebench.plugin import registry


def _err(line: str) -> None:
    """A line for stderr: warnings and progress that must not mix with a command's table or result."""
    click.echo(line, err=True)


def _log(quiet: bool) -> Callable[[str], None]:
    """Where a command's log lines go: stdout, or nowhere under ``-q``."""
    return (lambda _line: None) if quiet else click.echo


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="vaebench")
def cli() -> None:
    """Train the same VAE in several frameworks and compare them fairly."""


@cli.command(
    short_help="Train one backend, or several into one report.",
    epilog="Examples:\n\n\b\n  vaebench run --backend torch,jax,keras --epochs 5\n"
    "  vaebench run --backend all --epochs 5 --dry-run\n"
    "  vaebench run --backend torch --epochs 5\n"
    "  vaebench run -b jax -m mlp --seed 3 --out results/runs/jax-mlp-3\n"
    "  vaebench run --resume results/runs/jax-mlp-3",
)
@click.option(
    "--backend",
    "-b",
    default="torch",
    show_default=True,
    help="Plugin to train with (see `vaebench backends`); a comma list (torch,jax,keras) or `all` (every installed "
    "plugin but numpy) trains each in turn into <out>/<backend>/ and writes one report there, after printing the "
    "estimated cost.",
)
@model_option()
@recipe_options()
@device_option()
@data_dir_option()
@out_option("Run folder (several backends: the folder of their runs and report). Default: results/runs/<time>-<backend>-<model>.")
@click.option("--overwrite", is_flag=True, help="Replace a run already in --out.")
@click.option("--limit-train", type=int, help="Train on the first N training images only.")
@threads_option(
    "Intra-op threads for the framework. Default: from the machine's load, every usable core on a quiet machine, "
    "fewer on a busy one (said in one line; recorded as environment.threads.chosen_by: load).",
    kind=int,
)
@click.option("--compile", "compile_", is_flag=True, help="The backend's graph compilation (torch.compile for torch).")
@options_option("Backend-specific setting; repeatable (BACKEND: with one backend only).")
@profile_option("best: first time every variant the plugin may tune, as bench does; train the fastest.")
@precision_option()
@eval_k_option()
@objective_options()
@resume_options()
@tracking_options()
@click.option("--dry-run", is_flag=True, help="With several backends: probe them, print the estimated cost, train nothing.")
@quiet_option("No progress bars or per-epoch lines.")
def run(**kw: Any) -> None:
    """Train a VAE on real data with one backend and write a run folder; or several backends, one after another.

    With several backends (--backend torch,jax,keras or all) each is probed first (a
    few timed training steps in a fresh process, a few seconds each) and the estimated
    time per backend is printed before anything trains; then each trains the same model
    and recipe in a fresh process into <out>/<backend>/, and <out>/report.html compares
    them: quality, speed, the curves and the grids side by side.
    """
    from vaebench.measure.options import own_options
    from vaebench.measure.tune import tuner
    from vaebench.run.results import default_run_dir, final_figure, written_outputs
    from vaebench.run.runner import resume_run, train_and_evaluate

    if "," in kw["backend"] or kw["backend"] == "all":
        _run_many(kw)
        return
    if kw["dry_run"]:
        raise click.UsageError("--dry-run applies with several backends (--backend torch,jax or all)")
    quiet = kw["quiet"]
    tracking = {"progress": not quiet, "log": _log(quiet), "tensorboard": kw["tensorboard"], "mlflow": kw["mlflow_uri"]}
    if kw["resume"]:
        metrics = resume_run(Path(kw["resume"]), data_dir=kw["data_dir"], accept_data_change=kw["accept_data_change"], **tracking)
        click.echo(f"{final_figure(metrics['final'])}; completed {kw['resume']}/")
        return
    if kw["accept_data_change"]:
        raise click.UsageError("--accept-data-change applies only with --resume")
    config = train_config(kw, options=own_options(key_values(kw["options"]), kw["backend"]))
    out = Path(kw["out"]) if kw["out"] else default_run_dir(config.backend, config.model)
    tune = tuner(click.echo) if kw["profile"] == "best" else None  # "profile best: <variant>: <ratio> the default"
    metrics = train_and_evaluate(config, out, data_dir=kw["data_dir"], overwrite=kw["overwrite"], tune=tune, **tracking)
    click.echo(f"{final_figure(metrics['final'])}; wrote {out}/ ({', '.join(written_outputs(out))})")


def _run_many(kw: dict[str, Any]) -> None:
    """``run --backend a,b,c``: data checked once, every backend probed and costed, then trained in turn; one report."""
    from vaebench.report.inputs import load_inputs
    from vaebench.report.page import write_report
    from vaebench.report.tables import runs_table
    from vaebench.run.results import default_run_dir
    from vaebench.sweep import local, many

    if kw["resume"]:
        raise click.UsageError("--resume takes one run folder: vaebench run --resume <out>/<backend>")
    if kw["accept_data_change"]:
        raise click.UsageError("--accept-data-change applies only with --resume")
    names = local.parse_backends(kw["backend"], list(registry.installed()))
    many.refuse_routed_options(kw["options"])
    config = train_config(kw, backend=names[0], options=key_values(kw["options"])).resolved()
    out = Path(kw["out"]) if kw["out"] else default_run_dir("compare", config.model)
    many.check_and_estimate(config, names, out, kw["overwrite"], kw["data_dir"], echo=click.echo)
    if kw["dry_run"]:
        return
    settings = {"data_dir": kw["data_dir"], "progress": not kw["quiet"], "overwrite": kw["overwrite"], "profile": kw["profile"]}
    outcomes = local.run_backends(
        config, names, out, log=click.echo, **settings, tensorboard=kw["tensorboard"], mlflow=kw["mlflow_uri"]
    )
    done = many.completed(outcomes)
    if done:
        _, runs = load_inputs(done)
        click.echo("\n".join(runs_table(runs)))
        md, html = write_report([], runs, out)
        click.echo(f"wrote {html} and {md} (tensorboard --logdir {out})")
        hint = many.seeds_hint(outcomes, names, config.model)
        if hint:
            click.echo(hint)
    code = many.verdict(outcomes, names, warn=_err)
    if code:
        sys.exit(code)


@cli.command(
    name="eval",
    short_help="Score a finished run: -ELBO, IWAE NLL, active units.",
    epilog="Examples:\n\n\b\n  vaebench eval results/runs/<run> --k 5000\n"
    "  vaebench eval results/runs/<run> --backend jax --k 100",
)
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@click.option("--backend", "-b", help="Backend to evaluate with (default: the one that trained the run).")
@click.option(
    "--k",
    "k",
    type=int,
    default=None,
    help="Importance samples per test image (0: skip IWAE). Default 100 (0 for a VQ model, which has no likelihood): "
    "minutes on a CPU (the time grows with k); --k 5000 is the published convention (hours on a CPU). "
    "Every NLL shown names its k.",
)
@data_dir_option()
@device_option()
@click.option("--accept-data-change", is_flag=True, help="Evaluate on test files whose SHA-256 differs from the run's.")
@quiet_option("No progress bar or log lines; only the result.")
def eval_(run_dir: str, k: int | None, quiet: bool, **kw: Any) -> None:
    """Evaluate a finished run's weights (any backend): -ELBO, IWAE NLL, active units, KL per dimension.

    The test files are read from where the run recorded them unless --data-dir says otherwise.
    """
    from vaebench.run.rescore import evaluate_run
    from vaebench.run.results import final_figure

    if k is not None and k < 0:
        raise click.BadParameter("must be 0 or more", param_hint="--k")
    where = (kw["data_dir"], kw["device"])
    result = evaluate_run(
        Path(run_dir), kw["backend"], k, *where, progress=not quiet, log=_log(quiet), accept_data_change=kw["accept_data_change"]
    )
    if "perplexity" in result:  # a VQ model: no ELBO, no likelihood, no latent units
        click.echo(
            f"{final_figure(result)}; training-set reconstruction loss {result['train_recon']:.4f}; "
            f"added to {run_dir}/metrics.json"
        )
        return
    line = f"test -ELBO {result['test_neg_elbo']:.2f} nats (recon {result['test_recon']:.2f} + KL {result['test_kl']:.2f})"
    if "test_nll" in result:
        line += f"; test NLL {result['test_nll']:.2f} ± {result['test_nll_sem']:.2f} nats (IWAE, k={k})"
    click.echo(f"{line}; active units {result['active_units']}/{len(result['au_variances'])}; added to {run_dir}/metrics.json")


@cli.command(
    epilog="Examples:\n\n\b\n  vaebench parity --model conv --backends numpy,torch,jax --steps 5\n"
    "  vaebench parity --model conv --backends numpy,jax -o jax:transpose=subpixel\n"
    "  vaebench parity --model conv --backends numpy,torch,jax --profile best"
)
@model_option("conv")
@backends_option("Comma-separated backends (default: every installed one).")
@click.option("--steps", type=int, default=5, show_default=True, help="Adam steps before comparing parameters.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Images per step, the same batch everywhere.")
@profile_option("best: check every variant `bench --profile best` may pick, each its own entry.")
@options_option("Backend setting, as bench; repeatable.")
@device_option("cpu", "For every backend but the numpy reference (always the CPU).")
@objective_options()
def parity(**kw: Any) -> None:
    """Check that backends agree, step by step.

    Same weights, batches and noise in every backend: a matrix of differences; exit 1 past tolerance.
    """
    from vaebench.measure.parity import parity_kind, run_parity
    from vaebench.measure.paritycheck import table, tolerances
    from vaebench.model.catalogue import get_model

    model, steps, batch_size, profile, device = (kw[k] for k in ("model", "steps", "batch_size", "profile", "device"))
    if steps < 1 or batch_size < 1:
        raise click.BadParameter("--steps and --batch-size must be at least 1")
    objective = objective_of(kw)  # checked before any backend starts
    backends = kw["names"].split(",") if kw["names"] else sorted(registry.installed())
    given = key_values(kw["options"])
    rows = run_parity(
        backends, model, steps, batch_size, log=_err, profile=profile, options=given, device=device, objective=objective
    )
    settings = ", ".join(f"{k}={v}" for k, v in given.items()) or "plugin defaults"
    trains = "" if objective.name == "vae" else f", objective {objective.describe()}"
    click.echo(
        f"model {model}{trains}, {steps} Adam steps, batch {batch_size}, device {device}, profile {profile}, "
        f"options {settings}; tolerances: {tolerances(steps, objective=parity_kind(get_model(model).spec, objective))}"
    )
    click.echo("\n".join(table(rows)))
    if not all(r["ok"] for r in rows):
        raise SystemExit(1)


@cli.command(
    short_help="Training throughput, backends interleaved.",
    epilog="Example:\n\n\b\n  vaebench bench --backends torch,jax --models mlp --batch-sizes 128 --repeats 15 --out /tmp/b",
)
@backends_option("Comma-separated backends, or 'all' (every installed one but the slow numpy reference).", default="all")
@click.option("--models", default="conv,mlp", show_default=True, callback=MODELS_CSV, help="Comma-separated models.")
@click.option("--batch-sizes", default="128,512", show_default=True, callback=csv(int, 1), help="Comma-separated batch sizes.")
@click.option(
    "--repeats", type=click.IntRange(min=2), default=10, show_default=True, help="Rounds: timed windows per backend and cell."
)
@threads_option()
@device_option()
@profile_option("See docs/benchmarks.md.")
@precision_option()
@click.option("--compile", "compile_", is_flag=True, help="torch.compile for the backends that have it.")
@options_option("Backend setting; repeatable.")
@schedule_options()
@out_option("Folder for bench.json and bench.csv. Default: results/bench/<UTC time>.")
@click.option("--overwrite", is_flag=True, help="Replace a bench.json already in --out.")
@ttq_options()
@click.option("--allow-busy", is_flag=True, help="Time even when other processes keep cores busy (rows marked busy).")
@peak_option()
@objective_options()
def bench(**kw: Any) -> None:
    """Steady-state training throughput, backends interleaved window by window in one worker process each."""
    from vaebench.measure import bench as measure
    from vaebench.measure.busy import BusyMachineError, check_load
    from vaebench.measure.documents import default_bench_dir
    from vaebench.plugin.host import usable_cores

    out_dir = Path(kw["out"]) if kw["out"] else default_bench_dir()
    if (out_dir / "bench.json").exists() and not kw["overwrite"]:
        raise click.UsageError(f"{out_dir}/bench.json exists; choose another --out or pass --overwrite")
    backends = measure.bench_backends(kw["names"])
    models, batch_sizes = (kw["models"], kw["batch_sizes"]) if kw["throughput"] else ([], [])
    if not kw["throughput"] and not kw["ttq_models"]:
        raise click.UsageError("--no-throughput leaves nothing to do without --ttq-models")
    objective = measure.bench_objective(objective_of(kw), kw["ttq_models"])  # a refused bench prints no table
    measure.ttq_variants(kw["profile"], kw["ttq_models"], backends, models, batch_sizes, kw["ttq_variants_from"])
    try:
        load = check_load(kw["allow_busy"], warn=_err)
    except BusyMachineError as exc:
        raise click.UsageError(str(exc)) from None
    writable_out(out_dir, out_dir, "; choose another --out")  # before the first worker starts
    click.echo(measure.TABLE_HEADER)  # after the refusals: a refused bench prints no table
    named = (
        "device",
        "precision",
        "profile",
        "schedule",
        "inference",
        "peak_seconds",
        "data_dir",
        "ttq_seeds",
        "ttq_models",
        "ttq_variants_from",
    )
    flags = {"compile": kw["compile_"], "options": key_values(kw["options"]), "objective": objective, **{k: kw[k] for k in named}}
    threads = kw["threads"] or usable_cores()
    json_path, csv_path = measure.bench(
        out_dir, load, backends, models, batch_sizes, kw["repeats"], threads=threads, echo=click.echo, warn=_err, **flags
    )
    click.echo(f"wrote {json_path} and {csv_path}")


@cli.command(
    short_help="Train a grid of runs as Ray tasks.",
    epilog="Examples:\n\n\b\n"
    "  vaebench sweep --backends torch,jax --models mlp --seeds 0-4 --epochs 10\n"
    "  vaebench sweep sweep.toml --dry-run\n"
    "  vaebench sweep sweep.toml --address auto --storage /shared/vaebench --exclusive\n"
    "  vaebench sweep --resume results/sweeps/<time>\n"
    "  vaebench compare results/sweeps/<time> --report results/sweeps/<time>",
)
@click.argument("toml_file", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--backends", callback=csv(), help="Comma-separated backends.")
@click.option("--models", callback=MODELS_CSV, help="Comma-separated models.")
@click.option("--seeds", help="Seeds: 0-4, or 0,3,7. Default: 0.")
@click.option("--batch-sizes", callback=csv(int, 1), help="Comma-separated batch sizes (default: each model's own).")
@click.option("--lr", callback=csv(float), help="Comma-separated learning rates (default: 1e-3).")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), help="Every run's learning-rate schedule (default: constant).")
@click.option("--adam-eps", type=float, help=f"Every run's Adam epsilon (default: {TrainConfig.adam_eps:g}).")
@click.option("--epochs", callback=csv(int, 0), help="Comma-separated epoch counts (default: each model's own).")
@click.option("--objective", callback=csv(), help=f"Comma-separated objectives: {', '.join(OBJECTIVES)} (default: vae).")
@click.option("--beta", callback=csv(float), help="Comma-separated KL weights of the beta-vae runs (only those; default 1).")
@click.option("--iw-samples", callback=csv(int, 1), help="Comma-separated K of the iwae runs (only those; default 1).")
@click.option("--dataset", type=click.Choice(DATASETS))
@click.option("--latent-dim", type=click.IntRange(min=1))
@click.option("--binarize/--no-binarize", default=None, help="Dynamic binarisation in every run.")
@device_option(None, "cuda: each run reserves one GPU.")
@data_dir_option("The IDX files, at this path on every node; checked before any run starts (--resume may give a new one).")
@click.option("--limit-train", type=click.IntRange(min=1), help="Train on the first N training images only.")
@threads_option("Threads per run, and the cores it reserves (default 1).")
@click.option("--compile/--no-compile", "compile_", default=None, help="The backends' graph compilation.")
@options_option("Backend setting for every run, or BACKEND:KEY=VALUE for that backend's runs; repeatable.")
@precision_option(None, None)
@click.option("--eval-k", type=click.IntRange(min=0), help="IWAE test NLL with K samples at the end of every run.")
@click.option("--tensorboard/--no-tensorboard", default=None, help="TensorBoard files in every run folder (default on).")
@click.option("--address", help="An existing Ray cluster: auto, or ray://HOST:PORT. Default: a local Ray on this machine.")
@click.option(
    "--storage",
    type=click.Path(file_okay=False),
    help="A folder every node sees: workers write run folders there (and resume from checkpoints after a crash).",
)
@click.option("--exclusive/--packed", "exclusive", default=None, help="Each run reserves a whole node (timing-grade throughput).")
@click.option("--max-retries", type=click.IntRange(min=0), help="Retries of a run whose worker or node died (default 3).")
@out_option("Sweep folder. Default: results/sweeps/<UTC time>.")
@click.option("--dry-run", is_flag=True, help="List the runs and what each reserves; start nothing.")
@click.option(
    "--resume", type=click.Path(file_okay=False, exists=True), help="Run what a stopped sweep did not complete (its own grid)."
)
@quiet_option("No progress display; only the summary.")
def sweep(toml_file: str | None, **kw: Any) -> None:
    """Train a grid of runs (backends x models x seeds x batch sizes x learning rates x epochs x objectives) as Ray tasks."""
    from vaebench.sweep import launch, plan

    if kw["resume"]:
        given = [k for k, v in kw.items() if v not in (None, False, ()) and k not in ("resume", *plan.RESUME_SETTINGS)]
        if toml_file or given:
            raise click.UsageError(
                "with --resume the sweep keeps its own grid and settings; only --data-dir, --address and -q apply"
            )
        sweep_dir = Path(kw["resume"])
        record, address = launch.resume(sweep_dir, kw["data_dir"], kw["address"])
        click.echo(f"resuming {sweep_dir}: {plan.counts(record)['completed']} of {len(record['runs'])} runs completed")
    else:
        flags = {**kw, "compile": kw["compile_"], "options": key_values(kw["options"]) or None}
        settings, grid, runs = launch.plan_new(Path(toml_file) if toml_file else None, flags)
        if kw["dry_run"]:
            click.echo("\n".join(launch.dry_run_lines(runs, settings)))
            return
        address = settings.get("address")
        launch.check_cluster(address)  # a cluster that cannot be reached leaves no folder
        if settings.get("storage") and kw["out"]:
            raise click.UsageError("give --storage (the sweep folder is made inside it) or --out, not both")
        sweep_dir, record = launch.create(settings, grid, runs, kw["out"])
    from vaebench.sweep.cluster import execute

    record = execute(sweep_dir, record, address, progress=not kw["quiet"], echo=click.echo, fresh=not kw["resume"])
    launch.finish(record, sweep_dir, echo=click.echo, warn=_err)


@cli.command(
    short_help="Tables across bench, run and sweep results; a report.",
    epilog="Examples:\n\n\b\n  vaebench compare results/bench.json results/runs/*\n"
    "  vaebench compare results/sweeps/<time> --margin 0.5\n"
    "  vaebench compare results/bench.json results/harness.json --report results/",
)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--report", "report_dir", type=click.Path(file_okay=False), help="Also write report.md and report.html here.")
@click.option(
    "--margin",
    type=click.FloatRange(min=0, min_open=True),
    default=0.5,
    show_default=True,
    help="Equivalence margin in nats: backends whose mean test -ELBO differ by less are called equivalent (TOST).",
)
def compare(paths: tuple[str, ...], report_dir: str | None, margin: float) -> None:
    """Compare bench.json files, harness documents, run and sweep folders: tables across backends, optionally a report.

    Over runs of several seeds (a sweep), also each backend's test -ELBO as mean ± std
    over seeds and, for each pair of backends, whether they reach the same quality.
    """
    from vaebench.report.inputs import load_inputs
    from vaebench.report.page import write_report
    from vaebench.report.summary import summary

    bench_results, runs = load_inputs([Path(p) for p in paths])
    for text, to_stderr in summary(bench_results, runs, margin):
        click.echo(text, err=to_stderr)
    if report_dir:
        md, html = write_report(bench_results, runs, Path(report_dir), margin)
        click.echo(f"wrote {md} and {html}")


@cli.command(
    short_help="List installed backends and how to install the rest.",
    epilog="Example:\n\n\b\n  vaebench backends --devices",
)
@click.option("--devices", is_flag=True, help="Also import each framework and report the device it would use.")
def backends(devices: bool) -> None:
    """List installed backends and how to install the rest (imports no framework unless --devices)."""
    from vaebench.plugin.devices import device_line

    plugins = registry.installed()
    for name, info in sorted(plugins.items()):
        versions = ", ".join(f"{k} {v}" for k, v in info.framework_versions().items())
        click.echo(f"{name:12s} installed  {info.distribution} {info.version}  [{versions}]")
        if devices:
            click.echo(f"{'':12s} {device_line(name)}")
    for name, how in registry.KNOWN.items():
        if name not in plugins:
            click.echo(f"{name:12s} missing    {how}")


@cli.command(
    short_help="Where the time goes: per layer, per step part.",
    epilog="Example:\n\n\b\n  vaebench explain --backends jax,torch,keras --model conv --batch-size 128 --out results/explain",
)
@backends_option("Comma-separated backends.", default="torch,jax,keras")
@model_option("conv")
@click.option("--batch-size", type=click.IntRange(min=1, max=4096), default=128, show_default=True, help="Images per call.")
@click.option("--rounds", type=click.IntRange(min=1, max=100), default=5, show_default=True, help="Windows per probe.")
@click.option(
    "--window-seconds", type=click.FloatRange(min=0.001, max=10), default=0.25, show_default=True, help="Length of a window."
)
@threads_option()
@options_option("Backend setting; repeatable.")
@device_option("cpu")
@out_option("Folder for explain.json, .md and .png.", required=True)
@objective_options()
def explain(**kw: Any) -> None:
    """Where the time goes: every layer's forward pass and both gradients, and the step split, per backend."""
    from vaebench.measure.bench import bench_backends
    from vaebench.measure.explain import explain as run_explain
    from vaebench.measure.explain import write_explain
    from vaebench.measure.options import split_options
    from vaebench.plugin.host import usable_cores
    from vaebench.report.explain import table_lines, write_readable

    backends = bench_backends(kw["names"])
    for name in backends:
        registry.load(name)  # an unknown name is one line now, not after the first backend's minutes
    per_backend = split_options(key_values(kw["options"]), backends)
    objective = objective_of(kw)  # a bad combination is one line before anything runs
    out_dir = Path(kw["out"])
    writable_out(out_dir, kw["out"])  # before anything is measured
    cell = (kw["model"], kw["batch_size"], kw["rounds"], kw["window_seconds"], kw["threads"] or usable_cores())
    doc = run_explain(backends, *cell, per_backend, log=_err, device=kw["device"], objective=objective)
    written = [write_explain(doc, out_dir), *write_readable(doc, out_dir)]
    click.echo("\n".join(table_lines(doc)))
    click.echo("wrote " + ", ".join(str(p) for p in written))


@cli.command(
    short_help="What exactness costs: conv against its symmetrically padded twin.",
    epilog="Example:\n\n\b\n  vaebench exactness --backends all --batch-sizes 128,512 --out results/exactness",
)
@backends_option("Comma-separated backends, or 'all' (every installed one but the slow numpy reference).", default="all")
@model_option("conv")
@click.option("--batch-sizes", default="128,512", show_default=True, callback=csv(int, 1), help="Comma-separated batch sizes.")
@click.option(
    "--repeats", type=click.IntRange(min=2), default=10, show_default=True, help="Rounds: timed windows per model and pair."
)
@threads_option()
@device_option()
@precision_option()
@options_option("Backend setting, applied to both models of a pair; repeatable.")
@out_option("Folder for exactness.json.", required=True)
@click.option("--overwrite", is_flag=True, help="Replace an exactness.json already in --out.")
@click.option("--allow-busy", is_flag=True, help="Time even when other processes keep cores busy (rows marked busy).")
def exactness(**kw: Any) -> None:
    """The source's network computed exactly against its twin with symmetric padding (torch's own), paired in time."""
    from vaebench.measure import exactness as measure
    from vaebench.measure.bench import bench_backends
    from vaebench.measure.busy import BusyMachineError, check_load
    from vaebench.measure.options import split_options
    from vaebench.plugin.host import usable_cores

    out_dir = Path(kw["out"])
    if (out_dir / measure.EXACTNESS_FILE).exists() and not kw["overwrite"]:
        raise click.UsageError(f"{out_dir / measure.EXACTNESS_FILE} exists; choose another --out or pass --overwrite")
    backends = bench_backends(kw["names"])
    for name in backends:
        registry.load(name)
    measure.twin_of(kw["model"])
    options = key_values(kw["options"])
    split_options(options, backends)  # a bad -o is one line before anything runs
    try:
        load = check_load(kw["allow_busy"], warn=_err)
    except BusyMachineError as exc:
        raise click.UsageError(str(exc)) from None
    writable_out(out_dir, out_dir, "; choose another --out")
    click.echo(measure.table_header(kw["model"]))
    path = measure.run(
        out_dir,
        load,
        backends,
        kw["model"],
        kw["batch_sizes"],
        kw["repeats"],
        threads=kw["threads"] or usable_cores(),
        echo=click.echo,
        warn=_err,
        device=kw["device"],
        precision=kw["precision"],
        options=options,
    )
    click.echo(f"wrote {path}")


def main() -> None:
    """Entry point: run the click group, turning user errors and signals into one line."""
    from vaebench.run.signals import terminate_cleanly

    terminate_cleanly()  # the training loop installs its own handler, which checkpoints
    try:
        cli.main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VaebenchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt, Terminated) as exc:  # click turns Ctrl-C outside training into Abort
        code = 143 if isinstance(exc, Terminated) else 130
        click.echo("interrupted; no file was left half-written", err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
