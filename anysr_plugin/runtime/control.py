"""Which sub-network runs: the hooks that make each call's plan, and the user's controls.

Width precedence, per call (decided in ``plan.py``, by the model's policy, ``policy.py``):
1. a fixed width (``use_width`` / ``set_width``) or a budget (``use_budget``);
2. the scale: an explicit ``use_scale`` override, else what the model's scale source
   (found at conversion, see ``scale_source.py``) reads from the call
   (``cell``, ``set_scale``, a ``scale`` argument ...);
   ``eval()``: the scale group's width (``config.width_for_scale(max(s_h, s_w))``);
   ``train()``: Algorithm 1, the group's width reset to full with probability
   ``reset_prob``, drawn from the model's seedable generator once per sample
   (``config.reset="sample"``) or once per call (``"batch"``, as Algorithm 1 is written);
3. no scale known: the full network, with one warning.

A fixed width fixes only the width: the gates still see the call's scale.

Two hooks carry this: one on the model's root (sees the call's arguments) and one on
the adapter's block root (the encoder), so call paths that run the encoder directly
(LIIF's ``gen_feat`` in ``batched_predict``) still get one consistent plan.  Plans and
controls are context-local (threads, interleaved contexts, checkpoint recompute: see
plan.py): no plan or control is written on a block.  What anysrify leaves on the modules is
fixed at conversion (``_anysr_state``, the hooked modules' ``_anysr_first_block``); a block
keeps only caches of its own index layouts, and a DataParallel replica block carries the
snapshot of the controls live when it was replicated (``_anysr_inherited``).
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import torch
from torch import nn

from .blocks import AnySRBlock
from .config import AnySRConfig
from .errors import AnySRWarning, NotAModuleError, NotAnySRError
from .plan import (active_plan, as_scale_tensor, control, controls, decide_widths, in_backward, make_plan,
                   plan_for_block, pop_plans, push_plan, scale_pair, settled_call)
from .policy import policy_for
from .registry import ADAPTERS


class AnySRState:
    """Model-level AnySR state: config, adapter, scale source, width/scale policy, Algorithm-1
    generator, warnings given.

    Stored as a plain attribute ``_anysr_state`` on the root, the block root and every
    block (the same object), never in ``state_dict``.  Pickles and deep-copies cleanly.
    """

    def __init__(self, config: AnySRConfig, adapter_name: str, block_root: str = "", scale_source=None,
                 policy=None):
        self.config = config
        #: how scales become widths and gate scales (policy.py): the paper's, or the compat mode's
        self.policy = policy if policy is not None else policy_for(config.compat)
        self.adapter_name = adapter_name
        self.block_root = block_root
        #: where the scale of a call comes from (scale_source.ScaleSource); None = context only
        self.scale_source = scale_source
        #: ``set_width``: a width fixed until changed, for every thread (None = by scale)
        self.fixed_width = None
        self.generator = torch.Generator(device="cpu")
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        self.generator.manual_seed(seed)
        self.warned: set = set()

    @property
    def adapter(self):
        """The method adapter the model was converted with (looked up in the adapter registry)."""
        return ADAPTERS.get(self.adapter_name)

    def read_scale(self, module: nn.Module, args: tuple, kwargs: dict):
        """The call's per-sample scale (B, 2) from the model's scale source, checked (None: not in
        this call); a value the source cannot read is a ScaleSourceError naming the remedy.

        A call on the meta device carries shapes but no values: a scale that would have to be
        read from its tensors is unknown (the call runs as documented for an unknown scale)."""
        source = getattr(self, "scale_source", None)
        if source is None:
            return None
        if not _on_meta(args, kwargs):
            return source.read_checked(module, args, kwargs)
        try:
            scale = source.read_checked(module, args, kwargs)
        except (RuntimeError, NotImplementedError):  # "Tensor.item() cannot be called on meta tensors"
            return None
        return None if isinstance(scale, torch.Tensor) and scale.is_meta else scale

    def describe_scale_source(self) -> str:
        source = getattr(self, "scale_source", None)
        return source.describe() if source is not None else "scale from context (use_scale / use_width)"

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
        if "policy" not in state:  # pickled before the state held its policy
            state["policy"] = policy_for(state["config"].compat)
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


def compiled_parts(model: nn.Module) -> list:
    """``(name, kind)`` of every TorchScript or torch.compile module in `model`'s tree ("" = the
    model itself).  Their code is no longer the eager modules' code, so block surgery inside
    them cannot take effect: anysrify refuses them (CompiledModelError)."""
    found = []
    for name, m in model.named_modules():
        if any(name.startswith(f"{outer}.") or not outer for outer, _ in found):
            continue  # inside a wrapper already named
        if isinstance(m, torch.jit.ScriptModule):
            found.append((name, "a TorchScript module (torch.jit.script / torch.jit.trace)"))
        elif type(m).__module__.startswith("torch._dynamo") or m.__dict__.get("_compiled_call_impl") is not None:
            found.append((name, "a torch.compile'd module"))
    return found


def anysr_blocks(model: nn.Module) -> list:
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
# the plan (see plan.py): the hooks that make it, the controls that steer it


def first_block(module: nn.Module):
    """The first AnySR block under `module`, found through its path remembered at conversion
    (``_anysr_first_block``; a DataParallel replica resolves it among its own blocks), so a call
    does not walk every module; None when there is none."""
    path = module.__dict__.get("_anysr_first_block")
    if path is not None:
        try:
            block = module.get_submodule(path)
        except AttributeError:
            block = None

        if isinstance(block, AnySRBlock):
            return block
    blocks = anysr_blocks(module)
    return blocks[0] if blocks else None


def _on_meta(args: tuple, kwargs: dict) -> bool:
    return any(isinstance(v, torch.Tensor) and v.is_meta for v in (*args, *kwargs.values()))


def _first_batch(args: tuple, kwargs: dict) -> int:
    for value in list(args) + list(kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


class PlanHook:
    """Forward pre-hook (with kwargs) that makes one plan for the call of `module`.

    ``reads_call=True`` on the model root: the model's scale source reads the scale
    from the call (checked: a value it cannot read refuses the call before anything runs,
    so a trainer's first batch fails before its first optimizer step), unless ``use_scale``
    gives it.  A plan already made by an outer hook in this call (this thread, this
    context) is kept.  A call whose scale is not known makes no plan.
    """

    def __init__(self, reads_call: bool):
        self.reads_call = reads_call

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        state = getattr(module, "_anysr_state", None)
        if state is None or active_plan(state) is not None or in_backward():
            # in backward (activation checkpointing re-runs the call) the blocks reuse the plans of
            # their forward; planning again would draw Algorithm 1's resets a second time
            return None
        first = first_block(module)
        if first is None:
            return None
        given = controls(state, first)["scale"]
        call_scale = None
        if self.reads_call and given is None:  # use_scale overrides what the source would read
            call_scale = state.read_scale(module, args, kwargs)
            if call_scale is not None:  # the policy's call scale (a compat mode's nominal one)
                call_scale = state.policy.call_scale(state, args, kwargs, call_scale)
        if call_scale is None and given is None:
            # no scale in this call (yet): no plan; a block that runs now plans for itself (a fixed
            # width, or the full network with one warning), and a deferred feature method waits
            return None
        batch = call_scale.shape[0] if call_scale is not None else _first_batch(args, kwargs)
        push_plan(state, id(module), make_plan(state, call_scale, batch, module.training, first),
                  settled=settled_call())
        return None


class ClearPlanHook:
    """Forward hook that removes the plan once the call that made it returns (or raises)."""

    def __call__(self, module: nn.Module, args: tuple, output):
        state = getattr(module, "_anysr_state", None)
        if state is not None:
            pop_plans(state, id(module))
        return None


# ---------------------------------------------------------------------------
# user controls


@contextlib.contextmanager
def use_width(model: nn.Module, width: float) -> Iterator[None]:
    """Run every call of `model` in this thread / context at the fixed sub-network `width`.

    Only the width is fixed: the gates still see each call's scale."""
    _require_blocks(model)
    state = get_state(model)
    width = state.config.check_width(width)
    with control(state, "width", width):
        yield


@contextlib.contextmanager
def use_scale(model: nn.Module, scale) -> Iterator[None]:
    """Give the blocks the scale explicitly: a float, an (s_h, s_w) pair or a (B, 2) tensor.

    Overrides what the model's scale source reads from the call; needed for paths that
    run the encoder before the scale is visible (LIIF's ``gen_feat`` + ``query_rgb``).
    Per thread / context, like :func:`use_width`.
    """
    _require_blocks(model)
    tensor = as_scale_tensor(scale)
    with control(get_state(model), "scale", tensor):
        yield


def set_width(model: nn.Module, width: float | None) -> None:
    """Fix the width until changed (None = back to the scale policy), for every thread.

    A ``use_width`` context still wins while it is open."""
    _require_blocks(model)
    state = get_state(model)
    if width is not None:
        width = state.config.check_width(width)
    state.fixed_width = width


def active_widths(model: nn.Module, scale) -> list:
    """Per-sample widths the model would use in eval mode for `scale` (no call needed)."""
    state = get_state(model)
    blocks = _require_blocks(model)
    return decide_widths(state, controls(state, blocks[0]), as_scale_tensor(scale), 1, False, blocks[0])


__all__ = ["AnySRState", "use_width", "use_scale", "set_width", "unwrap", "compiled_parts", "anysr_blocks",
           "get_state", "as_scale_tensor", "scale_pair", "active_widths", "plan_for_block"]
