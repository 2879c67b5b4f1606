"""Old path of ``anysr_plugin.runtime.limits``, where the code lives (an alias of that module)."""
from ._moved import alias
from .runtime import limits as _module

alias(__name__, _module)
