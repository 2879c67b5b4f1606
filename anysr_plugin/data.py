"""Old path of ``anysr_plugin.tools.data``, where the code lives (an alias of that module)."""
from ._moved import alias
from .tools import data as _module

alias(__name__, _module)
