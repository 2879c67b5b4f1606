"""Typed errors and warnings.

Every error the package raises on purpose derives from :class:`AnySRError`, so a
caller can catch "anything the plugin refused" in one place; each one also
derives from the matching builtin (``ValueError``, ``TypeError`` ...) so code
that already catches those keeps working.  Messages say what was found and what
to do next.
"""
from __future__ import annotations


class AnySRError(Exception):
    """Base of every error anysr_plugin raises on purpose."""


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


class WidthError(AnySRError, ValueError):
    """A width is not one of the configured widths."""


class BudgetError(AnySRError, ValueError):
    """Even the smallest sub-network does not fit the requested budget."""


class AdapterError(AnySRError, KeyError):
    """Unknown adapter name, or an adapter that cannot handle the model."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


class CheckpointError(AnySRError, RuntimeError):
    """A checkpoint is missing, unreadable or does not fit the model."""


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


class AnySRWarning(UserWarning):
    """Category of every warning the package emits (filter with warnings.filterwarnings)."""
