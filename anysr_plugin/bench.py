"""Old path of ``anysr_plugin.tools.bench``, where the code lives (an alias of that module)."""
from ._moved import alias
from .tools import bench as _module

alias(__name__, _module)
