"""The :class:`Environment` record a plugin returns: its framework, versions, device and execution, checked by the contract."""

from __future__ import annotations

import dataclasses
from typing import Any

#: The precision and autotuning switches every row records, the same keys for every plugin: each is the
#: framework's own setting, read back after the plugin applied ``--precision`` (``None``: the engine is not in
#: use, so the switch does not exist for this row). They are recorded apart because their defaults differ: torch
#: allows TF32 for convolutions but not for matmuls unless told, and cudnn.benchmark picks kernels by timing them.
PRECISION_SETTINGS = (
    "torch_cudnn_benchmark",  # torch.backends.cudnn.benchmark: convolution algorithms chosen by timing
    "torch_tf32_matmul",  # torch.backends.cuda.matmul.allow_tf32
    "torch_tf32_conv",  # torch.backends.cudnn.allow_tf32
    "jax_default_matmul_precision",  # jax.config.jax_default_matmul_precision
    "tensorflow_tf32_execution",  # tf.config.experimental.tensor_float_32_execution_enabled()
    "xla_gpu_autotune_level",  # XLA_FLAGS --xla_gpu_autotune_level (jax, TensorFlow's XLA), or "default"
)


@dataclasses.dataclass
class Environment:
    """What every plugin reports about its framework, with the same keys in every ``metrics.json``.

    The required fields are what a reader compares across backends; ``extra``
    holds settings only one framework has (torch's ``layout``, TensorFlow's XLA
    switch), flattened into the same dict.
    """

    framework: str  # the plugin's framework family: torch, jax, keras
    versions: dict[str, str]  # every library whose version changes numbers or speed
    device: str  # cpu or cuda
    device_name: str  # the CPU or GPU model
    threads: int | str  # intra-op threads, or the framework's default said in words
    precision: str  # the core's --precision, as applied
    float32_matmul_precision: str  # what the framework was told, in its own words
    execution: str  # how a train step runs: eager, jit, tf.function with or without XLA
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: :data:`PRECISION_SETTINGS` as the framework reports them; those not given are recorded as ``None``
    precision_settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.precision_settings) - set(PRECISION_SETTINGS))
        if unknown:  # a plugin's own name for a switch would make rows of two plugins incomparable
            raise ValueError(f"precision_settings {unknown} are not among {PRECISION_SETTINGS}")

    def to_dict(self) -> dict[str, Any]:
        """The flat form stored in ``metrics.json`` and ``bench.json``; ``precision_settings`` stays one dict, all keys."""
        out = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("versions", "extra", "precision_settings")}
        settings = {k: self.precision_settings.get(k) for k in PRECISION_SETTINGS}
        return {**out, "precision_settings": settings, **self.versions, **self.extra}
