"""Execution profiles and the precision policy: which way each framework runs, declared, never implicit.

Every throughput row names a *profile* and a *precision*, because "how fast is
framework X" has no answer without them:

* ``default``: what each framework gives out of the box with its usual idiom:
  torch eager, jax ``jit``, Keras' compiled train step with Keras' own
  ``jit_compile="auto"`` rule (XLA off on a CPU-only machine, on with a GPU).
  The plugin's option defaults, ``--compile`` off unless asked for.
* ``best``: the fastest documented setting of each framework *on the machine at
  hand*, chosen by measurement at bench time: every combination of the
  plugin's :attr:`~vaebench.plugin.contract.Backend.tunables` (torch.compile or not,
  channels-last or not, XLA or not for Keras on TensorFlow) is timed briefly,
  interleaved, and a variant replaces the default only when its paired ratio's
  95% interval lies wholly above 1 (:func:`choose`): a "win" whose interval
  holds 1 is noise, and keeping the default then is the honest answer. Settings
  the user fixed with ``--compile`` or ``-o`` are not tuned, and neither is a
  lever that changes how one kind of layer is computed on a model without that
  layer (:data:`LAYER_LEVERS`: ``transpose`` on ``mlp`` runs the same program
  whatever its value).

Precision is the core's: ``fp32`` is strict float32 everywhere (TF32 off in
torch and TensorFlow, JAX matmul precision ``highest``), the precision the
conformance kit's tolerances assume. ``tf32`` is an explicit, recorded choice
for GPUs; on a CPU it would change nothing and is refused rather than recorded
as if it had.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vaebench.model.layers import Conv2D, Layer, ModelSpec

PROFILES = ("default", "best")
PRECISIONS = ("fp32", "tf32")

#: tunables that change how one kind of layer is computed -> (that kind, in words; the test for it). The names are
#: the ones every plugin uses for the lever (``transpose`` in torch, jax and Keras; ``layout``, torch's memory format)
LAYER_LEVERS: dict[str, tuple[str, Callable[[Layer], bool]]] = {
    "transpose": ("transposed convolution", lambda layer: isinstance(layer, Conv2D) and layer.transpose),
    "layout": ("convolution", lambda layer: isinstance(layer, Conv2D)),
}


def levers_for(tunables: Mapping[str, tuple[str, ...]], spec: ModelSpec | None) -> dict[str, tuple[str, ...]]:
    """``tunables`` less the :data:`LAYER_LEVERS` whose kind of layer ``spec`` does not have (``None``: all kept).

    On such a model every value of the lever runs the same program, so timing them would only pick noise.
    """
    if spec is None:
        return dict(tunables)
    layers = (*spec.encoder, *spec.decoder)
    return {k: v for k, v in tunables.items() if k not in LAYER_LEVERS or any(map(LAYER_LEVERS[k][1], layers))}


def choose(candidates: Sequence[Mapping[str, Any]], default: str) -> Mapping[str, Any]:
    """The candidate ``best`` keeps: the fastest of those whose ratio to the default (``vs_default``) has its whole
    interval above 1, else the default's own (labelled ``default``). A tie on the ratio keeps the earlier candidate."""
    better = [c for c in candidates if c["vs_default"]["low"] > 1]
    if not better:
        return next(c for c in candidates if c["label"] == default)
    return max(better, key=lambda c: c["vs_default"]["value"])


@dataclass(frozen=True)
class Variant:
    """One way to run a backend: ``--compile`` and ``-o`` options."""

    compile: bool = False
    options: Mapping[str, str] = field(default_factory=dict)

    def label(self) -> str:
        """``compile, layout=nchw``; ``plugin defaults`` when nothing is set."""
        parts = (["compile"] if self.compile else []) + [f"{k}={v}" for k, v in sorted(self.options.items())]
        return ", ".join(parts) or "plugin defaults"

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as recorded with every row."""
        return {"compile": self.compile, "options": dict(self.options)}


def variants(
    tunables: Mapping[str, tuple[str, ...]], profile: str, compile: bool = False, options: Mapping[str, str] | None = None
) -> list[Variant]:
    """The variants ``profile`` runs for a backend with these ``tunables``; the user's own settings are kept as given.

    ``default``: the one variant the user asked for. ``best``: every combination
    of the tunables the user did not fix (``compile`` is fixed by ``--compile``).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    options = dict(options or {})
    if profile == "default":
        return [Variant(compile, options)]
    free = {k: v for k, v in tunables.items() if k not in options and not (k == "compile" and compile)}
    out = []
    for values in itertools.product(*free.values()):
        chosen = dict(zip(free, values, strict=True))
        flag = compile or chosen.pop("compile", "0") == "1"
        out.append(Variant(flag, {**options, **chosen}))
    return out  # never empty: the product of no tunables is one empty combination


def routed(values: Mapping[str, str]) -> list[tuple[str | None, str, str]]:
    """``-o [BACKEND:]KEY=VALUE`` settings as ``(backend or None, key, value)``: the one reading of the syntax.

    ``bench``, ``parity``, ``run`` and ``sweep`` each decide what a setting for
    no named backend means to them (every backend that has the key, every run,
    the run's own backend); the syntax itself is read here, below all of them
    and with no plugin loaded (the report reads sweeps). ``BACKEND:`` with no
    key is refused rather than read as a key named ``""``.
    """
    from vaebench.errors import ConfigError

    out: list[tuple[str | None, str, str]] = []
    for key, value in values.items():
        target, sep, plain = key.partition(":")
        if sep and not (target and plain):
            raise ConfigError(f"-o {key}={value}: give KEY=VALUE or BACKEND:KEY=VALUE")
        out.append((target, plain, value) if sep else (None, key, value))
    return out


def for_backend(values: Mapping[str, str], backend: str) -> dict[str, str]:
    """The settings of ``values`` that reach ``backend``: every unprefixed one, then its own ``BACKEND:KEY``,
    which wins over an unprefixed setting of the same key whatever the order given."""
    entries = routed(values)
    plain = {key: value for target, key, value in entries if target is None}
    return plain | {key: value for target, key, value in entries if target == backend}


def check_precision(precision: str, environment: Mapping[str, Any]) -> None:
    """Refuse ``tf32`` where it would change nothing (no GPU), so no row claims a precision it did not run."""
    from vaebench.errors import ConfigError

    if precision == "tf32" and environment.get("device") != "cuda":
        raise ConfigError("--precision tf32 needs a GPU (TF32 exists on NVIDIA GPUs only); on a CPU use --precision fp32")
