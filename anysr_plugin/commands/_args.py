"""Argument types shared by the sub-commands (a leading underscore: not a command)."""
from __future__ import annotations

import argparse


def floats(text: str) -> tuple:
    """``"0.5,0.7 1.0"`` -> (0.5, 0.7, 1.0): commas or spaces separate the numbers."""
    try:
        return tuple(float(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
