"""Slimmable AnySR blocks, one module per upstream block family.

``BLOCK_TYPES`` is the dispatch list anysrify walks: the first family whose class-name
pattern matches a module is tried; its structure check decides.
"""
from .base import AnySRBlock
from .edsr import AnySRResBlock
from .rcan import AnySRRCAB
from .official_rdb import OfficialRDB
from .rdn import AnySRRDB

BLOCK_TYPES = (AnySRResBlock, AnySRRCAB, AnySRRDB)

#: opt-in layouts: ``config.compat`` -> {default class: the class used instead}
COMPAT_BLOCK_TYPES = {"official": {AnySRRDB: OfficialRDB}}


def block_class_for(cls, config):
    """The block class anysrify builds for family class `cls` under `config` (compat variants)."""
    return COMPAT_BLOCK_TYPES.get(config.compat, {}).get(cls, cls)


__all__ = ["AnySRBlock", "AnySRResBlock", "AnySRRCAB", "AnySRRDB", "OfficialRDB", "BLOCK_TYPES",
           "COMPAT_BLOCK_TYPES", "block_class_for"]
