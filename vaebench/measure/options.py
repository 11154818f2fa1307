"""``-o [BACKEND:]KEY=VALUE`` routing: which backend each setting of a multi-backend command goes to."""

from __future__ import annotations

from collections.abc import Mapping

from vaebench.errors import ConfigError
from vaebench.plugin import registry
from vaebench.plugin.profiles import for_backend, routed


def split_options(values: Mapping[str, str], backends: list[str]) -> dict[str, dict[str, str]]:
    """``-o KEY=VALUE`` for every backend that has KEY (an error if none has), ``-o BACKEND:KEY=VALUE`` for one,
    which wins over a ``KEY=VALUE`` for all (:func:`~vaebench.plugin.profiles.routed` reads the syntax)."""
    per: dict[str, dict[str, str]] = {b: {} for b in backends}
    entries = routed(values)
    for target, key, value in entries:
        if target is not None and target not in per:
            raise ConfigError(f"-o {target}:{key}={value} names backend {target!r}, which is not benchmarked")
    for target, key, value in entries:
        if target is None:
            takers = [b for b in backends if key in registry.load(b)[0].option_defaults]
            if not takers:
                raise ConfigError(f"no benchmarked backend has option {key!r}; see `vaebench backends` and the README")
            for b in takers:
                per[b].setdefault(key, value)
    for target, key, value in entries:
        if target is not None:
            per[target][key] = value  # a backend's own setting wins, whatever the order given
    return per


def own_options(values: Mapping[str, str], backend: str) -> dict[str, str]:
    """``run -o``: ``KEY=VALUE`` or, as bench and parity take it, ``BACKEND:KEY=VALUE`` naming the run's backend."""
    entries = routed(values)
    for target, key, value in entries:
        if target is not None and target != backend:
            raise ConfigError(f"-o {target}:{key}={value} names backend {target!r}, but this run trains {backend!r}")
    return for_backend(values, backend)  # the run's own BACKEND:KEY wins over a KEY for all, whatever the order
