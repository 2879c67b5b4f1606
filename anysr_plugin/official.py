"""Old path of the official release's support: the compat mode (``anysr_plugin.glue.official``:
``official_config``, the release's policy, its 0.1-grid rules) and its checkpoints
(``anysr_plugin.adapters.official_release``: key map, model spec, mean shifts)."""
from .adapters import official_release as _checkpoints
from .glue import official as _module

__all__ = [*_module.__all__, *_checkpoints.__all__]


def __getattr__(name: str):
    try:
        return getattr(_module, name)
    except AttributeError:
        return getattr(_checkpoints, name)
