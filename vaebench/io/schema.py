"""The structure of the JSON vaebench reads back: a check per file kind, one error per defect.

A schema is a Python type (or tuple of types), a dict of key to schema (keys
required, extra keys allowed), a one-element list (every item matches), or
:class:`Maybe` (the key may be absent or ``null``). It is deliberately small:
the point is that a ``metrics.json`` holding a list, a string batch size or no
``config`` is refused at the door with the key that is wrong, instead of
failing as a ``TypeError`` three modules later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vaebench.errors import VaebenchError

NUM = (int, float)


@dataclass(frozen=True)
class Maybe:
    """A key that may be missing or ``null``; when present, it matches ``schema``."""

    schema: Any


def _name(schema: Any) -> str:
    if isinstance(schema, dict):
        return "an object"
    if isinstance(schema, list):
        return "a list"
    if isinstance(schema, tuple):
        return " or ".join(t.__name__ for t in schema)
    return getattr(schema, "__name__", str(schema))


def problems(value: Any, schema: Any, where: str = "") -> list[str]:
    """Every place where ``value`` does not match ``schema`` (empty when it does)."""
    if isinstance(schema, Maybe):
        return [] if value is None else problems(value, schema.schema, where)
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where or 'the file'} is {type(value).__name__}, not an object"]
        found = []
        for key, sub in schema.items():
            if key not in value:
                if not isinstance(sub, Maybe):
                    found.append(f"{where}.{key} is missing" if where else f"{key} is missing")
                continue
            found += problems(value[key], sub, f"{where}.{key}" if where else key)
        return found
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where} is {type(value).__name__}, not a list"]
        return [p for i, item in enumerate(value) for p in problems(item, schema[0], f"{where}[{i}]")]
    types = schema if isinstance(schema, tuple) else (schema,)
    if isinstance(value, bool) and bool not in types:
        return [f"{where} is a boolean, not {_name(schema)}"]
    if not isinstance(value, types):
        return [f"{where} is {type(value).__name__} {str(value)[:40]!r}, not {_name(schema)}"]
    return []


def check(value: Any, schema: Any, path: object, fix: str) -> None:
    """Raise one :class:`VaebenchError` naming ``path``, the first problems, and ``fix``."""
    found = problems(value, schema)
    if found:
        more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
        raise VaebenchError(f"{path} is malformed: {'; '.join(found[:3])}{more}; {fix}")
