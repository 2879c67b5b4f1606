"""Slimmable AnySR blocks: one class per block type.

The built-in types are *described* by the computation they slim (``described.py``: the
block's traced dataflow, ``dataflow.py``, decides; names and layouts do not), one short
module each: ``edsr``, ``rcan``, ``rdn``, ``rrdb`` and the catch-all ``residual``.  They are
registered here; anysrify walks the open registry (``registry.block_types()``), which user
code extends with ``register_block_type`` (a DescribedBlock subclass, or a hand-written
AnySRBlock for a computation a graph cannot express).
"""
from .base import (AnySRBlock, DenseColumns, StaticBlock, activate, add_residual, channel_mask, check_activation,
                   check_conv, dense_input_index, sliced_conv, static_activation, static_conv)
from .described import DescribedBlock, StaticDescribedBlock
from .edsr import AnySRResBlock, StaticResBlock
from .official_rdb import OfficialRDB
from .rcan import AnySRRCAB, StaticRCAB
from .rdn import AnySRRDB, StaticRDB
from .registry import block_types, get_block_type, register_block_type, registered_block_type, unregister_block_type
from .residual import AnySRResidualBlock, StaticResidualBlock
from .rrdb import AnySRRRDB, StaticRRDB

#: the block types the package ships (registered at import, priority 0; each takes one dataflow family)
BUILTIN_BLOCK_TYPES = (AnySRResBlock, AnySRRCAB, AnySRRDB, AnySRRRDB, AnySRResidualBlock)
for _cls in BUILTIN_BLOCK_TYPES:
    if _cls.family not in {t.family for t in block_types()}:  # idempotent on a re-import
        register_block_type(_cls)
del _cls

__all__ = ["AnySRBlock", "DenseColumns", "StaticBlock", "DescribedBlock", "StaticDescribedBlock",
           "AnySRResBlock", "AnySRRCAB", "AnySRRDB", "AnySRRRDB", "AnySRResidualBlock", "OfficialRDB",
           "StaticResBlock", "StaticRCAB", "StaticRDB", "StaticRRDB", "StaticResidualBlock", "BUILTIN_BLOCK_TYPES",
           "register_block_type", "unregister_block_type", "registered_block_type", "block_types",
           "get_block_type", "sliced_conv", "static_conv", "activate", "static_activation", "add_residual",
           "channel_mask", "dense_input_index", "check_conv", "check_activation"]
