"""Which sub-network runs: the per-call plan, the hooks that make it, and the user's controls.

For every call the model's hooks write a *plan* on each AnySR block of **that module
instance** (DataParallel replicas get their own blocks, so nothing is shared between
threads): the per-sample scale ``(B, 2)`` and the per-sample width.

Width precedence, per call:
1. a fixed width (``use_width``) or a budget (``use_budget``);
2. the scale: an explicit ``use_scale`` override, else what the method adapter reads
   from the call's arguments (LIIF: ``cell``; Meta-SR / ArbSR: ``set_scale``);
   ``eval()``: the scale group's width (``config.width_for_scale(max(s_h, s_w))``);
   ``train()``: Algorithm 1 per sample, the group's width reset to full with
   probability ``reset_prob``, drawn from the model's seedable generator;
3. no scale known: the full network, with one warning.

Two hooks carry this: one on the model's root (sees the call's arguments) and one on
the adapter's block root (the encoder), so call paths that run the encoder directly
(LIIF's ``gen_feat`` in ``batched_predict``) still get one consistent plan.
"""
from __future__ import annotations

import contextlib
import math
import warnings
from typing import Iterator

import torch
from torch import nn

from .config import AnySRConfig
from .errors import AnySRWarning, NotAModuleError, NotAnySRError, ScaleError


class AnySRState:
    """Model-level AnySR state: config, adapter name, Algorithm-1 generator, warnings given.

    Stored as a plain attribute ``_anysr_state`` on the root, the block root and every
    block (the same object), never in ``state_dict``.  Pickles and deep-copies cleanly.
    """

    def __init__(self, config: AnySRConfig, adapter_name: str, block_root: str = ""):
        self.config = config
        self.adapter_name = adapter_name
        self.block_root = block_root
        self.generator = torch.Generator(device="cpu")
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        self.generator.manual_seed(seed)
        self.warned: set = set()

    @property
    def adapter(self):
        from .adapters import get_adapter

        return get_adapter(self.adapter_name)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(message, AnySRWarning, stacklevel=4)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["generator"] = self.generator.get_state()
        return state

    def __setstate__(self, state):
        gen = torch.Generator(device="cpu")
        gen.set_state(state["generator"])
        state["generator"] = gen
        self.__dict__.update(state)


# ---------------------------------------------------------------------------
# finding the AnySR parts of a (possibly wrapped) model


def unwrap(model: nn.Module) -> nn.Module:
    """Strip DataParallel / DistributedDataParallel ``.module`` and torch.compile ``._orig_mod``."""
    if not isinstance(model, nn.Module):
        raise NotAModuleError.for_value(model)
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(getattr(model, "_orig_mod"), nn.Module):
            model = model._orig_mod
        else:
            return model


def anysr_blocks(model: nn.Module) -> list:
    from .blocks import AnySRBlock

    return [m for m in unwrap(model).modules() if isinstance(m, AnySRBlock)]


def get_state(model: nn.Module) -> AnySRState:
    state = getattr(unwrap(model), "_anysr_state", None)
    if state is None:
        blocks = anysr_blocks(model)
        state = blocks[0]._anysr_state if blocks else None
    if state is None:
        raise NotAnySRError(f"{type(unwrap(model)).__name__} was not converted: call anysr_plugin.anysrify(model) first")
    return state


def _require_blocks(model: nn.Module) -> list:
    blocks = anysr_blocks(model)
    if not blocks:
        raise NotAnySRError(f"{type(unwrap(model)).__name__} holds no AnySR blocks: call anysr_plugin.anysrify(model) first")
    return blocks


# ---------------------------------------------------------------------------
# scales


def scale_pair(scale) -> tuple:
    """``(s_h, s_w)`` floats from a number or a pair; ScaleError unless both are positive and finite."""
    if isinstance(scale, (tuple, list)):
        if len(scale) != 2:
            raise ScaleError(f"scale must be a number or a pair (s_h, s_w), got {scale!r}")
        sh, sw = scale
    else:
        sh = sw = scale
    try:
        sh, sw = float(sh), float(sw)
    except (TypeError, ValueError):
        raise ScaleError(f"scale must be numeric, got {scale!r}") from None
    if not (sh > 0 and sw > 0 and math.isfinite(sh) and math.isfinite(sw)):
        raise ScaleError(f"scale must be positive and finite, got {scale!r}")
    return sh, sw


def as_scale_tensor(scale, batch: int | None = None, device=None) -> torch.Tensor:
    """A float32 (B, 2) tensor of (s_h, s_w) from a float, a pair, or a (B, 2) / (2,) tensor."""
    if isinstance(scale, torch.Tensor):
        t = scale.detach().to(device=device, dtype=torch.float32)
        if t.dim() == 0:
            t = t.reshape(1, 1).expand(1, 2)
        elif t.dim() == 1 and t.shape[0] == 2:
            t = t.reshape(1, 2)
        elif t.dim() == 1 and batch is not None and t.shape[0] == batch:
            t = t[:, None].expand(-1, 2)
        elif not (t.dim() == 2 and t.shape[1] == 2):
            raise ScaleError(f"a scale tensor must be 0-d, (2,) or (B, 2); got shape {tuple(scale.shape)}")
    elif isinstance(scale, (int, float)) and not isinstance(scale, bool):
        t = torch.tensor([[float(scale), float(scale)]], device=device)
    elif isinstance(scale, (tuple, list)) and len(scale) == 2 and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) for s in scale):
        t = torch.tensor([[float(scale[0]), float(scale[1])]], device=device)
    else:
        raise ScaleError(f"scale must be a number, an (s_h, s_w) pair or a (B, 2) tensor; got {scale!r}")
    if t.numel() == 0 or not torch.isfinite(t).all() or (t <= 0).any():
        raise ScaleError(f"scales must be positive finite numbers; got {t.tolist()}")
    return t


# ---------------------------------------------------------------------------
# the plan


def decide_widths(state: AnySRState, block, scale: torch.Tensor | None, batch: int, training: bool,
                  x: torch.Tensor | None = None) -> list:
    """Per-sample widths for one call (see the module docstring for the precedence)."""
    cfg = state.config
    if block._anysr_fixed_width is not None:
        return [block._anysr_fixed_width]
    if block._anysr_budget is not None:
        return [block._anysr_budget.width_for(block, scale, x)]
    if scale is None:
        state.warn_once("no-scale", "AnySR: no scale is known for this call, so the full network runs "
                        f"(gates see scale {cfg.fallback_scale}); pass it with anysr_plugin.use_scale(model, s) "
                        "or call the model's forward with its scale arguments")
        return [1.0]
    if cfg.compat == "official":  # official-release compatibility: 0.1-grid lookup, no reset (official.py)
        from .official import official_widths
        return official_widths(scale, cfg.widths)
    group = [cfg.width_for_scale(float(s)) for s in scale.max(dim=1).values.tolist()]
    if training and cfg.reset_prob > 0:
        reset = (torch.rand(len(group), generator=state.generator) < cfg.reset_prob).tolist()
        group = [1.0 if r else w for w, r in zip(group, reset)]
    return group


def make_plan(state: AnySRState, block, call_scale: torch.Tensor | None, batch: int, training: bool,
              x: torch.Tensor | None = None):
    """(scale (B, 2) the gates see, per-sample widths) for one call; `block` carries the user's controls."""
    override = block._anysr_scale_override
    scale = override if override is not None else call_scale
    widths = decide_widths(state, block, scale, batch, training, x)
    if scale is None:
        scale = as_scale_tensor(state.config.fallback_scale)
    if state.config.compat == "official":  # official-release compatibility: sign flip (official.py)
        from .official import official_gate_scale
        scale = official_gate_scale(scale)
    return scale, widths


def _first_batch(args: tuple, kwargs: dict) -> int:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


class PlanHook:
    """Forward pre-hook (with kwargs) that writes one plan on the blocks below `module`.

    ``reads_call=True`` on the model root: the adapter reads the scale from the call.
    A plan already written by an outer hook in this call is kept.
    """

    def __init__(self, reads_call: bool):
        self.reads_call = reads_call

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        blocks = anysr_blocks(module)
        if not blocks or blocks[0]._anysr_plan is not None:
            return None
        state = blocks[0]._anysr_state
        call_scale = None
        if self.reads_call:
            call_scale = state.adapter.scale_from_call(module, args, kwargs)
            if call_scale is not None:
                call_scale = as_scale_tensor(call_scale)
            # -- official-release compatibility: the nominal scale its gates see (official.py) --
            if call_scale is not None and state.config.compat == "official":
                from .official import release_call_scale
                call_scale = release_call_scale(state.adapter, args, kwargs, call_scale)
        batch = call_scale.shape[0] if call_scale is not None else _first_batch(args, kwargs)
        plan = make_plan(state, blocks[0], call_scale, batch, module.training)
        owner = id(module)
        for b in blocks:
            b._anysr_plan = plan
            b._anysr_plan_owner = owner
        return None


class ClearPlanHook:
    """Forward hook that removes the plan once the call that made it returns."""

    def __call__(self, module: nn.Module, args: tuple, output):
        owner = id(module)
        for b in anysr_blocks(module):
            if getattr(b, "_anysr_plan_owner", None) == owner:
                b._anysr_plan = None
                b._anysr_plan_owner = None
        return None


def plan_for_block(block, x: torch.Tensor):
    """(scale (B, 2) on x's device, per-sample widths) for this block call."""
    plan = block._anysr_plan
    if plan is None:  # block called outside a hooked module: plan for itself (never a training draw)
        plan = make_plan(block._anysr_state, block, None, x.shape[0], False, x)
    scale, widths = plan
    scale = scale.to(device=x.device)
    if scale.shape[0] == 1 and x.shape[0] != 1:
        scale = scale.expand(x.shape[0], 2)
    elif scale.shape[0] != x.shape[0]:
        raise ScaleError(f"{scale.shape[0]} per-sample scales for a batch of {x.shape[0]} in {type(block).__name__}")
    if len(widths) not in (1, x.shape[0]):
        raise ScaleError(f"{len(widths)} per-sample widths for a batch of {x.shape[0]}")
    return scale, widths


# ---------------------------------------------------------------------------
# user controls


@contextlib.contextmanager
def _set_on_blocks(blocks: list, attr: str, value) -> Iterator[None]:
    previous = [getattr(b, attr) for b in blocks]
    for b in blocks:
        setattr(b, attr, value)
    try:
        yield
    finally:
        for b, p in zip(blocks, previous):
            setattr(b, attr, p)


@contextlib.contextmanager
def use_width(model: nn.Module, width: float) -> Iterator[None]:
    """Run every call inside the block at the fixed sub-network `width` (any-resource)."""
    blocks = _require_blocks(model)
    width = get_state(model).config.check_width(width)
    with _set_on_blocks(blocks, "_anysr_fixed_width", width):
        yield


@contextlib.contextmanager
def use_scale(model: nn.Module, scale) -> Iterator[None]:
    """Give the blocks the scale explicitly: a float, an (s_h, s_w) pair or a (B, 2) tensor.

    Overrides what the adapter reads from the call; needed for paths that run the
    encoder before the scale is visible (LIIF's ``gen_feat`` + ``query_rgb``).
    """
    blocks = _require_blocks(model)
    tensor = as_scale_tensor(scale)
    with _set_on_blocks(blocks, "_anysr_scale_override", tensor):
        yield


def set_width(model: nn.Module, width: float | None) -> None:
    """Fix the width until changed (None = back to the scale policy)."""
    blocks = _require_blocks(model)
    if width is not None:
        width = get_state(model).config.check_width(width)
    for b in blocks:
        b._anysr_fixed_width = width


def active_widths(model: nn.Module, scale) -> list:
    """Per-sample widths the model would use in eval mode for `scale` (no call needed)."""
    state = get_state(model)
    blocks = _require_blocks(model)
    return decide_widths(state, blocks[0], as_scale_tensor(scale), 1, False)


__all__ = ["AnySRState", "use_width", "use_scale", "set_width", "unwrap", "anysr_blocks", "get_state",
           "as_scale_tensor", "scale_pair", "active_widths"]
