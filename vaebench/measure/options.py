"""``-o [BACKEND:]KEY=VALUE`` routing: which backend each setting of a multi-backend command goes to."""

from __future__ import annotations

from collections.abc import Mapping

from vaebench.errors import ConfigError
from vaebench.plugin import registry


def split_options(values: Mapping[str, str], backends: list[str]) -> dict[str, dict[str, str]]:
    """``-o KEY=VALUE`` for every backend that has KEY (an error if none has), ``-o BACKEND:KEY=VALUE`` for one."""
    per: dict[str, dict[str, str]] = {b: {} for b in backends}
    for key, value in values.items():
        target, sep, plain = key.partition(":")
        if sep:
            if target not in per:
                raise ConfigError(f"-o {key}={value} names backend {target!r}, which is not benchmarked")
            per[target][plain] = value
            continue
        takers = [b for b in backends if key in registry.load(b)[0].option_defaults]
        if not takers:
            raise ConfigError(f"no benchmarked backend has option {key!r}; see `vaebench backends` and the README")
        for b in takers:
            per[b][key] = value
    return per


def own_options(values: Mapping[str, str], backend: str) -> dict[str, str]:
    """``run -o``: ``KEY=VALUE`` or, as bench and parity take it, ``BACKEND:KEY=VALUE`` naming the run's backend."""
    for key, value in values.items():
        target, sep, _ = key.partition(":")
        if sep and target != backend:
            raise ConfigError(f"-o {key}={value} names backend {target!r}, but this run trains {backend!r}")
    return {key.partition(":")[2] or key: value for key, value in values.items()}
