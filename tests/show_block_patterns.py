"""Prints the conversion line of every block layout in lookalike_blocks (each converted inside a
two-block net) and the refusal of every layout that must not convert:
``PYTHONPATH=$PWD python3 tests/show_block_patterns.py`` from the repository root.  Not a test."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lookalike_blocks as L  # noqa: E402

import anysr_plugin as anysr  # noqa: E402
from anysr_plugin.errors import AnySRError  # noqa: E402


class _Last(logging.Handler):
    def emit(self, record):
        self.line = record.getMessage()


def main() -> None:
    handler = _Last()
    logger = logging.getLogger("anysr_plugin")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    for name, (factory, _) in L.variants().items():
        torch.manual_seed(0)
        anysr.anysrify(L.Net(factory))
        line = handler.line.split(": ", 2)[2].split("; scale from")[0]
        print(f"| {name} | {line} |")
    for name, (factory, _) in L.REFUSED.items():
        try:
            anysr.anysrify(L.Net(factory))
            print(f"| {name} | CONVERTED |")
        except AnySRError as exc:
            reason = str(exc).split("Closest: ")[-1].split(". AnySR converts")[0]
            print(f"| {name} | {type(exc).__name__}: {reason} |")


if __name__ == "__main__":
    main()
