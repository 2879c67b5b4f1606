"""Old path of ``anysr_plugin.runtime.unload``, where the code lives (an alias of that module)."""
from ._moved import alias
from .runtime import unload as _module

alias(__name__, _module)
