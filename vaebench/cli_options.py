"""The click options and parsers that several ``vaebench`` commands share, each defined once.

:mod:`vaebench.cli` declares its commands with these, so an option that means
the same thing in ``run``, ``bench``, ``parity``, ``explain`` and ``sweep`` has
one declaration. Where a command words its help differently (its default, or
what the option does there), the decorator takes that text as an argument: the
help users read stays exactly what each command said before it was shared.
Like the CLI, nothing here owns policy: these parse and check what a flag says.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from vaebench.errors import ConfigError
from vaebench.measure.interleave import SCHEDULES
from vaebench.measure.ttq import DEFAULT_SEEDS
from vaebench.model.catalogue import DATASETS, DEFAULT_MODEL, MODEL_ALIASES, MODELS, get_model
from vaebench.model.config import TrainConfig
from vaebench.model.loss import OBJECTIVES, Objective
from vaebench.model.schedule import SCHEDULES as LR_SCHEDULES
from vaebench.plugin.profiles import PRECISIONS, PROFILES

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[F], F]

DEVICES = ("auto", "cpu", "cuda")
DATA_HELP = "Folder with the four IDX .gz files."
THREADS_HELP = "Intra-op threads for every backend (default: every usable core)."
PRECISION_HELP = "Float32 policy (tf32: GPUs)."
MODEL_HELP = f"One of {', '.join(sorted(MODELS))}, a vaebench.models entry point, or package.module:factory."


def stack(*decorators: Decorator) -> Decorator:
    """Several options as one decorator, in the order given (the order ``--help`` lists them in)."""

    def apply(f: F) -> F:
        for decorator in reversed(decorators):
            f = decorator(f)
        return f

    return apply


def key_values(values: Iterable[str]) -> dict[str, str]:
    """``-o KEY=VALUE`` repeated, as a dict (a later KEY wins); a value without ``=`` or a key is a usage error."""
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not KEY=VALUE", param_hint="--option")
        pairs[key] = val
    return pairs


def csv(
    kind: type = str, minimum: int | None = None, convert: Callable[[Any, click.Parameter], Any] | None = None
) -> Callable[[object, click.Parameter, str | None], list | None]:
    """A click callback for a comma-separated list of ``kind`` (each at least ``minimum``, then ``convert``-ed)."""

    def parse(_ctx: object, param: click.Parameter, value: str | None) -> list | None:
        if value is None:
            return None
        if not value.strip():  # `--models ''` would run an empty matrix (or fail in it): say so instead
            raise click.BadParameter("is empty; give at least one value, comma-separated, or leave the option out", param=param)
        try:
            items = [kind(v.strip()) for v in value.split(",")]
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list of {kind.__name__}s", param=param) from None
        if minimum is not None and any(v < minimum for v in items):
            raise click.BadParameter(f"every value must be at least {minimum}, got {value!r}", param=param)
        return [convert(v, param) for v in items] if convert else items

    return parse


def train_config(flags: Mapping[str, Any], **given: Any) -> TrainConfig:
    """The :class:`TrainConfig` a command's flags describe: every flag named like a field, ``given`` overriding.

    ``--compile`` arrives as ``compile_`` (``compile`` is a builtin); ``-o`` is
    passed in ``given``, parsed, since how it is routed depends on the command.
    """
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"compile", *given}
    return TrainConfig(
        **{name: value for name, value in flags.items() if name in fields}, compile=bool(flags["compile_"]), **given
    )


def model_name(value: str, param: click.Parameter | None) -> str:
    """A model name; an old alias is accepted with a warning saying the new name."""
    if value in MODEL_ALIASES:
        new = MODEL_ALIASES[value]
        click.echo(f"warning: model {value!r} is now called {new!r} (it read like --seed); the old name will go", err=True)
        return new
    try:
        get_model(value)  # the catalogue, package.module:factory or a vaebench.models entry point, checked once
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param=param) from None
    return value


class ModelName(click.ParamType):
    """``--model``: one of :data:`~vaebench.model.catalogue.MODELS`, or an old alias (warned about)."""

    name = "model"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        return model_name(str(value), param)


MODELS_CSV = csv(convert=model_name)  # --models: comma-separated, each checked as --model is


def ttq_model_name(value: str, param: click.Parameter | None) -> str:
    """A model with a time-to-quality target (:data:`~vaebench.measure.ttq.TTQ_TARGETS`): a -ELBO to reach."""
    from vaebench.measure.ttq import TTQ_TARGETS

    name = model_name(value, param)
    if name not in TTQ_TARGETS:
        raise click.BadParameter(
            f"model {name!r} has no time-to-quality target (a test -ELBO to reach); models with one: "
            f"{', '.join(sorted(TTQ_TARGETS))}",
            param=param,
        )
    return name


TTQ_MODELS_CSV = csv(convert=ttq_model_name)  # --ttq-models: the same, each with a target


def objective_of(flags: Mapping[str, Any]) -> Objective:
    """The :class:`~vaebench.model.loss.Objective` that ``--objective``, ``--beta`` and ``--iw-samples`` name, checked
    now (a bad combination is a :class:`~vaebench.errors.ConfigError`: one line, exit 2, before anything runs)."""
    return Objective(flags["objective"], flags["beta"], flags["iw_samples"])


def writable_out(path: Path, shown: str | Path, fix: str = "") -> None:
    """Create ``path`` and check a file can be written in it, before anything is measured: a result nobody can
    write is a result lost. ``shown`` is how the refusal names the folder; ``fix`` ends it (``"; choose ..."``)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError as exc:
        raise click.UsageError(f"--out {shown}: cannot write there ({exc.strerror or exc}){fix}") from None


# -- the shared options ----------------------------------------------------------------------------------------


def data_dir_option(help: str = DATA_HELP) -> Decorator:
    """``--data-dir``: where the IDX files are (each command says what it reads them for)."""
    return click.option("--data-dir", type=click.Path(file_okay=False), help=help)


def device_option(default: str | None = "auto", help: str | None = None) -> Decorator:
    """``--device``: auto, cpu or cuda (``default=None``: the command's own settings decide)."""
    return click.option("--device", type=click.Choice(DEVICES), default=default, show_default=default is not None, help=help)


def options_option(help: str, metavar: str = "[BACKEND:]KEY=VALUE") -> Decorator:
    """``-o/--option``, repeatable: backend settings, kept raw for :func:`key_values` and the command's routing."""
    return click.option("--option", "-o", "options", multiple=True, metavar=metavar, help=help)


def threads_option(help: str = THREADS_HELP, kind: click.ParamType | type | None = None) -> Decorator:
    """``--threads``: intra-op threads, at least 1 unless ``kind`` says otherwise (unset: the command's default)."""
    return click.option("--threads", type=kind or click.IntRange(min=1), help=help)


def precision_option(default: str | None = "fp32", help: str | None = PRECISION_HELP) -> Decorator:
    """``--precision``: the float32 policy (``default=None``: the sweep's file or fp32)."""
    return click.option(
        "--precision", type=click.Choice(PRECISIONS), default=default, show_default=default is not None, help=help
    )


def profile_option(help: str) -> Decorator:
    """``--profile``: default, or best (every variant the backend has, measured)."""
    return click.option("--profile", type=click.Choice(PROFILES), default="default", show_default=True, help=help)


def backends_option(help: str, default: str | None = None) -> Decorator:
    """``--backends`` (into ``names``): the commands that take several backends as one comma list."""
    return click.option("--backends", "names", default=default, show_default=default is not None, help=help)


def out_option(help: str, required: bool = False) -> Decorator:
    """``--out``: the folder a command writes into."""
    return click.option("--out", type=click.Path(file_okay=False), required=required, help=help)


def quiet_option(help: str) -> Decorator:
    """``-q/--quiet``."""
    return click.option("--quiet", "-q", is_flag=True, help=help)


def model_option(default: str = DEFAULT_MODEL) -> Decorator:
    """``-m/--model``: one model, checked by :class:`ModelName` (``run``, ``parity``, ``explain``)."""
    return click.option("--model", "-m", type=ModelName(), default=default, show_default=True, help=MODEL_HELP)


def recipe_options() -> Decorator:
    """``run``'s recipe: ``--dataset``, ``--epochs``, ``--batch-size``, ``--latent-dim``, ``--lr``, ``--lr-schedule``,
    ``--adam-eps``, ``--seed``, ``--binarize``."""
    return stack(
        click.option("--dataset", type=click.Choice(DATASETS), default="mnist", show_default=True),
        click.option("--epochs", type=int, help="Default: the model's source (blog 100, conv 30, mlp 10)."),
        click.option("--batch-size", type=int, help="Default: the model's source (blog 512, conv 128, mlp 128)."),
        click.option("--latent-dim", type=int, help="Default: the model's source (blog 2, conv 2, mlp 20)."),
        click.option("--lr", type=float, default=1e-3, show_default=True, help="Adam learning rate."),
        click.option(
            "--lr-schedule",
            type=click.Choice(LR_SCHEDULES),
            default=TrainConfig.lr_schedule,
            show_default=True,
            help="constant: --lr throughout; burda: Burda et al. 2015's 3**i epochs at lr * 10**(-i/7), i = 0..7.",
        ),
        click.option(
            "--adam-eps",
            type=float,
            default=TrainConfig.adam_eps,
            show_default=True,
            help="Adam's epsilon (the IWAE paper: 1e-4).",
        ),
        click.option("--seed", type=int, default=0, show_default=True, help="Seeds weights, batch order and all noise."),
        click.option("--binarize", is_flag=True, help="Dynamic binarisation: fresh Bernoulli pixels each epoch."),
    )


def eval_k_option() -> Decorator:
    """``run``'s ``--eval-k``: the IWAE test NLL at the end of the run."""
    return click.option(
        "--eval-k",
        type=int,
        default=0,
        show_default=True,
        help="At the end, the importance-weighted test NLL with K samples (5000 is the published convention).",
    )


def objective_options() -> Decorator:
    """``--objective``, ``--beta``, ``--iw-samples``: what a training step minimises (``run``, ``parity``, ``bench``);
    read them with :func:`objective_of`."""
    return stack(
        click.option(
            "--objective",
            type=click.Choice(OBJECTIVES),
            default="vae",
            show_default=True,
            help="What training minimises: vae (the -ELBO), beta-vae (recon + beta * KL) or iwae (the importance-weighted "
            "bound, Burda et al. 2015). The test -ELBO is always the plain one.",
        ),
        click.option(
            "--beta", type=float, default=1.0, show_default=True, help="The KL weight of --objective beta-vae (1: the VAE)."
        ),
        click.option(
            "--iw-samples",
            type=int,
            default=1,
            show_default=True,
            help="K, the samples per image of --objective iwae (1: the ELBO).",
        ),
    )


def resume_options() -> Decorator:
    """``run``'s ``--resume`` and ``--accept-data-change``."""
    return stack(
        click.option(
            "--resume",
            type=click.Path(file_okay=False, exists=True),
            help="Continue an interrupted run from its checkpoint, with its own settings (only --data-dir and -q apply).",
        ),
        click.option(
            "--accept-data-change",
            is_flag=True,
            help="With --resume: continue although the data's SHA-256 differs from the run's (recorded in metrics.json).",
        ),
    )


def tracking_options() -> Decorator:
    """``run``'s ``--tensorboard/--no-tensorboard`` and ``--mlflow [URI]``."""
    return stack(
        click.option(
            "--tensorboard/--no-tensorboard",
            default=True,
            show_default=True,
            help="TensorBoard event files under <run>/tb/ (tensorboard --logdir results/runs).",
        ),
        click.option(
            "--mlflow",
            "mlflow_uri",
            is_flag=False,
            flag_value="",
            default=None,
            metavar="[URI]",
            help="Also log to MLflow: ./mlruns, or the tracking URI given (needs the [mlflow] extra).",
        ),
    )


def schedule_options() -> Decorator:
    """``bench``'s ``--schedule``, ``--inference/--no-inference`` and ``--throughput/--no-throughput``."""
    return stack(
        click.option(
            "--schedule",
            type=click.Choice(SCHEDULES),
            default="interleaved",
            show_default=True,
            help="interleaved: windows in turn across backends; sequential: each backend's windows back to back.",
        ),
        click.option("--inference/--no-inference", default=True, show_default=True, help="Also time an eval pass and the grid."),
        click.option(
            "--throughput/--no-throughput", default=True, show_default=True, help="Time the matrix (off: time to quality only)."
        ),
    )


def ttq_options() -> Decorator:
    """``bench``'s time to quality: ``--ttq-models``, ``--ttq-seeds``, ``--ttq-variants-from`` and the ``--data-dir``."""
    return stack(
        click.option("--ttq-models", callback=TTQ_MODELS_CSV, help="Also time to quality on real data for these models (MNIST)."),
        click.option(
            "--ttq-seeds", type=click.IntRange(min=1), default=DEFAULT_SEEDS, show_default=True, help="Seeds for --ttq-models."
        ),
        click.option(
            "--ttq-variants-from",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="With --profile best: train the variants this best bench.json picked (default: this bench's matrix's).",
        ),
        data_dir_option("MNIST for --ttq-models."),
    )


def peak_option() -> Decorator:
    """``bench``'s ``--peak-seconds``: the budget of the fp32 GEMM peak measurement."""
    return click.option(
        "--peak-seconds",
        type=click.FloatRange(min=0, max=60),
        default=4.0,
        show_default=True,
        help="Budget for measuring the fp32 GEMM peak that rows' GFLOP/s are set against (0: skip).",
    )
