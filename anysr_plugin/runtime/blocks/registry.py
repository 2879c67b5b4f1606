"""The open registry of block types: what anysrify can convert.

A block type is one :class:`~anysr_plugin.blocks.base.AnySRBlock` subclass.  The
built-in types register themselves when ``anysr_plugin.blocks`` is imported; user code
adds its own with :func:`register_block_type` (see docs/block-types.md).

Lookup order (what anysrify tries on each module): higher ``priority`` first; at equal
priority the *later* registration first.  Built-ins have priority 0, so a user type
registered at the default priority is tried before them.  The first type whose structure
fits and whose conversion reproduces the module at full width converts it.

Registering a ``family`` name that is already registered raises :class:`BlockTypeError`
(unregister the old type first to replace it).  The table itself is
``anysr_plugin.runtime.registry.BLOCK_TYPES`` (the one registry implementation); these functions
check the block-type contract and keep the public names.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from ..errors import BlockTypeError
from ..registry import BLOCK_TYPES
from .base import AnySRBlock


def _check(cls) -> None:
    if not (isinstance(cls, type) and issubclass(cls, AnySRBlock)) or cls is AnySRBlock:
        raise BlockTypeError(f"register_block_type expects a subclass of anysr_plugin.AnySRBlock, got {cls!r}")
    if not isinstance(cls.family, str) or not cls.family:
        raise BlockTypeError(f"{cls.__name__}.family must be a non-empty string naming the block type")
    lam = cls.default_lam
    if isinstance(lam, bool) or not isinstance(lam, int) or lam < 1:
        raise BlockTypeError(f"{cls.__name__}.default_lam must be a positive integer, got {lam!r}")
    if isinstance(cls.priority, bool) or not isinstance(cls.priority, int):
        raise BlockTypeError(f"{cls.__name__}.priority must be an integer, got {cls.priority!r}")
    missing = [m for m in AnySRBlock.REQUIRED
               if next(k for k in cls.__mro__ if m in k.__dict__) is AnySRBlock]
    if missing:
        raise BlockTypeError(f"{cls.__name__} does not implement {', '.join(missing)} "
                             "(every block type implements these; see docs/block-types.md)")


def register_block_type(cls=None, *, priority: int | None = None):
    """Register block type `cls` (an AnySRBlock subclass); returns `cls`, so it also works
    as a class decorator (``@register_block_type``).  ``priority`` overrides ``cls.priority``.

    Raises :class:`BlockTypeError` when the family name is taken or `cls` does not
    implement the block-type contract.
    """
    if cls is None:
        return lambda c: register_block_type(c, priority=priority)
    _check(cls)
    prio = cls.priority if priority is None else priority
    if isinstance(prio, bool) or not isinstance(prio, int):
        raise BlockTypeError(f"priority must be an integer, got {prio!r}")
    BLOCK_TYPES.register(cls.family, cls, prio)
    return cls


def unregister_block_type(cls_or_family) -> type:
    """Remove a block type (its class or family name); returns the class."""
    if isinstance(cls_or_family, str):
        return BLOCK_TYPES.unregister(cls_or_family)
    return BLOCK_TYPES.unregister(getattr(cls_or_family, "family", None), cls_or_family)


@contextlib.contextmanager
def registered_block_type(cls, *, priority: int | None = None) -> Iterator[type]:
    """``with registered_block_type(MyBlock): ...``: registered inside the block only."""
    register_block_type(cls, priority=priority)
    try:
        yield cls
    finally:
        unregister_block_type(cls)


def block_types() -> tuple:
    """The registered block types in lookup order."""
    return tuple(BLOCK_TYPES.values())


def get_block_type(family: str) -> type:
    """The block type registered under `family`."""
    return BLOCK_TYPES.get(family)


__all__ = ["register_block_type", "unregister_block_type", "registered_block_type", "block_types",
           "get_block_type"]
