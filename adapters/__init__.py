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
from .base import GENERIC, MethodAdapter

_REGISTRY: dict = {}
#: adapter modules imported on first lookup, so each registers itself
_BUILTIN_MODULES = ("liif", "srno", "metasr", "arbsr")


def register_adapter(adapter: MethodAdapter, *names: str) -> MethodAdapter:
    for name in names or (adapter.name,):
        _REGISTRY[name] = adapter
    return adapter


def _load_builtins() -> None:
    for mod in _BUILTIN_MODULES:
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as exc:  # adapter module not written yet
            if exc.name != f"{__name__}.{mod}":
                raise


def available_adapters() -> list:
    _load_builtins()
    return sorted(_REGISTRY)


def get_adapter(name: "str | MethodAdapter | None") -> MethodAdapter:
    if isinstance(name, MethodAdapter):
        return name
    if name is None or name == "generic":
        return GENERIC
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise AdapterError(
            f"unknown adapter {name!r}; available: {', '.join(['generic'] + sorted(_REGISTRY))}") from None


def all_adapters() -> list:
    """Every registered adapter once (aliases folded), in registration order."""
    _load_builtins()
    return list({id(a): a for a in _REGISTRY.values()}.values())


def detect_adapter(model: nn.Module) -> MethodAdapter:
    _load_builtins()
    seen = set()
    for adapter in _REGISTRY.values():
        if id(adapter) in seen:
            continue
        seen.add(id(adapter))
        if adapter.detect(model):
            return adapter
    return GENERIC


def adapter_for_upstream(name: str) -> "MethodAdapter | None":
    """The adapter serving upstream registry name `name` (a checkpoint spec's ``name``): the one
    registered under `name` when its ``upstream_names`` hold it, else the first registered one
    whose ``upstream_names`` do; None when none does."""
    _load_builtins()
    own = _REGISTRY.get(name)
    if own is not None and name in own.upstream_names:
        return own
    return next((a for a in _REGISTRY.values() if name in a.upstream_names), None)


def adapter_for(model: nn.Module) -> MethodAdapter:
    """The adapter a converted model was converted with, else the detected one."""
    from ..control import unwrap

    state = getattr(unwrap(model), "_anysr_state", None)
    return state.adapter if state is not None else detect_adapter(unwrap(model))


__all__ = ["adapter_for", "all_adapters", "adapter_for_upstream", "MethodAdapter", "GENERIC", "register_adapter", "get_adapter", "detect_adapter",
           "available_adapters"]
