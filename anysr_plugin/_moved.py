"""Old module paths: a module that moved into a layer is still importable under its old name.

Each old-path file (``anysr_plugin/cost.py`` ...) makes its name an alias of the moved module
(the very module object, so attributes, monkeypatching and pickles of old paths all reach the
moved code); an old package path aliases every submodule too.  Nothing in the package imports
an old path (tests/test_layers.py checks it)."""
from __future__ import annotations

import importlib
import pkgutil
import sys
from types import ModuleType


def alias(old_name: str, module: ModuleType) -> None:
    """Make `old_name` (and, for a package, ``old_name.<sub>`` for every submodule) the module."""
    sys.modules[old_name] = module
    for info in pkgutil.iter_modules(getattr(module, "__path__", [])):
        alias(f"{old_name}.{info.name}", importlib.import_module(f"{module.__name__}.{info.name}"))
