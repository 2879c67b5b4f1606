"""Old path of ``anysr_plugin.tools.demo``, where the code lives (an alias of that module)."""
from ._moved import alias
from .tools import demo as _module

alias(__name__, _module)
