"""Run settings: Adam as PyTorch and Optax define it, and :class:`TrainConfig`, everything that defines a run."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from vaebench.errors import ConfigError
from vaebench.model.catalogue import DATASETS, DEFAULT_MODEL, canonical_model, get_model
from vaebench.model.layers import ModelSpec


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
            (cfg.limit_train is None or cfg.limit_train >= 1, "--limit-train must be at least 1"),
            (cfg.eval_batch_size >= 1, "--eval-batch-size must be at least 1"),
            (cfg.eval_k >= 0, "--eval-k must be 0 (no IWAE) or more"),
            (cfg.threads is None or cfg.threads >= 1, "--threads must be at least 1"),
            (cfg.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda, got {cfg.device!r}"),
            (cfg.precision in ("fp32", "tf32"), f"--precision must be fp32 or tf32, got {cfg.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return cfg

    @property
    def spec(self) -> ModelSpec:
        """The model spec at this config's latent size."""
        return get_model(self.model).spec.with_latent(self.latent_dim)

    @property
    def adam(self) -> AdamConfig:
        """The optimiser settings of this run."""
        return AdamConfig(lr=self.lr)

    def to_dict(self) -> dict:
        """JSON-ready form, as stored in ``metrics.json``."""
        return dataclasses.asdict(self)
