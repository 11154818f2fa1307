"""Run settings: Adam as PyTorch and Optax define it, and :class:`TrainConfig`, everything that defines a run."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field

from vaebench.errors import ConfigError
from vaebench.model.catalogue import DATASETS, DEFAULT_MODEL, canonical_model, get_model
from vaebench.model.layers import ModelSpec
from vaebench.model.loss import Objective
from vaebench.model.schedule import SCHEDULES, learning_rate

MAX_THREADS = 1024  # past this no machine has the cores, and the OS refuses to start the threads (a traceback)
BYTES_PER_PARAM = 40  # float32 weights, gradients, Adam's m and v, and the checkpoint's exported and serialised copies


def machine_memory() -> int | None:
    """This machine's physical memory in bytes (``None`` where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def iwae_bytes(k: int, latent_dim: int) -> int:
    """Host memory the IWAE bound holds for the one test image in flight: ``k`` samples of ``latent_dim`` in float64
    (noise, latents and their squares) plus ``k`` float64 log-weights and their terms
    (:func:`vaebench.run.evaluation.iwae_nll`)."""
    return k * (44 * latent_dim + 64)


def check_iwae_k(k: int, latent_dim: int, flag: str = "--eval-k") -> None:
    """Refuse a ``k`` whose samples for one image would not fit in half this machine's memory, before anything runs."""
    if k < 0:
        raise ConfigError(f"{flag} must be 0 (no IWAE) or more, got {k}")
    memory = machine_memory()
    if memory is None or k == 0:
        return
    limit = memory // 2  # the rest is the backend's, the data's and everyone else's
    if iwae_bytes(k, latent_dim) > limit:
        most = limit // (44 * latent_dim + 64)
        raise ConfigError(
            f"{flag} {k} needs about {_gib(iwae_bytes(k, latent_dim))} for one test image's samples (latent size "
            f"{latent_dim}), more than half of this machine's {_gib(memory)} memory; use at most {most:,} "
            "(5000 is the published convention)"
        )


def _check_model_memory(cfg: TrainConfig) -> None:
    """Refuse a model whose training state cannot fit in this machine's memory, naming the largest latent size that fits."""
    memory = machine_memory()
    params = cfg.spec.num_params()
    if memory is None or params * BYTES_PER_PARAM <= memory:
        return
    base = get_model(cfg.model).spec
    low, high = 1, cfg.latent_dim  # the largest latent size whose state fits, by bisection (num_params grows with it)
    while low < high:
        mid = (low + high + 1) // 2
        if base.with_latent(mid).num_params() * BYTES_PER_PARAM <= memory:
            low = mid
        else:
            high = mid - 1
    raise ConfigError(
        f"--latent-dim {cfg.latent_dim} gives model {cfg.model!r} {params:,} parameters; training holds about "
        f"{BYTES_PER_PARAM} bytes per parameter (weights, gradients, Adam's moments, the checkpoint's copies), "
        f"{_gib(params * BYTES_PER_PARAM)}, more than this machine's {_gib(memory)}; the largest latent size that fits is "
        f"about {low:,}"
    )


@dataclass(frozen=True)
class AdamConfig:
    """Adam as PyTorch and Optax define it: ``p -= lr * m_hat / (sqrt(v_hat) + eps)``.

    Keras' Adam defaults to ``epsilon=1e-7`` and applies it to the
    uncorrected ``v``; a backend translating this must set both right.
    """

    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; ``None`` fields take the model's defaults."""

    backend: str = "torch"
    model: str = DEFAULT_MODEL
    dataset: str = "mnist"
    epochs: int | None = None
    batch_size: int | None = None
    latent_dim: int | None = None
    lr: float = 1e-3
    seed: int = 0
    binarize: bool = False
    device: str = "auto"
    limit_train: int | None = None
    eval_batch_size: int = 1000
    eval_k: int = 0
    threads: int | None = None
    compile: bool = False
    options: dict[str, str] = field(default_factory=dict)
    precision: str = "fp32"
    objective: str = "vae"
    beta: float = 1.0
    iw_samples: int = 1
    lr_schedule: str = "constant"  # --lr-schedule: vaebench.model.schedule
    adam_eps: float = 1e-8  # --adam-eps: Adam's epsilon (Burda et al. trained with 1e-4)

    def resolved(self) -> TrainConfig:
        """A copy with model defaults filled in and every setting checked."""
        defaults = get_model(self.model)
        cfg = dataclasses.replace(
            self,
            model=canonical_model(self.model),
            epochs=defaults.epochs if self.epochs is None else self.epochs,
            batch_size=defaults.batch_size if self.batch_size is None else self.batch_size,
            latent_dim=defaults.spec.latent_dim if self.latent_dim is None else self.latent_dim,
        )
        if cfg.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {cfg.dataset!r}; choose one of {', '.join(DATASETS)}")
        checks = [
            (cfg.epochs >= 0, f"--epochs must be 0 or more, got {cfg.epochs}"),
            (cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}"),
            (cfg.latent_dim >= 1, f"--latent-dim must be at least 1, got {cfg.latent_dim}"),
            (math.isfinite(cfg.lr) and cfg.lr > 0, f"--lr must be a positive number, got {cfg.lr}"),
            (
                cfg.lr_schedule in SCHEDULES,
                f"unknown --lr-schedule {cfg.lr_schedule!r}; choose one of {', '.join(SCHEDULES)}",
            ),
            (
                isinstance(cfg.adam_eps, int | float) and math.isfinite(cfg.adam_eps) and 0 < cfg.adam_eps < 1,
                f"--adam-eps must be a number between 0 and 1, got {cfg.adam_eps}",
            ),
            (cfg.limit_train is None or cfg.limit_train >= 1, "--limit-train must be at least 1"),
            (cfg.eval_batch_size >= 1, "--eval-batch-size must be at least 1"),
            (cfg.eval_k >= 0, "--eval-k must be 0 (no IWAE) or more"),
            (cfg.threads is None or cfg.threads >= 1, "--threads must be at least 1"),
            (
                cfg.threads is None or cfg.threads <= MAX_THREADS,
                f"--threads {cfg.threads} is more than {MAX_THREADS}: no machine vaebench runs on has that many cores, "
                "and the OS would refuse to start the threads; give at most the cores you have (or leave it out)",
            ),
            (cfg.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {cfg.device!r}"),
            (cfg.precision in ("fp32", "tf32"), f"--precision must be fp32 or tf32, got {cfg.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        cfg.training_objective  # noqa: B018 -- checks --objective, --beta and --iw-samples
        _check_model_memory(cfg)
        check_iwae_k(cfg.eval_k, cfg.latent_dim)
        if cfg.eval_k and cfg.spec.quantizer is not None:
            raise ConfigError(f"--eval-k {cfg.eval_k}: model {cfg.model!r} has a vector-quantised bottleneck and no likelihood")
        return cfg

    @property
    def training_objective(self) -> Objective:
        """What training minimises (``--objective``, ``--beta``, ``--iw-samples``); evaluation always reports the plain -ELBO."""
        return Objective(self.objective, self.beta, self.iw_samples)

    @property
    def noise_shape(self) -> tuple[int, ...]:
        """One training image's noise: ``(latent_dim,)``, ``(K, latent_dim)`` for the IWAE bound, ``(0,)`` for a VQ model."""
        return self.spec.noise_shape

    @property
    def spec(self) -> ModelSpec:
        """The model spec at this config's latent size, trained on this config's objective."""
        return get_model(self.model).spec.with_latent(self.latent_dim).with_objective(self.training_objective)

    @property
    def adam(self) -> AdamConfig:
        """The optimiser settings of this run's first epoch (every schedule starts at ``--lr``)."""
        return self.adam_at(1)

    def adam_at(self, epoch: int) -> AdamConfig:
        """The optimiser settings of 1-based ``epoch``: ``--lr`` on ``--lr-schedule``, ``--adam-eps``."""
        return AdamConfig(lr=learning_rate(self.lr_schedule, self.lr, epoch), eps=self.adam_eps)

    def to_dict(self) -> dict:
        """JSON-ready form, as stored in ``metrics.json``."""
        return dataclasses.asdict(self)
