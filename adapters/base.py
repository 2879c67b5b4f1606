"""Old path of the adapter contract: the code lives in ``anysr_plugin.runtime.methods``."""
from ..runtime.methods import GENERIC, MethodAdapter, find_tensor_arg, sizes_scale

__all__ = ["MethodAdapter", "GENERIC", "sizes_scale", "find_tensor_arg"]
