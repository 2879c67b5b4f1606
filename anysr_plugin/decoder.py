"""Old path of ``anysr_plugin.runtime.decoder``, where the code lives (an alias of that module)."""
from ._moved import alias
from .runtime import decoder as _module

alias(__name__, _module)
