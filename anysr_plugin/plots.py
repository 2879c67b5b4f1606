"""Old path of ``anysr_plugin.tools.plots``, where the code lives (an alias of that module)."""
from ._moved import alias
from .tools import plots as _module

alias(__name__, _module)
