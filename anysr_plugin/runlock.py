"""Old path of ``anysr_plugin.tools.runlock``, where the code lives (an alias of that module)."""
from ._moved import alias
from .tools import runlock as _module

alias(__name__, _module)
