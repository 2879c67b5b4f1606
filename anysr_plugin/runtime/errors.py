"""Typed errors and warnings.

Every error the package raises on purpose derives from :class:`AnySRError`, so a
caller can catch "anything the plugin refused" in one place; each one also
derives from the matching builtin (``ValueError``, ``TypeError`` ...) so code
that already catches those keeps working.  Messages say what was found and what
to do next.
"""
from __future__ import annotations

import reprlib

#: longest echo of one user value in a message (a 1e6-element list once made a 1 MB message)
SHORT_VALUE_CHARS = 160


def shorten(value, limit: int = SHORT_VALUE_CHARS) -> str:
    """``repr(value)`` for a message, bounded: long lists, strings and integers are cut
    (``reprlib``: the work is bounded too, never a full repr of a huge nested value) and the
    result keeps at most `limit` characters, head and tail, with the length left out said."""
    r = reprlib.Repr()
    r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 8
    r.maxdict, r.maxlevel, r.maxstring, r.maxlong, r.maxother = 8, 3, limit - 40, 40, limit
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 130:
        digits = int(value.bit_length() * 0.30103) + 1  # str() of a 5000-digit int raises
        return f"{'-' if value < 0 else ''}<an integer of about {digits} digits>"
    try:
        text = " ".join(r.repr(value).split())  # one line (tensor reprs span several)
    except Exception:  # a value whose repr fails
        text = f"<{type(value).__name__} object>"
    if isinstance(value, (list, tuple, dict, set, frozenset)) and len(value) > 8:
        text += f" ({len(value)} items)"
    elif isinstance(value, (str, bytes)) and len(value) > limit:
        text += f" ({len(value)} chars)"
    if len(text) > limit:
        keep = limit - 24
        text = f"{text[:keep * 2 // 3]}...({len(text) - keep} chars)...{text[-(keep // 3):]}"
    return text


#: longest message an error carries (a backstop for call sites that echo a value unshortened)
MAX_MESSAGE_CHARS = 4000


def cap_message(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`text` cut in the middle to at most about `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit * 3 // 4]} ...({len(text) - limit} characters left out)... {text[-(limit // 4):]}"


class AnySRError(Exception):
    """Base of every error anysr_plugin raises on purpose."""

    def __str__(self) -> str:
        return cap_message(super().__str__())


class ConfigError(AnySRError, ValueError):
    """An AnySRConfig field (or a YAML/dict entry) is unknown or has a bad value."""


class NoBlocksError(AnySRError, ValueError):
    """anysrify found no block it can convert."""


class NoScaleSourceError(AnySRError, ValueError):
    """anysrify found no place where the model's scale enters, and none was given (scale_from=)."""


class UnsupportedBlockError(AnySRError, TypeError):
    """A module looks like a residual block but its structure cannot be converted."""


class BlockTypeError(AnySRError, ValueError):
    """A block type cannot be registered (name taken, not an AnySRBlock, methods missing) or is unknown."""


class AlreadyAnySRError(AnySRError, RuntimeError):
    """anysrify was called on a model that already holds AnySR blocks."""


class NotAnySRError(AnySRError, ValueError):
    """A control or export function got a model that was never anysrified."""


class ScaleError(AnySRError, ValueError):
    """A scale is not a positive finite number, pair or (B, 2) tensor."""


class ScaleSourceError(ScaleError):
    """The model's scale source cannot read a call (wrong shape, extra columns, a scale below 1,
    queries of one sample that disagree): the message names ``scale_from`` and the way back."""


class WidthError(AnySRError, ValueError):
    """A width is not one of the configured widths."""


class BudgetError(AnySRError, ValueError):
    """Even the smallest sub-network does not fit the requested budget."""


class AdapterError(AnySRError, KeyError):
    """Unknown adapter name, or an adapter that cannot handle the model."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return cap_message(str(self.args[0])) if self.args else ""


class CheckpointError(AnySRError, RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class CheckpointRecomputeError(AnySRError, RuntimeError):
    """Activation checkpointing re-ran AnySR blocks in backward, and which forward's width and scale
    the recompute must use cannot be known (the gradients would be wrong)."""


class CompiledModelError(AnySRError, TypeError):
    """anysrify got a TorchScript (scripted or traced) or torch.compile'd module: convert the eager
    model first, then script, trace or compile it."""


class MissingDependencyError(AnySRError, ImportError):
    """A module is not installed: a requirement of the user's repository (imported by its own
    code) or of anysr_plugin.  ``name`` is the module, ``owner`` whose requirement it is
    (``"repository"`` or ``"anysr_plugin"``)."""

    def __init__(self, message: str, name: str | None = None, owner: str | None = None):
        super().__init__(message, name=name)
        self.owner = owner


class NotAModuleError(AnySRError, TypeError):
    """A function that takes a model got something else (a path, a state dict ...)."""

    @classmethod
    def for_value(cls, value, what: str = "model") -> "NotAModuleError":
        import os

        hint = ""
        if isinstance(value, (str, os.PathLike)):
            hint = (f" ({str(value)!r} is a path or a name, not a model: build the model first, load the weights "
                    "into it (e.g. anysr_plugin.load_upstream_checkpoint), then pass the model)")
        elif isinstance(value, dict):
            hint = " (a dict looks like a state dict: load it into the model with model.load_state_dict first)"
        return cls(f"{what} must be a torch.nn.Module, got {type(value).__name__}{hint}")


class RunMismatchError(AnySRError, ValueError):
    """A rerun into an existing run folder asks for settings other than the run's own."""


class TrainingDivergedError(AnySRError, FloatingPointError):
    """A non-finite loss, gradient or weight appeared during training; the run stopped."""


class WriteError(AnySRError, OSError):
    """Writing an output file failed (no permission, a read-only or full disk); the previous file
    at that path, if any, is unchanged and no temporary file is left.  ``errno`` is the OS's."""

    def __init__(self, message: str, errno: int | None = None, path=None):
        super().__init__(message)
        self.errno, self.filename = errno, None if path is None else str(path)

    def __str__(self) -> str:  # OSError would print "[Errno N] ..." for two arguments; ours is the message
        return cap_message(str(self.args[0])) if self.args else ""


class DiskFullError(WriteError):
    """The disk (or quota) holding an output file is full (ENOSPC, EDQUOT, EFBIG)."""


class OutputExistsError(AnySRError, FileExistsError):
    """An output file exists and the command was not told to overwrite it (``--force``)."""


class RunLockedError(AnySRError, RuntimeError):
    """An output folder is in use by another running ``anysr`` process (its lock file names it)."""


class InputTooLargeError(AnySRError, ValueError):
    """An input claims more work or memory than the documented bound (YAML aliases or size, an
    image's pixels, a model's parameters, a number beyond its range)."""


class AnySRWarning(UserWarning):
    """Category of every warning the package emits (filter with warnings.filterwarnings)."""
