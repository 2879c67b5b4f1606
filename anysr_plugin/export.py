"""Old path of ``anysr_plugin.runtime.export``, where the code lives (an alias of that module)."""
from ._moved import alias
from .runtime import export as _module

alias(__name__, _module)
