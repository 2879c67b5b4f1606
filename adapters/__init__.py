"""Method adapters (imported as ``anysr_plugin.adapters``).

One module per method family; each registers a :class:`MethodAdapter` here.
``get_adapter(name)`` looks one up, ``detect_adapter(model)`` picks the first
that recognises a model and falls back to the generic adapter (scale from
``use_scale`` only).
"""
from __future__ import annotations

import importlib

from torch import nn

from ..errors import AdapterError
from ..registry import Registry
from .base import GENERIC, MethodAdapter

#: adapters by name (aliases included), tried by ``detect_adapter`` in registration order
ADAPTERS = Registry("adapter", AdapterError)
ADAPTERS.register("generic", GENERIC)
#: adapter modules imported on first lookup, so each registers itself
_BUILTIN_MODULES = ("liif", "srno", "metasr", "arbsr")


def register_adapter(adapter: MethodAdapter, *names: str) -> MethodAdapter:
    """Register `adapter` under each of `names` (default: ``adapter.name``); a name already
    registered is refused (AdapterError naming its adapter; ``unregister_adapter`` it first)."""
    if not isinstance(adapter, MethodAdapter):
        raise AdapterError(f"register_adapter expects a MethodAdapter, got {adapter!r}")
    names = names or (adapter.name,)
    return ADAPTERS.register(names[0], adapter, aliases=names[1:])


def unregister_adapter(*names: str) -> None:
    """Remove the adapters registered under `names`."""
    for name in names:
        ADAPTERS.unregister(name)


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # adapter module not written yet
            if exc.name != f"{__name__}.{mod}":
                raise


def available_adapters() -> list:
    _load_builtins()
    return ADAPTERS.names()


def get_adapter(name: "str | MethodAdapter | None") -> MethodAdapter:
    if isinstance(name, MethodAdapter):
        return name
    if name is None:
        return GENERIC
    _load_builtins()
    return ADAPTERS.get(name)


def all_adapters() -> list:
    """Every registered adapter once (aliases folded), in registration order."""
    _load_builtins()
    return ADAPTERS.values()


def detect_adapter(model: nn.Module) -> MethodAdapter:
    """The first registered adapter that recognises `model`, else the generic one."""
    return next((a for a in all_adapters() if a.detect(model)), GENERIC)


def adapter_for_upstream(name: str) -> "MethodAdapter | None":
    """The adapter serving upstream registry name `name` (a checkpoint spec's ``name``): the one
    registered under `name` when its ``upstream_names`` hold it, else the first registered one
    whose ``upstream_names`` do; None when none does."""
    _load_builtins()
    own = ADAPTERS.get(name) if name in ADAPTERS else None
    if own is not None and name in own.upstream_names:
        return own
    return next((a for a in ADAPTERS.values() if name in a.upstream_names), None)


def adapter_for(model: nn.Module) -> MethodAdapter:
    """The adapter a converted model was converted with, else the detected one."""
    from ..control import unwrap

    state = getattr(unwrap(model), "_anysr_state", None)
    return state.adapter if state is not None else detect_adapter(unwrap(model))


__all__ = ["adapter_for", "all_adapters", "adapter_for_upstream", "MethodAdapter", "GENERIC", "ADAPTERS",
           "register_adapter", "unregister_adapter", "get_adapter", "detect_adapter", "available_adapters"]
