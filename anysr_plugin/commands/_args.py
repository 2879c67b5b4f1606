"""Argument types shared by the sub-commands (a leading underscore: not a command).

Each one turns a bad value into argparse's one-line usage error (``anysr CMD: error:
argument --x: ...``, exit status 2) before anything is built, read or written.  Types
that only validate (``width_list``, ``eval_mode``) return the text unchanged, so the
commands keep parsing it their own way.
"""
from __future__ import annotations

import argparse
import math

from ..runtime.config import SEED_MAX, SEED_MIN
from ..runtime.errors import shorten
from ..runtime.limits import INT64_MAX


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {shorten(text)}") from None


def floats(text: str) -> tuple:
    """``"0.5,0.7 1.0"`` -> (0.5, 0.7, 1.0): commas or spaces separate the numbers (all finite)."""
    try:
        values = tuple(float(x) for x in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {shorten(text)}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number, got nothing")
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {shorten(text)}")
    return values


def positive_floats(text: str) -> tuple:
    """Like :func:`floats`, every number > 0 (scales)."""
    values = floats(text)
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {shorten(text)}")
    return values


def upscales(text: str) -> tuple:
    """Like :func:`floats`, every number >= 1 (super-resolution scales: below 1 is downscaling)."""
    values = floats(text)
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected scales >= 1 (super-resolution), got {shorten(text)}")
    return values


def width(text: str) -> float:
    """One width in (0, 1] (which widths exist is the model's config's business, checked at build)."""
    value = _number(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"a width lies in (0, 1], got {shorten(text)}")
    return value


def _int_in(text: str, low: int, high: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:  # not an integer, or one of thousands of digits
        raise argparse.ArgumentTypeError(f"expected {what}, got {shorten(text)}") from None
    if not low <= value <= high:  # above 2**63 torch cannot take it as a size or a count
        raise argparse.ArgumentTypeError(f"expected {what} in [{low}, {high}], got {shorten(value)}")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (counts, sizes, repeats, chunks), at most 2**63 - 1."""
    return _int_in(text, 1, INT64_MAX, "a positive integer")


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (warm-up runs, epochs, steps, seeds), at most 2**63 - 1."""
    return _int_in(text, 0, INT64_MAX, "a non-negative integer")


def seed(text: str) -> int:
    """A seed torch takes: an integer in [-2**63, 2**64 - 1]."""
    return _int_in(text, SEED_MIN, SEED_MAX, "an integer seed")


def positive_float(text: str) -> float:
    """A finite number > 0 (learning rates, budgets); ``inf`` and ``nan`` are refused."""
    value = _number(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {shorten(text)}")
    return value


def probability(text: str) -> float:
    """A number in [0, 1]."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {shorten(text)}")
    return value


def _check_widths(text: str) -> None:
    values = floats(text)
    bad = [v for v in values if not 0 < v <= 1]
    if bad:
        raise argparse.ArgumentTypeError(f"widths lie in (0, 1], got {shorten(text)}")


def width_list(*words: str):
    """A type accepting the given words (``all``, ``policy``) or a comma list of widths in (0, 1];
    returns the text unchanged."""
    def check(text: str) -> str:
        if text in words:
            return text
        try:
            _check_widths(text)
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentTypeError(f"{exc}; use {' or '.join(repr(w) for w in words)} or e.g. "
                                             "0.5,0.7,1.0") from None
        return text
    check.__name__ = "widths"
    return check


def eval_mode(text: str) -> str:
    """``subnet``, ``full``, ``budget`` or a width in (0, 1]; returns the text unchanged."""
    if text in ("subnet", "full", "budget"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"unknown mode {shorten(text)}; use subnet, full, budget or a width such as 0.7")
    return text


def device(text: str) -> str:
    """A torch device string this machine has (``cpu``, ``cuda``, ``cuda:1`` ...)."""
    import torch

    try:
        dev = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type not in ("cpu", "mps", "xpu"):
        raise argparse.ArgumentTypeError(f"unsupported device {text!r}; use cpu, cuda or cuda:N")
    return text


def output_file(text: str) -> str:
    """A file path the command can write at its end: not a folder, and its first existing ancestor
    is a writable folder (missing folders are created).  Checked before any work is done."""
    import os

    path = os.path.abspath(text)
    if os.path.isdir(path):
        raise argparse.ArgumentTypeError(f"{text!r} is a folder; give a file name")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: {parent!r} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text!r}: the folder {parent!r} is not writable")
    return text


def output_path(text: str):
    """:func:`output_file` as a ``pathlib.Path``."""
    from pathlib import Path

    return Path(output_file(text))
