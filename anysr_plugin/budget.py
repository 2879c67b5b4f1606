"""Old path of ``anysr_plugin.tools.budget``, where the code lives (an alias of that module)."""
from ._moved import alias
from .tools import budget as _module

alias(__name__, _module)
