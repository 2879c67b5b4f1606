"""anysrify: plan, validate, then apply the block surgery, in place.

1. **Plan**: walk the adapter's block root; every module whose class name marks it
   as a block family (``ResBlock``, ``RCAB``, ``RDB``) is a candidate; matched blocks
   are not descended into.
2. **Validate**: each candidate's structure is checked (layer kinds and shapes) and
   its conversion, run at full width with a neutral gate on a small random input,
   must reproduce the original block's output; lambda must divide the channels.
   Any failure raises before the model is touched, naming what was found.
3. **Apply**: each block is replaced in its parent by an AnySR block that adopts the
   original children (same attribute names, same ``Parameter`` objects); gates are
   created on the block's device and dtype; two hooks are installed (control.py).

With ``AnySRConfig(decoder="slim")`` the implicit decoder is planned, validated and
converted the same way (decoder.py), after the blocks.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field

import torch
from torch import nn

from .blocks import BLOCK_TYPES, AnySRBlock, block_class_for
from .blocks.base import full_width_reference
from .config import AnySRConfig, channels_at
from .control import AnySRState, ClearPlanHook, PlanHook, unwrap
from .errors import AlreadyAnySRError, AnySRError, ConfigError, NoBlocksError, UnsupportedBlockError

#: a converted block must reproduce its original to this precision at conversion time
EQUIVALENCE_TOLERANCE = 1e-4


@dataclass
class Target:
    name: str          # dotted path from the model root
    upstream_type: str  # class name of the original block
    family: str        # "edsr" | "rcab" | "rdb"
    channels: int      # channels the gate sees (C, or the growth G for RDB)
    lam: int
    width_channels: dict = field(default_factory=dict)  # width -> floor(C * w)


@dataclass
class Skipped:
    name: str
    upstream_type: str
    reason: str


@dataclass
class TargetReport:
    """What anysrify will replace (or replaced), what it skipped and why."""

    adapter: str
    block_root: str
    converted: bool
    targets: list
    skipped: list
    module_types: dict  # class name -> count, everything walked

    def __str__(self) -> str:
        verb = "replaced" if self.converted else "would replace"
        lines = [f"adapter {self.adapter!r}, block root {self.block_root or '<model>'!r}: "
                 f"{verb} {len(self.targets)} block(s), skipped {len(self.skipped)}"]
        for t in self.targets:
            widths = ", ".join(f"{w:g}:{n}" for w, n in t.width_channels.items())
            lines.append(f"  {verb:>13} {t.name:<32} {t.upstream_type:<10} {t.family:<5} "
                         f"C={t.channels:<4} lambda={t.lam:<2} channels per width {{{widths}}}")
        for s in self.skipped:
            lines.append(f"  {'skipped':>13} {s.name:<32} {s.upstream_type:<10} {s.reason}")
        return "\n".join(lines)


def _family_of(module: nn.Module):
    for cls in BLOCK_TYPES:
        if cls.is_candidate(module):
            return cls
    return None


def _walk(root: nn.Module, prefix: str):
    """Yield (name, module, parent, attr) depth-first, not descending into candidates."""
    stack = [(prefix, root, None, None)]
    while stack:
        name, module, parent, attr = stack.pop()
        yield name, module, parent, attr
        if parent is not None and (_family_of(module) is not None or isinstance(module, AnySRBlock)):
            continue
        children = list(module._modules.items())
        for child_attr, child in reversed(children):
            if child is not None:
                stack.append((f"{name}.{child_attr}" if name else child_attr, child, module, child_attr))


def _resolve(model: nn.Module, config, adapter):
    from .adapters import detect_adapter, get_adapter

    config = AnySRConfig() if config is None else config
    if isinstance(config, dict):
        config = AnySRConfig.from_dict(config)
    if not isinstance(config, AnySRConfig):
        raise ConfigError(f"config must be an AnySRConfig or a dict, got {type(config).__name__}")
    adapter = detect_adapter(model) if adapter is None else get_adapter(adapter)
    root = adapter.block_root(model)
    root_name = next((n for n, m in model.named_modules() if m is root), "")
    return config, adapter, root, root_name


def _plan(model: nn.Module, config: AnySRConfig, adapter, root: nn.Module, root_name: str):
    targets, skipped, entries = [], [], []
    types = collections.Counter()
    for name, module, parent, attr in _walk(root, root_name):
        types[type(module).__name__] += 1
        if isinstance(module, AnySRBlock):
            continue
        cls = _family_of(module)
        if cls is None or parent is None:
            continue
        cls = block_class_for(cls, config)  # compat="official": the release's RDB layout
        problem = cls.structure_problem(module)
        lam = config.lam_for(cls.family)
        channels = cls.gated_channels(module) if problem is None else 0
        if problem is None and config.interweave == "interleave" and channels % lam:
            problem = f"lambda={lam} does not divide the {channels} gated channels (set AnySRConfig.lam)"
        if problem is None and channels_at(channels, config.widths[0]) < 1:
            problem = f"width {config.widths[0]} leaves no channel of {channels}"
        if problem is not None:
            skipped.append(Skipped(name, type(module).__name__, problem))
            continue
        targets.append(Target(name, type(module).__name__, cls.family, channels, lam,
                              {w: channels_at(channels, w) for w in config.widths}))
        entries.append((cls, module, parent, attr))
    return targets, skipped, dict(types), entries


def inspect_targets(model: nn.Module, config: AnySRConfig | dict | None = None, adapter=None) -> TargetReport:
    """Report which blocks anysrify replaces (or replaced) and which it skips, and why."""
    model = unwrap(model)
    state = getattr(model, "_anysr_state", None)
    if state is not None:
        config, adapter = state.config, state.adapter_name
    config, adapter, root, root_name = _resolve(model, config, adapter)
    targets, skipped, types, _ = _plan(model, config, adapter, root, root_name)
    if state is not None:
        for name, module in model.named_modules():
            if isinstance(module, AnySRBlock):
                targets.append(Target(name, module.upstream_type, module.family, module.channels, module.lam,
                                      {w: channels_at(module.channels, w) for w in config.widths}))
    return TargetReport(adapter.name, root_name, state is not None, targets, skipped, types)


def anysrify(model: nn.Module, config: AnySRConfig | dict | None = None, adapter=None) -> nn.Module:
    """Convert `model` in place into an AnySR model and return the same object.

    ``config``: an :class:`AnySRConfig` (or its dict); None = paper defaults.
    ``adapter``: None to detect ("liif", "srno", ...; generic when none matches), a
    name, or a MethodAdapter.  Raises ``NoBlocksError`` when nothing is convertible,
    ``UnsupportedBlockError`` when a block-like module cannot be converted (nothing
    is changed then), ``AlreadyAnySRError`` on a second call.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise AnySRError("anysrify the model before wrapping it in DistributedDataParallel "
                         "(DDP registers its parameters at construction)")
    target_model = unwrap(model)
    if getattr(target_model, "_anysr_state", None) is not None or any(
            isinstance(m, AnySRBlock) for m in target_model.modules()):
        raise AlreadyAnySRError(f"{type(target_model).__name__} already holds AnySR blocks; "
                                "anysrify converts a model once")
    config, adapter, root, root_name = _resolve(target_model, config, adapter)
    targets, skipped, types, entries = _plan(target_model, config, adapter, root, root_name)
    if skipped:
        details = "\n".join(f"  {s.name} ({s.upstream_type}): {s.reason}" for s in skipped)
        raise UnsupportedBlockError(f"{len(skipped)} block-like module(s) cannot be converted; the model "
                                    f"was not changed:\n{details}")
    if not entries:
        seen = ", ".join(f"{k} x{v}" for k, v in sorted(types.items(), key=lambda kv: -kv[1]))
        raise NoBlocksError(
            f"no convertible block (EDSR ResBlock, RCAB, RDB) under {root_name or type(root).__name__!r} "
            f"(adapter {adapter.name!r}); module types seen: {seen}")

    decoder_plan = None
    if config.decoder == "slim":  # beyond the paper, opt-in: validated before anything changes
        from .decoder import plan_decoder
        decoder_plan = plan_decoder(target_model, config)

    state = AnySRState(config, adapter.name, root_name)
    built = []
    # gate init from config.seed when given (identical on every DDP rank), the caller's RNG untouched
    with torch.random.fork_rng(devices=[], enabled=config.seed is not None):
        if config.seed is not None:
            torch.manual_seed(config.seed)
        for (cls, module, parent, attr), target in zip(entries, targets):
            built.append((parent, attr, cls(module, config, state), module, target))
    for parent, attr, new, module, target in built:
        cls = type(new)
        diff = full_width_reference(module, new, module_input_channels(cls, module))
        if not diff <= EQUIVALENCE_TOLERANCE:
            raise UnsupportedBlockError(
                f"{target.name} ({type(module).__name__}) has the structure of a {cls.family} block but its "
                f"forward differs from x + body(x) by {diff:.3g}; the model was not changed")
    for parent, attr, new, _, _ in built:  # apply: nothing failed above
        parent._modules[attr] = new
    target_model._anysr_state = state
    hooked = [target_model] if root is target_model else [target_model, root]
    for i, module in enumerate(hooked):
        module._anysr_state = state
        module.register_forward_pre_hook(PlanHook(reads_call=(i == 0)), with_kwargs=True)
        module.register_forward_hook(ClearPlanHook(), always_call=True)
    if decoder_plan is not None:
        from .decoder import apply_decoder
        apply_decoder(target_model, decoder_plan, state)
    return model


def module_input_channels(cls, module: nn.Module) -> int:
    if cls.family == "rdb":
        return module.convs[0].conv[0].in_channels
    return module.body[0].in_channels


def is_anysr(model: nn.Module) -> bool:
    return getattr(unwrap(model), "_anysr_state", None) is not None


__all__ = ["anysrify", "inspect_targets", "is_anysr", "TargetReport", "Target", "Skipped"]
