"""Old path of ``anysr_plugin.tools.cost``, where the code lives (an alias of that module)."""
from ._moved import alias
from .tools import cost as _module

alias(__name__, _module)
