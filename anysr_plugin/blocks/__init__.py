"""Slimmable AnySR blocks: one class per block type, one module per upstream block family.

The built-in types are registered here; anysrify walks the open registry
(``registry.block_types()``), which user code can extend with ``register_block_type``.
"""
from .base import (AnySRBlock, DenseColumns, StaticBlock, activate, add_residual, channel_mask, check_activation,
                   check_conv, dense_input_index, sliced_conv, static_activation, static_conv)
from .edsr import AnySRResBlock, StaticResBlock
from .official_rdb import OfficialRDB
from .rcan import AnySRRCAB, StaticRCAB
from .rdn import AnySRRDB, StaticRDB
from .registry import block_types, get_block_type, register_block_type, registered_block_type, unregister_block_type
from .rrdb import AnySRRRDB, StaticRRDB

#: the block types the package ships (registered at import, priority 0)
BUILTIN_BLOCK_TYPES = (AnySRResBlock, AnySRRCAB, AnySRRDB, AnySRRRDB)
for _cls in BUILTIN_BLOCK_TYPES:
    if _cls.family not in {t.family for t in block_types()}:  # idempotent on a re-import
        register_block_type(_cls)
del _cls

__all__ = ["AnySRBlock", "DenseColumns", "StaticBlock",
           "AnySRResBlock", "AnySRRCAB", "AnySRRDB", "AnySRRRDB", "OfficialRDB",
           "StaticResBlock", "StaticRCAB", "StaticRDB", "StaticRRDB", "BUILTIN_BLOCK_TYPES",
           "register_block_type", "unregister_block_type", "registered_block_type", "block_types",
           "get_block_type", "sliced_conv", "static_conv", "activate", "static_activation", "add_residual",
           "channel_mask", "dense_input_index", "check_conv", "check_activation"]
