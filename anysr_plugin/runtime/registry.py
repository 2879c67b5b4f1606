"""One registry implementation for everything found by name: block types, method adapters,
reference models and compatibility policies.

Why one: whatever is registered, the rules are the same.  A name is registered once: a second
registration is refused with the registry's typed error naming the entry already there
(unregister it first to replace it); an unknown name is refused naming the registered ones;
``registered(...)`` registers for the duration of a ``with`` block.  The order entries are
tried in is stated here once: higher ``priority`` first, then registration order (oldest
first, or newest first for registries that let a later entry override an earlier one).

The block-type and adapter tables live here, below the code that fills them:
``AnySRConfig.lam_for("rdb")`` looks a block type up by name and the config sits below the
blocks; a model's state and its scale source look their adapter up by name below the adapter
contract (``methods.py``).
"""
from __future__ import annotations

import contextlib
import itertools
import threading
from typing import Iterator

from .errors import AdapterError, AnySRError, BlockTypeError

_NO_VALUE = object()


def describe(value) -> str:
    """How an entry is named in messages: a class or function by its import path, else its repr."""
    qualname = getattr(value, "__qualname__", None)
    if qualname is not None and getattr(value, "__module__", None):
        return f"{value.__module__}.{qualname}"
    return repr(value)


class Registry:
    """Named entries of one kind (``kind``: "block type", "adapter", ...), refused with ``error``."""

    def __init__(self, kind: str, error: type = AnySRError, newest_first: bool = False):
        self.kind, self.error, self.newest_first = kind, error, newest_first
        self._lock = threading.Lock()
        self._numbers = itertools.count()
        self._entries: dict = {}  # name -> (priority, registration number, value)

    def register(self, name: str, value, priority: int = 0, aliases: tuple = ()):
        """Register `value` under `name` (and each of `aliases`); returns `value`.  A taken name is
        refused before anything is registered."""
        names = (name, *aliases)
        for n in names:
            if not isinstance(n, str) or not n:
                raise self.error(f"a {self.kind} name must be a non-empty string, got {n!r}")
        with self._lock:
            for n in names:
                if n in self._entries:
                    raise self.error(f"{self.kind} name {n!r} is already registered (by "
                                     f"{describe(self._entries[n][2])}); choose another name or unregister "
                                     f"{n!r} first")
            for n in names:
                self._entries[n] = (priority, next(self._numbers), value)
        return value

    def unregister(self, name: str, value=_NO_VALUE):
        """Remove `name` (and only when it holds `value`, if given); returns the value removed."""
        with self._lock:
            entry = self._entries.get(name)
            if entry is None:
                what = repr(name) if isinstance(name, str) else describe(value)
                raise self.error(f"{self.kind} {what} is not registered; registered: "
                                 f"{', '.join(sorted(self._entries))}")
            if value is not _NO_VALUE and entry[2] is not value:
                raise self.error(f"{self.kind} {name!r} holds {describe(entry[2])}, not {describe(value)}; "
                                 "nothing was unregistered")
            del self._entries[name]
        return entry[2]

    def get(self, name: str):
        with self._lock:
            entry = self._entries.get(name)
            known = sorted(self._entries)
        if entry is None:
            raise self.error(f"unknown {self.kind} {name!r}; registered: {', '.join(known)}")
        return entry[2]

    def __contains__(self, name) -> bool:
        return name in self._entries

    def names(self) -> list:
        return sorted(self._entries)

    def items(self) -> list:
        """``(name, value)`` in lookup order."""
        with self._lock:
            entries = list(self._entries.items())
        sign = -1 if self.newest_first else 1
        entries.sort(key=lambda kv: (-kv[1][0], sign * kv[1][1]))
        return [(name, entry[2]) for name, entry in entries]

    def values(self) -> list:
        """Each registered value once (a value under several names counts once), in lookup order."""
        return list({id(v): v for _, v in self.items()}.values())

    @contextlib.contextmanager
    def registered(self, name: str, value, priority: int = 0) -> Iterator:
        """Registered inside the ``with`` block only."""
        self.register(name, value, priority)
        try:
            yield value
        finally:
            self.unregister(name, value)


#: block types by family name (``blocks/registry.py`` checks the contract and registers into it);
#: at equal priority the type registered later is tried first
BLOCK_TYPES = Registry("block type", BlockTypeError, newest_first=True)
#: method adapters by name, aliases included (``methods.py`` registers the generic one and holds the
#: functions; the method adapters register at import); ``detect_adapter`` tries them oldest first
ADAPTERS = Registry("adapter", AdapterError)

__all__ = ["Registry", "BLOCK_TYPES", "ADAPTERS", "describe"]
