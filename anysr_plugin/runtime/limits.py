"""Bounds on what a user's input may cost: numbers before arithmetic, models before building.

Why: ``float(10**400)`` raises ``OverflowError``, an integer past 2**63 makes torch raise
"Overflow when unpacking long long", and a model described by a few bytes (``--model-arg
n_resblocks=...``, the metadata of a 54 KB ``.safetensors`` export) can ask for gigabytes
before anything checks it.  Each of these is refused here with a typed error that names the
value (shortened) and the bound, before the arithmetic or the allocation happens.
"""
from __future__ import annotations

import contextlib

from .errors import InputTooLargeError, shorten

#: the largest integer torch takes for a size or a count (a C int64)
INT64_MAX = 2**63 - 1
#: parameters + buffers (elements) a model built from command-line arguments may hold: 4 GiB in float32
MAX_MODEL_ELEMENTS = 2**30
#: submodules such a model may hold (RCAN, the largest reference model, has 2,437)
MAX_MODULES = 10_000

__all__ = ["to_float", "check_floats", "model_budget", "build_within", "INT64_MAX", "MAX_MODEL_ELEMENTS"]


def to_float(value, error: type, what: str) -> float:
    """``float(value)``, with a number beyond a float's range (~1.8e308) raised as `error`
    (whose message names `what` and the shortened value); other failures are the caller's."""
    try:
        return float(value)
    except OverflowError:
        raise error(f"{what} {shorten(value)} is out of range (beyond the largest float, ~1.8e308)") from None


def check_floats(value, error: type, what: str) -> None:
    """Raise `error` when `value`, or an entry of a short list / tuple, overflows a float
    (the top-of-function check of code that calls ``float()`` on entries later)."""
    entries = value if isinstance(value, (list, tuple)) and len(value) <= 16 else (value,)
    for v in entries:
        try:
            float(v)
        except OverflowError:
            to_float(v, error, what)
        except (TypeError, ValueError):
            pass  # not a number at all: the caller's own check words that


@contextlib.contextmanager
def model_budget(limit: int, what: str, max_modules: int = MAX_MODULES):
    """Refuse, while a model is being built, once its parameters and buffers exceed `limit`
    elements or its submodules `max_modules` (global registration hooks: the build stops at the
    first module past the bound, so a huge claim costs milliseconds; build on the meta device to
    allocate nothing)."""
    import torch

    total = {"elements": 0, "modules": 0}

    def count_tensor(module, name, tensor):
        if tensor is not None:
            total["elements"] += tensor.numel()
            if total["elements"] > limit:
                raise InputTooLargeError(f"{what} holds more than {limit:,} parameters and buffers; refused before "
                                         "building it (is a size argument too large?)")

    def count_module(module, name, submodule):
        total["modules"] += 1
        if total["modules"] > max_modules:
            raise InputTooLargeError(f"{what} holds more than {max_modules:,} modules; refused before building it "
                                     "(is a block count too large?)")

    hooks = []
    module_mod = torch.nn.modules.module
    for register, hook in (("register_module_parameter_registration_hook", count_tensor),
                           ("register_module_buffer_registration_hook", count_tensor),
                           ("register_module_module_registration_hook", count_module)):
        if hasattr(module_mod, register):  # torch >= 2.0
            hooks.append(getattr(module_mod, register)(hook))
    try:
        yield total
    finally:
        for h in hooks:
            h.remove()


def build_within(limit: int, what: str, build, *args, **kwargs):
    """``build(*args, **kwargs)`` after a dry run of it on the meta device under
    :func:`model_budget`: size arguments that ask for gigabytes are refused in milliseconds,
    before anything is allocated.  The real build runs under the same budget (and alone, when
    the builder cannot run on the meta device)."""
    import torch

    with model_budget(limit, what):
        try:
            with torch.device("meta"):
                build(*args, **kwargs)
        except InputTooLargeError:
            raise
        except Exception:  # code that cannot run on the meta device: the budget still guards the real build
            pass
        return build(*args, **kwargs)
