"""Method adapters (imported as ``anysr_plugin.adapters``): one module per method family.

Each module registers its :class:`MethodAdapter` in the runtime's adapter registry when
imported (this package imports them all); the contract and the registry functions live in
``anysr_plugin.runtime.methods`` and are re-exported here.  ``get_adapter(name)`` looks one
up, ``detect_adapter(model)`` picks the first that recognises a model and falls back to the
generic adapter (scale source by structure).

The adapters sit beside the upstream glue (``anysr_plugin.glue``): they may use it and
everything below it; the glue, the tools and the runtime never import them.
"""
from __future__ import annotations

from ..runtime.methods import (GENERIC, MethodAdapter, adapter_for, adapter_for_upstream, all_adapters,
                               available_adapters, detect_adapter, get_adapter, register_adapter, unregister_adapter)
from ..runtime.registry import ADAPTERS
from . import arbsr, liif, metasr, srno  # noqa: F401  (each registers its adapters)

__all__ = ["adapter_for", "all_adapters", "adapter_for_upstream", "MethodAdapter", "GENERIC", "ADAPTERS",
           "register_adapter", "unregister_adapter", "get_adapter", "detect_adapter", "available_adapters"]
