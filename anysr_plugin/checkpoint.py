"""Old path of ``anysr_plugin.runtime.checkpoint``, where the code lives (an alias of that module)."""
from ._moved import alias
from .runtime import checkpoint as _module

alias(__name__, _module)
