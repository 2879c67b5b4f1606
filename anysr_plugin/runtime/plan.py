"""The per-call plan: which width and scale one block call runs at, without shared mutable state.

Why a module of its own: blocks ask for their plan on every call, the controls
(``use_width`` / ``use_scale`` / ``use_budget``) and the model's hooks write it; all of
them must agree without any of them writing on the blocks, because a converted model
is used from several threads at once, its contexts are entered and left in any order,
and activation checkpointing re-runs blocks during backward, long after the call's
hooks and contexts are gone.  So:

* **user controls** live in a :class:`contextvars.ContextVar` (each thread and each
  asyncio task sees its own), as a tuple of entries; entering a context adds one entry,
  leaving it ends *that* entry, whatever the order: the newest live entry wins, and
  once every context has exited the model is exactly as it was found.  An entry lasts
  from entering its context to leaving it, wherever the leaving runs (a generator closed
  or collected elsewhere): tasks and copied contexts see it until then.  ``set_width``
  (persistent, process-wide by design) is a field of the model's state.
* **per-call plans** live in another ContextVar, keyed by the model's state object (one
  per converted model, shared with DataParallel replicas, copied by ``deepcopy``) and
  owned by the module whose hook made them, so two threads calling the same model each
  get their own plan.
* **checkpoint recompute**: a call inside a checkpointed forward records its plan on
  that checkpoint's own object, and its recompute in backward replays exactly those
  plans, whatever ran in between (``recompute.py``); what cannot be replayed exactly
  is refused with ``CheckpointRecomputeError``.
* **DataParallel** runs replicas in worker threads that do not see the caller's
  contexts; a block replica therefore carries a snapshot of the controls that were live
  when it was replicated (``AnySRBlock._replicate_for_data_parallel``).

The width rule itself is the model's policy object (``state.policy``, ``policy.py``: the
paper's, or a compat mode's, attached at conversion), so this module knows no compat mode.
It imports only ``errors``, ``limits`` and ``recompute`` (besides torch): the blocks and
``control`` import it, never the other way round (tests/test_layers.py).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
from typing import Iterator

import torch

from .errors import ScaleError, shorten
from .limits import check_floats
from .recompute import in_backward, locate

# ---------------------------------------------------------------------------
# scales


def scale_pair(scale) -> tuple:
    """``(s_h, s_w)`` floats from a number or a pair; ScaleError unless both are positive and finite."""
    check_floats(scale, ScaleError, "scale")  # 10**400: a typed error, never OverflowError
    if isinstance(scale, (tuple, list)):
        if len(scale) != 2:
            raise ScaleError(f"scale must be a number or a pair (s_h, s_w), got {shorten(scale)}")
        sh, sw = scale
    else:
        sh = sw = scale
    try:
        sh, sw = float(sh), float(sw)
    except (TypeError, ValueError):
        raise ScaleError(f"scale must be numeric, got {shorten(scale)}") from None
    if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
        raise ScaleError(f"scale must be positive and finite, got {shorten(scale)}")
    return sh, sw


def _is_number(value) -> bool:
    """A real number, numpy scalars and 0-d tensors included; never a bool."""
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and value.dtype != torch.bool
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return False
    return isinstance(value, numbers.Real)


def as_scale_tensor(scale, batch: int | None = None, device=None) -> torch.Tensor:
    """A float32 (B, 2) tensor of (s_h, s_w) from a float, a pair, or a (B, 2) / (B, 1) / (2,) tensor
    (a (B,) tensor when `batch` says B)."""
    check_floats(scale, ScaleError, "scale")  # 10**400: a typed error, never OverflowError
    if isinstance(scale, torch.Tensor):
        if scale.dtype == torch.bool or scale.is_complex():
            raise ScaleError(f"a scale tensor must hold real numbers, got dtype {scale.dtype}")
        t = scale.detach().to(device=device, dtype=torch.float32)
        if t.dim() == 0:
            t = t.reshape(1, 1).expand(1, 2)
        elif t.dim() == 1 and t.shape[0] == 2:
            t = t.reshape(1, 2)
        elif t.dim() == 1 and batch is not None and t.shape[0] == batch:
            t = t[:, None].expand(-1, 2)
        elif t.dim() == 2 and t.shape[1] == 1:  # one isotropic scale per sample
            t = t.expand(-1, 2)
        elif not (t.dim() == 2 and t.shape[1] == 2):
            raise ScaleError(f"a scale tensor must be 0-d, (2,) or (B, 2); got shape {tuple(scale.shape)}")
    elif _is_number(scale):
        t = torch.tensor([[float(scale), float(scale)]], device=device)
    elif isinstance(scale, (tuple, list)) and len(scale) == 2 and all(_is_number(s) for s in scale):
        t = torch.tensor([[float(scale[0]), float(scale[1])]], device=device)
    else:
        raise ScaleError(f"scale must be a number, an (s_h, s_w) pair or a (B, 2) tensor; got {shorten(scale)}")
    if t.numel() == 0 or not torch.isfinite(t).all() or (t <= 0).any():
        raise ScaleError(f"scales must be positive finite numbers; got {shorten(t)}")
    return t


# ---------------------------------------------------------------------------
# user controls: a context-local tuple of entries


class _Entry:
    """One open control; ``live`` turns False when its context exits, wherever that happens."""

    __slots__ = ("state", "kind", "value", "live")

    def __init__(self, state, kind: str, value):
        self.state, self.kind, self.value, self.live = state, kind, value, True


_CONTROLS: contextvars.ContextVar = contextvars.ContextVar("anysr_controls", default=())

CONTROL_KINDS = ("width", "scale", "budget")


@contextlib.contextmanager
def control(state, kind: str, value) -> Iterator[None]:
    """Add one control entry for the model of `state` while the context is open.

    On exit exactly this entry ends (contexts may exit in any order).  It ends in every
    context that holds it, also when the exit runs in another one: a generator holding
    the context may be closed or collected in another thread, and asyncio finalises an
    async generator left early by running its ``aclose()`` in a new task."""
    if kind not in CONTROL_KINDS:
        raise ValueError(f"unknown control {kind!r}")
    entry = _Entry(state, kind, value)
    _CONTROLS.set(_live(_CONTROLS.get()) + (entry,))
    try:
        yield
    finally:
        entry.live = False
        _CONTROLS.set(_live(_CONTROLS.get()))


def _live(entries: tuple) -> tuple:
    return tuple(e for e in entries if e.live)


def snapshot(state) -> tuple:
    """The live control entries of `state` in this context (for DataParallel replicas)."""
    return tuple(e for e in _live(_CONTROLS.get()) if e.state is state)


def controls(state, block=None) -> dict:
    """``{"width", "scale", "budget"}`` in force for the model of `state` in this context.

    A width fixed by a live ``use_width`` wins over ``set_width`` (``state.fixed_width``).
    Without any live entry here, the snapshot a DataParallel replica `block` carries."""
    entries = snapshot(state)
    if not entries and block is not None:
        entries = block.__dict__.get("_anysr_inherited", ())
    out = {"width": getattr(state, "fixed_width", None), "scale": None, "budget": None}
    seen = set()
    for e in reversed(entries):
        if e.kind not in seen:
            seen.add(e.kind)
            out[e.kind] = e.value
    return out


# ---------------------------------------------------------------------------
# deciding a plan


def decide_widths(state, ctl: dict, scale: torch.Tensor | None, batch: int, training: bool,
                  block=None, x: torch.Tensor | None = None) -> list:
    """Per-sample widths for one call.

    Precedence: a fixed width (``use_width`` / ``set_width``), a budget, the scale's width by
    the model's policy (``state.policy``, policy.py: the paper's group, and in ``train()``
    Algorithm 1's reset to full width, per sample or, with ``reset="batch"``, once per call),
    no scale: full width with one warning."""
    cfg = state.config
    if ctl["width"] is not None:
        return [ctl["width"]]
    if ctl["budget"] is not None:
        return [ctl["budget"].width_for(block, scale, x)]
    if scale is None:
        if x is not None and x.is_meta:
            state.warn_once("no-scale", "AnySR: a call on the meta device carries no values to read its scale "
                            "from, so the full network runs (a fixed width runs that width; "
                            "anysr_plugin.use_scale(model, s) gives the scale's width)")
        state.warn_once("no-scale", "AnySR: no scale is known for this call, so the full network runs "
                        f"(gates see scale {cfg.fallback_scale}); pass it with anysr_plugin.use_scale(model, s) "
                        "or call the model's forward with its scale arguments")
        return [1.0]
    return state.policy.widths(state, scale, training)  # the paper's rule, or a compat mode's (policy.py)


def make_plan(state, call_scale: torch.Tensor | None, batch: int, training: bool, block=None,
              x: torch.Tensor | None = None):
    """(scale (B, 2) the gates see, per-sample widths) for one call under the live controls.

    The gates always see the call's scale (or ``use_scale``'s), also when the width is
    fixed: a fixed width fixes only the width."""
    ctl = controls(state, block)
    scale = ctl["scale"] if ctl["scale"] is not None else call_scale
    widths = decide_widths(state, ctl, scale, batch, training, block, x)
    if scale is None:
        scale = as_scale_tensor(state.config.fallback_scale)
    return state.policy.gate_scale(scale), widths


def scale_known(state, block=None) -> bool:
    """True when a call of this model now would know its scale (a live call plan made from a
    scale, or ``use_scale``); a fixed width alone does not count."""
    for st, _, _, knows, _ in reversed(_PLANS.get()):
        if st is state:
            return knows
    return controls(state, block)["scale"] is not None


# ---------------------------------------------------------------------------
# per-call plans: a context-local tuple of (state, owner id, plan, knows scale, settled)

_PLANS: contextvars.ContextVar = contextvars.ContextVar("anysr_plans", default=())


def _active_entry(state):
    for entry in reversed(_PLANS.get()):
        if entry[0] is state:
            return entry
    return None


def active_plan(state):
    """The plan of the call of this model that is running in this context, or None."""
    entry = _active_entry(state)
    return None if entry is None else entry[2]


def push_plan(state, owner: int, plan, knows_scale: bool = True, settled: bool = False) -> None:
    """Make `plan` the plan of the call `owner` (a module id) is running; ``knows_scale``:
    it was made from a scale (not the no-scale fallback); ``settled``: a call without gradients
    outside any checkpoint, which nothing can recompute, so its blocks need not look for one."""
    _PLANS.set(_PLANS.get() + ((state, owner, plan, knows_scale, settled),))


def pop_plans(state, owner: int) -> None:
    _PLANS.set(tuple(p for p in _PLANS.get() if not (p[0] is state and p[1] == owner)))


# ---------------------------------------------------------------------------
# the block's question


def settled_call() -> bool:
    """True for a call made without gradients outside any checkpoint (found once, at the model's
    root): nothing can recompute it, so its blocks skip the per-call checkpoint lookup."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():
        return False
    segments = locate()
    return segments.replay is None and not segments.records


def call_plan(owner, batch: int, block=None, x: torch.Tensor | None = None):
    """The raw plan ``(scale, widths)`` of this call of `owner` (a block, or a slim decoder
    reading the plan of `block`): the running call's plan, or one made for the call alone
    (never a training draw); in a checkpoint recompute, the plan of its own forward."""
    entry = _active_entry((owner if block is None else block)._anysr_state)
    if entry is not None and entry[4] and not torch.is_grad_enabled():  # settled: no stack walk per block
        return entry[2]
    segments = locate()
    if segments.replay is not None:
        plan = segments.replay_plan(owner)
    else:
        plan = _plan_now(owner if block is None else block, batch, x)
    segments.remember(owner, plan)
    return plan


def _plan_now(block, batch: int, x: torch.Tensor | None = None):
    state = block._anysr_state
    plan = active_plan(state)
    if plan is None:  # called outside a hooked module: plan for itself
        plan = make_plan(state, None, batch, False, block, x)
    return plan


def plan_for_block(block, x: torch.Tensor):
    """(scale (B, 2) on x's device, per-sample widths) for this call of `block`."""
    if torch.jit.is_tracing():
        _run_untraced(block, x)
    plan = call_plan(block, x.shape[0], x=x)
    scale, widths = plan
    if scale.device != x.device:
        scale = scale.to(device=x.device)
    if scale.shape[0] == 1 and x.shape[0] != 1:
        scale = scale.expand(x.shape[0], 2)
    elif scale.shape[0] != x.shape[0]:
        raise ScaleError(f"{scale.shape[0]} per-sample scales for a batch of {x.shape[0]} in {type(block).__name__}")
    if len(widths) not in (1, x.shape[0]):
        raise ScaleError(f"{len(widths)} per-sample widths for a batch of {x.shape[0]}")
    return scale, widths


def _run_untraced(block, x: torch.Tensor) -> None:
    """Run `block` once outside the trace before its traced call.

    Blocks and gates make small index tensors lazily, on their first call at a width and
    device.  A trace that makes them records them at another place than a trace that finds
    them, so ``torch.jit.trace``'s check (it traces twice) failed with "Graphs differed
    across invocations" on the first call of a fresh model.  Made here, every traced call
    finds them."""
    state = torch._C._get_tracing_state()
    torch._C._set_tracing_state(None)
    try:
        block.forward(x.detach().clone())
    finally:
        torch._C._set_tracing_state(state)


def peek_plan(block, x: torch.Tensor):
    """The plan `block` would run a call on `x` with now, without remembering or consuming
    anything (for reports); never a training draw."""
    return _plan_now(block, x.shape[0], x)


__all__ = ["peek_plan", "scale_pair", "as_scale_tensor", "control", "controls", "snapshot", "decide_widths",
           "make_plan", "in_backward",
           "active_plan", "push_plan", "pop_plans", "settled_call", "call_plan", "plan_for_block", "scale_known"]
