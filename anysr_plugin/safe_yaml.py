"""Old path of ``anysr_plugin.runtime.safe_yaml``, where the code lives (an alias of that module)."""
from ._moved import alias
from .runtime import safe_yaml as _module

alias(__name__, _module)
