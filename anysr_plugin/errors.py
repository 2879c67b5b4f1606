"""Old path of ``anysr_plugin.runtime.errors``, where the code lives (an alias of that module)."""
from ._moved import alias
from .runtime import errors as _module

alias(__name__, _module)
