"""Slimmable AnySR blocks, one module per upstream block family.

``BLOCK_TYPES`` is the dispatch list anysrify walks: the first family whose class-name
pattern matches a module is tried; its structure check decides.
"""
from .base import AnySRBlock
from .edsr import AnySRResBlock
from .rcan import AnySRRCAB
from .rdn import AnySRRDB

BLOCK_TYPES = (AnySRResBlock, AnySRRCAB, AnySRRDB)

__all__ = ["AnySRBlock", "AnySRResBlock", "AnySRRCAB", "AnySRRDB", "BLOCK_TYPES"]
