"""vaebench: the same variational autoencoder, trained fairly in PyTorch, JAX and Keras.

The core's layers are subpackages, and imports only point down (``import-linter`` enforces it, see
``pyproject.toml``): ``cli`` > ``report`` > ``sweep`` > ``measure`` > ``run`` > ``plugin`` > ``model`` > ``io``.

Plugins written against the flat module paths of release 0.1 (``vaebench.contract``, ``vaebench.spec``,
``vaebench.weights``, ...) keep importing for one release: those names resolve to their new homes with a
``DeprecationWarning`` naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# old module path -> the modules that now hold its names (the first is the one to import from)
MOVED: dict[str, tuple[str, ...]] = {
    "vaebench.contract": ("vaebench.plugin.contract", "vaebench.model.ops"),
    "vaebench.spec": ("vaebench.model.layers", "vaebench.model.catalogue", "vaebench.model.config"),
    "vaebench.weights": ("vaebench.model.weights",),
    "vaebench.layouts": ("vaebench.model.layouts",),
    "vaebench.loss": ("vaebench.model.loss",),
    "vaebench.engines": ("vaebench.plugin.engines",),
    "vaebench.environment": ("vaebench.plugin.environment", "vaebench.plugin.host"),
    "vaebench.registry": ("vaebench.plugin.registry",),
    "vaebench.data": ("vaebench.io.datasets", "vaebench.model.batches"),
}


class _MovedLoader(importlib.abc.Loader):
    """Builds the old module from the names of the new ones, once, warning where it is imported from."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        targets = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {' and '.join(targets)}; the old path goes away in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        for target in targets:
            new = importlib.import_module(target)
            module.__dict__.update({k: v for k, v in vars(new).items() if not k.startswith("__")})


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name in MOVED:
            return importlib.machinery.ModuleSpec(name, _MovedLoader())
        return None


if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
