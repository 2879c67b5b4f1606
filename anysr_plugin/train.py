"""Old path of ``anysr_plugin.tools.train``, where the code lives (an alias of that module)."""
from ._moved import alias
from .tools import train as _module

alias(__name__, _module)
