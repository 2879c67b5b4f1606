"""Old path of ``anysr_plugin.glue.launch`` (the method-neutral launcher); the LIIF-family hooks it
held (``install_registry_hooks``, ``build_anysr_model``) live in ``anysr_plugin.adapters.registry_hooks``."""
from .adapters.registry_hooks import build_anysr_model, install_registry_hooks
from .glue import launch as _module

__all__ = [*_module.__all__, "install_registry_hooks", "build_anysr_model"]


def __getattr__(name: str):
    return getattr(_module, name)
