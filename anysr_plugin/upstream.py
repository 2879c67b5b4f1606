"""Old path of ``anysr_plugin.glue.upstream``, where the code lives (an alias of that module)."""
from ._moved import alias
from .glue import upstream as _module

alias(__name__, _module)
