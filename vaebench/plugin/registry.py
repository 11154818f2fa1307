"""Backend discovery through the ``vaebench.backends`` entry-point group.

Listing backends reads package metadata only: no framework is imported until a
backend is loaded by name (``vaebench backends`` must stay fast and must work
with a broken framework install). Loading checks the plugin against the
contract and says which distribution it came from, so every result can record
the plugin's version.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

from vaebench.errors import BackendError
from vaebench.plugin.contract import Backend

GROUP = "vaebench.backends"

# In-tree plugins: how to install each one when it is missing.
KNOWN = {
    "torch": "pip install -e backends/torch   (PyPI: vaebench-torch)",
    "jax": "pip install -e backends/jax   (PyPI: vaebench-jax)",
    "keras": "pip install -e backends/keras   (PyPI: vaebench-keras)",
    "keras-jax": "pip install -e backends/keras -e backends/jax   (Keras 3 on JAX)",
    "keras-torch": "pip install torch==2.13.0 -e backends/keras   (Keras 3 on PyTorch)",
}


@dataclass(frozen=True)
class PluginInfo:
    """An installed plugin as its metadata describes it (nothing imported)."""

    name: str
    value: str
    distribution: str
    version: str
    requires: tuple[str, ...] = ()

    def framework_versions(self) -> dict[str, str]:
        """Versions of the distributions the plugin depends on, from metadata (no import).

        For Keras' engine backends (``keras-jax``, ``keras-torch``) the engine's
        framework is what matters, so its version is listed first.
        """
        if self.distribution == "vaebench":  # the core's own NumPy reference
            return {"numpy": metadata.version("numpy")}
        versions = {}
        engine = self.name.partition("-")[2]
        if engine:
            try:
                versions[engine] = metadata.version(engine)
            except metadata.PackageNotFoundError:
                versions[engine] = "not installed"
        for req in self.requires:
            name = re.split(r"[\s<>=!~;\[(]", req, maxsplit=1)[0]
            if not name or name == "vaebench" or "extra ==" in req:
                continue
            try:
                versions[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                versions[name] = "not installed"
        return versions

    def describe(self) -> dict[str, str]:
        """Provenance for ``metrics.json``."""
        return {"name": self.name, "entry_point": self.value, "distribution": self.distribution, "version": self.version}


def _entry_points() -> list[metadata.EntryPoint]:
    return list(metadata.entry_points(group=GROUP))


def installed() -> dict[str, PluginInfo]:
    """Installed plugins by backend name, from metadata alone."""
    plugins: dict[str, PluginInfo] = {}
    for ep in _entry_points():
        dist = ep.dist
        requires = tuple(dist.requires or ()) if dist else ()
        info = PluginInfo(ep.name, ep.value, dist.name if dist else "?", dist.version if dist else "?", requires)
        if ep.name in plugins and plugins[ep.name].value != ep.value:
            twice = f"{plugins[ep.name].distribution} and {info.distribution}"
            raise BackendError(f"backend {ep.name!r} is registered twice ({twice}); uninstall one")
        plugins[ep.name] = info
    return plugins


def load(name: str) -> tuple[type[Backend], PluginInfo]:
    """Import the plugin ``name`` and check it is a :class:`Backend`.

    Raises :class:`BackendError` with the install command when it is missing,
    and with the import error when its framework cannot be imported.
    """
    plugins = installed()
    if name not in plugins:
        have = ", ".join(sorted(plugins)) or "none"
        hint = f"; install it with: {KNOWN[name]}" if name in KNOWN else f"; known backends: {', '.join(KNOWN)}"
        raise BackendError(f"backend {name!r} is not installed (installed: {have}){hint}")
    info = plugins[name]
    ep = next(ep for ep in _entry_points() if ep.name == name and ep.value == info.value)
    try:
        cls = ep.load()
    except ImportError as exc:
        fix = KNOWN.get(name, f"pip install --force-reinstall {info.distribution}")
        raise BackendError(f"backend {name!r} ({info.distribution}) failed to import: {exc}; reinstall with: {fix}") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendError(f"entry point {name} = {info.value} is not a vaebench.plugin.contract.Backend subclass")
    missing = [attr for attr in ("name",) if not isinstance(getattr(cls, attr, None), str)]
    if missing or getattr(cls, "__abstractmethods__", None):
        gaps = missing + sorted(getattr(cls, "__abstractmethods__", ()))
        raise BackendError(f"backend {name!r} ({info.distribution}) does not implement the contract: missing {', '.join(gaps)}")
    for hook in HOOKS:
        problem = signature_problem(getattr(Backend, hook), getattr(cls, hook))
        if problem:
            raise BackendError(
                f"backend {name!r} ({info.distribution}): {cls.__name__}.{hook} {problem}; "
                f"the contract's is {hook}{inspect.signature(getattr(Backend, hook))}"
            )
    return cls, info


#: The Backend methods the core calls on a plugin: an override must accept what the core passes.
HOOKS = ("__init__", "_environment", "build")


def signature_problem(contract: Callable, plugin: Callable) -> str | None:
    """Why ``plugin`` cannot be called as the core calls ``contract`` (``None`` when it can).

    As pluggy checks a hook implementation's arguments when it registers, this
    runs when the plugin loads, so a malformed plugin fails with its name and
    distribution instead of a ``TypeError`` in the middle of a run.
    """
    if plugin is contract:
        return None
    ours, theirs = inspect.signature(contract).parameters, inspect.signature(plugin).parameters
    kinds = {p.kind for p in theirs.values()}
    named = {n for n, p in theirs.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if inspect.Parameter.VAR_KEYWORD not in kinds:
        lacking = [n for n, p in ours.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in named]
        if lacking:
            return f"does not accept {', '.join(lacking)}"
    required = [n for n, p in theirs.items() if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    extra = [n for n in required if n not in ours]
    return f"requires {', '.join(extra)}, which the core never passes" if extra else None
