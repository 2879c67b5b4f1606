"""Activation checkpointing: which forward a block call recomputes, so it reuses that forward's plan.

A checkpoint re-runs a segment of the model during backward, long after the call's hooks
and ``use_width`` / ``use_scale`` contexts are gone, and after any number of other forwards
(GAN-style steps, gradient accumulation, teacher forwards, other checkpointed forwards).
The recompute must run each block with the plan of *its own* forward, so plans are tied
to the checkpoint call itself:

* while a checkpointed forward runs, every AnySR call (a block, a slim decoder) appends
  ``(owner, plan)`` to a record kept on that checkpoint's own object: the autograd
  ``ctx`` of a reentrant checkpoint (any ``autograd.Function`` whose ``forward(ctx, ...)``
  runs the model, which is what ``torch.utils.checkpoint(use_reentrant=True)`` and the
  checkpoints built like it are), or the ``_CheckpointFrame`` of a non-reentrant one;
  nested checkpoints record into every enclosing segment;
* while a segment is recomputed (that ``Function``'s ``backward(ctx, ...)``, or the
  non-reentrant unpack hook of that frame, is on the stack), the calls take the
  recorded plans back in order, one cursor per backward pass (a graph backwarded twice
  with ``retain_graph`` replays twice).

Both objects live exactly as long as the graph that can recompute them, so nothing is
kept on the blocks and nothing leaks.  The checkpoint is found by walking the Python
stack of the running thread (the recompute runs on the thread that runs backward, which
sees none of the caller's contexts).  When the replay cannot be exact (the recompute ran
other AnySR modules than its forward, or an AnySR call runs during backward outside any
recompute this module recognises) :class:`CheckpointRecomputeError` is raised instead of
computing gradients with a guessed width.

Imports only ``errors`` and torch.
"""
from __future__ import annotations

import sys

import torch
import torch.utils.checkpoint as _ckpt
from torch.autograd.function import FunctionCtx

from .errors import CheckpointRecomputeError

_CHECKPOINT_FILE = _ckpt.__file__
_CHECKPOINT_FRAME = getattr(_ckpt, "_CheckpointFrame", None)
_RECORD = "_anysr_plans"
_CURSORS = "_anysr_cursors"


def in_backward() -> bool:
    """True while the autograd engine runs a backward pass in this thread."""
    return torch._C._current_graph_task_id() != -1


class Segments:
    """Where an AnySR call stands: ``replay`` (the segment being recomputed, or None), its
    backward pass ``gid``, and ``records`` (the checkpointed forwards it is part of)."""

    __slots__ = ("replay", "gid", "records")

    def __init__(self, replay=None, gid=None, records=()):
        self.replay, self.gid, self.records = replay, gid, records

    def replay_plan(self, owner):
        """The plan the recomputed segment's forward ran `owner` with, in call order."""
        cursors = _attached(self.replay, _CURSORS, dict)
        i = cursors.get(self.gid, 0)
        record = getattr(self.replay, _RECORD, ())
        if i >= len(record) or record[i][0] is not owner:
            there = "nothing more"
            if i < len(record):
                there = ("a different " if type(record[i][0]) is type(owner) else "") + _describe(record[i][0])
            raise CheckpointRecomputeError(
                f"activation checkpointing recomputed {_describe(owner)} as AnySR call {i + 1} of a segment whose "
                f"forward ran {there} there ({len(record)} AnySR calls in all): the recompute ran other AnySR blocks "
                "than its forward, so its width and scale cannot be known and its gradients would be wrong. Make "
                "the checkpointed function run the same modules in forward and recompute (no control flow on "
                "state that changes in between)")
        cursors[self.gid] = i + 1
        return record[i][1]

    def remember(self, owner, plan) -> None:
        for segment in self.records:
            _attached(segment, _RECORD, list).append((owner, plan))


def _attached(segment, name: str, kind):
    """The `kind` object stored under `name` on a checkpoint's own object (made on first use)."""
    value = getattr(segment, name, None)
    if value is None:
        value = kind()
        setattr(segment, name, value)
    return value


def _describe(owner) -> str:
    upstream = getattr(owner, "upstream_type", None)
    return f"{type(owner).__name__}" + (f" (was {upstream})" if upstream else "")


def _function_ctx(frame):
    """The autograd ctx of a ``Function.forward(ctx, ...)`` / ``backward(ctx, ...)`` frame, else None."""
    code = frame.f_code
    if code.co_name not in ("forward", "backward") or not code.co_argcount or code.co_varnames[0] != "ctx":
        return None
    ctx = frame.f_locals.get("ctx")
    return ctx if isinstance(ctx, FunctionCtx) else None


def _non_reentrant(frame):
    """``("forward" | "recompute", _CheckpointFrame, gid)`` for a frame of torch's non-reentrant
    checkpoint that runs a checkpointed forward or recomputes one, else None."""
    code = frame.f_code
    if code.co_filename != _CHECKPOINT_FILE or _CHECKPOINT_FRAME is None:
        return None
    if "gen" in code.co_varnames:  # checkpoint() running the function, its generator suspended
        gen = frame.f_locals.get("gen")
        inner = getattr(gen, "gi_frame", None)
        segment = inner.f_locals.get("new_frame") if inner is not None else None
        return ("forward", segment, None) if isinstance(segment, _CHECKPOINT_FRAME) else None
    if code.co_name.startswith("unpack_hook") and "frame" in code.co_freevars:
        local = frame.f_locals
        segment = local.get("frame")
        if isinstance(segment, _CHECKPOINT_FRAME):
            gid = local.get("gid", torch._C._current_graph_task_id())
            return "recompute", segment, gid
    return None


def locate() -> Segments:
    """The checkpoint segments the running AnySR call belongs to (see the module docstring).

    Innermost first: checkpointed forwards are collected until the innermost segment being
    recomputed, whose plans the call replays."""
    if torch.compiler.is_compiling():  # compiled graphs recompute without re-running Python
        return Segments()
    records = []
    frame = sys._getframe(1)
    while frame is not None:
        ctx = _function_ctx(frame)
        if ctx is not None:
            if frame.f_code.co_name == "backward":
                return Segments(ctx, torch._C._current_graph_task_id(), records)
            records.append(ctx)
        else:
            found = _non_reentrant(frame)
            if found is not None:
                kind, segment, gid = found
                if kind == "recompute":
                    return Segments(segment, gid, records)
                records.append(segment)
        frame = frame.f_back
    if in_backward():
        raise CheckpointRecomputeError(
            "an AnySR block ran during backward outside a recompute AnySR can match to its forward "
            "(torch.utils.checkpoint, reentrant or not, and autograd.Function checkpoints that re-run their "
            "forward in backward are matched): its width and scale cannot be known. Use torch.utils.checkpoint, "
            "or call the model outside backward")
    return Segments(records=records)


__all__ = ["Segments", "locate", "in_backward"]
