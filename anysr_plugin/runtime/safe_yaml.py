"""Bounded YAML: the one way anysr_plugin reads YAML a user hands it.

Why: ``yaml.safe_load`` is safe against code execution, not against work.  A 359-byte
"billion laughs" file (aliases of aliases) expands to gigabytes as soon as anything walks
it (a ``repr`` in an error message, a deep copy, a dump); a few thousand nested brackets
overflow the composer's recursion; a 5000-digit integer makes Python's ``int()`` raise; a key
written twice in one mapping silently keeps the last value (refused here as a YAML error).
Every limit below is far above what an AnySR, LIIF, LTE or SRNO config needs (a few KB,
depth < 10, lists of tens of entries) and each refusal is an
:class:`~anysr_plugin.errors.InputTooLargeError` naming the source and the limit.
Syntax errors stay ``yaml.YAMLError`` for the caller to word.
"""
from __future__ import annotations

import yaml

from .errors import InputTooLargeError

MAX_BYTES = 1 << 20  #: the whole text (1 MiB)
MAX_DEPTH = 64  #: nesting of lists and mappings
MAX_ITEMS = 10_000  #: entries in one list or mapping
MAX_ALIASES = 100  #: alias uses (``*name``) in one document
MAX_NODES = 100_000  #: values after expanding every alias

__all__ = ["load_yaml", "read_yaml_file", "MAX_BYTES", "MAX_DEPTH", "MAX_ITEMS", "MAX_ALIASES", "MAX_NODES"]


def load_yaml(text: str, source: str = "YAML text"):
    """``yaml.safe_load(text)`` within the limits above (`source` names the text in messages)."""
    if len(text) > MAX_BYTES:
        raise InputTooLargeError(f"{source} holds more than {MAX_BYTES:,} characters; YAML that large is refused "
                                 "(a config is a few KB): is it the right file?")
    loader = _BoundedLoader(text, source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded(node, source)
        try:
            return loader.construct_document(node)
        except ValueError as exc:  # int() of thousands of digits; a date such as 2020-13-01
            if "digits" in str(exc):
                raise InputTooLargeError(f"{source} holds a number with thousands of digits; refused (Python reads "
                                         "integers of at most 4300 digits): write a number of sane size") from None
            raise yaml.YAMLError(f"a value cannot be read: {exc}") from None
    finally:
        loader.dispose()


def read_yaml_file(path, source: str | None = None):
    """Read at most ``MAX_BYTES`` of `path` (a device or pipe that never ends is refused too) and
    :func:`load_yaml` it.  OSError / UnicodeDecodeError / yaml.YAMLError reach the caller."""
    with open(path, encoding="utf-8") as f:
        text = f.read(MAX_BYTES + 1)  # load_yaml refuses the extra character
    return load_yaml(text, source or str(path))


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts alias uses, nesting and entries as it goes."""

    def __init__(self, text: str, source: str):
        super().__init__(text)
        self._source, self._aliases, self._depth = source, 0, 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise InputTooLargeError(f"{self._source} uses more than {MAX_ALIASES} YAML aliases (*name); that is "
                                         "how a few hundred bytes expand to gigabytes, so it is refused: write the "
                                         "values out")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise InputTooLargeError(f"{self._source} nests lists / mappings more than {MAX_DEPTH} deep; refused")
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)) and len(node.value) > MAX_ITEMS:
            raise InputTooLargeError(f"{self._source} holds a list or mapping of {len(node.value):,} entries; more "
                                     f"than {MAX_ITEMS:,} is refused")
        if isinstance(node, yaml.MappingNode):
            _refuse_duplicate_keys(node)
        return node


def _refuse_duplicate_keys(node) -> None:
    """A key written twice in one mapping: plain YAML keeps the last silently (``widths:`` twice
    would run the second without a word); a ``<<`` merge may still be overridden on purpose."""
    seen = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
            if key.value in seen:
                raise yaml.MarkedYAMLError("while reading a mapping", node.start_mark,
                                           f"found the key {key.value!r} twice (YAML would keep only the last)",
                                           key.start_mark)
            seen.add(key.value)


def _check_expanded(root, source: str) -> None:
    """Refuse a document whose alias-expanded size exceeds ``MAX_NODES`` (computed once per
    distinct node, so the check itself stays small)."""
    sizes: dict = {}

    def size(node) -> int:
        if id(node) not in sizes:
            sizes[id(node)] = 0  # a recursive alias counts once
            children = node.value if isinstance(node, yaml.SequenceNode) else (
                [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
            sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(size(c) for c in children))
        return sizes[id(node)]

    if size(root) > MAX_NODES:
        raise InputTooLargeError(f"{source} expands (through its aliases) to more than {MAX_NODES:,} values; "
                                 "refused: write the values out")
