"""Import one module of a package without running the package's heavy `__init__` first.

gymnax and jumanji import every environment they ship (and with them matplotlib, seaborn,
pandas and scipy) from their top-level `__init__`; that costs about four seconds per process.
Stoix only needs a few of their modules, so the parent package is registered as a deferred
module whose `__init__` runs the first time anyone asks it for an attribute it does not have
(`gymnax.make`, say). Submodules imported through it are the ordinary ones, so classes keep
their identity whichever way they were imported.
"""

import importlib
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any


class _DeferredPackage(types.ModuleType):
    """A package whose `__init__` has not run yet; it runs on the first unknown attribute."""

    def __getattr__(self, name: str) -> Any:
        missing = AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        if self.__dict__.get("_stoix_init_done", False) or name.startswith("__"):
            raise missing
        # NOTE: `from package import submodule` probes the attribute first; a submodule that
        # exists on disk must be imported normally, not trigger the package's `__init__`.
        if importlib.machinery.PathFinder.find_spec(name, self.__path__) is not None:
            raise missing
        self.__dict__["_stoix_init_done"] = True
        self.__spec__.loader.exec_module(self)
        return getattr(self, name)


def import_module_lightly(module_name: str, deferred_packages: Sequence[str]) -> types.ModuleType:
    """Import `module_name`; each of `deferred_packages` not yet imported is deferred."""
    for package in deferred_packages:
        if package in sys.modules:
            continue
        spec = importlib.util.find_spec(package)
        if spec is None or spec.submodule_search_locations is None:
            raise ModuleNotFoundError(f"No package named '{package}'. Run `make install`.")
        module = _DeferredPackage(package)
        module.__spec__ = spec
        module.__loader__ = spec.loader
        module.__file__ = spec.origin
        module.__path__ = list(spec.submodule_search_locations)
        module.__package__ = package
        sys.modules[package] = module
        parent, _, child = package.rpartition(".")
        if parent in sys.modules:
            setattr(sys.modules[parent], child, module)
    return importlib.import_module(module_name)
