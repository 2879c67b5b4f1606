"""Old path of ``anysr_plugin.glue.checkout``, where the code lives (an alias of that module)."""
from ._moved import alias
from .glue import checkout as _module

alias(__name__, _module)
