"""anysr_plugin: any-scale *and* any-resource super-resolution, as a plugin.

``anysrify(model)`` converts an upstream arbitrary-scale SR model in place so that
small scales run on a slimmer sub-network of the same weights, with a scale-aware
interweaving gate in each block (AnySR, Sec. III).
"""
from . import errors
from .blocks import AnySRBlock, block_types, register_block_type, registered_block_type, unregister_block_type
from .checkpoint import load_upstream_checkpoint
from .config import AnySRConfig
from .budget import use_budget
from .control import active_widths, set_width, unwrap, use_scale, use_width
from .cost import count_flops
from .export import export_subnet
from .injection import anysrify, inspect_targets, is_anysr
from .unload import unanysrify
from . import official  # noqa: F401  (registers the compat="official" policy)

__version__ = "0.1.0"

__all__ = ["AnySRConfig", "anysrify", "unanysrify", "inspect_targets", "is_anysr", "use_width", "use_scale", "set_width",
           "active_widths", "unwrap", "count_flops", "load_upstream_checkpoint", "errors", "__version__",
           "export_subnet", "use_budget", "AnySRBlock", "register_block_type", "unregister_block_type",
           "registered_block_type", "block_types"]
