"""anysrify: plan, validate, then apply the block surgery, in place.

1. **Plan**: walk the adapter's block root depth-first and offer every module to the
   registered block types in lookup order (blocks/registry.py).  A type whose structure
   check passes makes the module a candidate; a type whose class-name pattern matches
   while its structure check fails marks the module *skipped*, with the reason (names add
   knowledge, structure decides).  Candidates are not descended into.
   Built-in types are described by their computation (blocks/described.py): a module matches
   when its traced dataflow computes the type's pattern, whatever its names and layout.
2. **Validate**: a candidate's gate-less conversion, run at full width on a small random
   input, must reproduce the module's own output (this proves the upstream forward is the
   residual the block type computes).  One
   representative per block *signature* is run and its verdict reused for the others
   (:func:`block_signature`).  A failure on a module whose class name marks it as a block
   raises before the model is touched; a module matched by structure alone whose forward
   computes something else is left as it is, with a warning.
3. **Apply**: each block is replaced in its parent by an AnySR block that adopts the
   original children (same attribute names, same ``Parameter`` objects); gates are
   created on the block's device and dtype; two hooks are installed (control.py).

With ``AnySRConfig(decoder="slim")`` the implicit decoder is planned, validated and
converted the same way (decoder.py), after the blocks.
"""
from __future__ import annotations

import collections
import logging
import sys
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

from .blocks import AnySRBlock, block_types
from .blocks.dataflow import COMPUTATION, Mismatch
from .blocks.described import DescribedBlock, analysis_scope, dataflow_of, signature_of
from .config import AnySRConfig, channels_at
from .control import AnySRState, ClearPlanHook, PlanHook, compiled_parts, unwrap
from .decoder import apply_decoder, plan_decoder
from .errors import (AlreadyAnySRError, AnySRError, AnySRWarning, CompiledModelError, ConfigError, NoBlocksError,
                     UnsupportedBlockError)
from .gate import describe_chunks
from .methods import detect_adapter, get_adapter
from .policy import policy_for
from .scale_source import ContextSource, dry_run, explicit_source, no_source_error, single_input, wrap_set_scale

#: a converted block must reproduce its original to this precision at conversion time
EQUIVALENCE_TOLERANCE = 1e-4


@dataclass
class Target:
    name: str          # dotted path from the model root
    upstream_type: str  # class name of the original block
    family: str        # the block type's registry name ("edsr", "rcab", "rdb", "rrdb", or a user type's)
    channels: int      # channels the gate sees (C, or the growth for dense blocks)
    lam: int
    width_channels: dict = field(default_factory=dict)  # width -> floor(C * w)
    validated_by: str = ""  # the module whose full-width check covers this one (same signature)
    pattern: str = ""  # the block type's pattern, e.g. "x + s*conv_b(act(conv_a(x)))"
    interweave: str = "interleave"
    computes: str = ""  # what this module computes, read from its forward

    @property
    def chunking(self) -> str:
        """How the gate interweaves the scale: the lambda and chunks actually used."""
        if self.interweave == "none":
            return "no gate"
        if self.interweave == "concat":
            return "scale pair concatenated once"
        return describe_chunks(self.channels, self.lam)


@dataclass
class Skipped:
    name: str
    upstream_type: str
    reason: str
    #: True: anysrify refuses the model (the module is a block it cannot convert);
    #: False: matched by structure alone but not this computation, left unconverted (warning)
    fatal: bool = True


@dataclass
class TargetReport:
    """What anysrify will replace (or replaced), what it skipped and why."""

    adapter: str
    block_root: str
    converted: bool
    targets: list
    skipped: list
    module_types: dict  # class name -> count, everything walked
    validations: int = 0  # full-width checks actually run (one per block signature)
    #: where the scale of a call comes from, e.g. "scale from forward argument `cell`"
    scale_source: str = ""
    #: the module that came closest to a block without converting: (stage, name, type, reason) or None
    near_miss: tuple | None = None

    def why_nothing(self) -> str:
        """Why nothing converts (when no target was found): see :func:`why_nothing_converts`."""
        return why_nothing_converts(self.module_types, self.near_miss)

    def summary(self) -> str:
        """One line: what was (or would be) converted and where the scale comes from."""
        verb = "converted" if self.converted else "would convert"
        kinds = collections.Counter(t.upstream_type for t in self.targets)
        what = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing"
        return (f"{verb} {len(self.targets)} block(s) ({what}) under {self.block_root or '<model>'!r}, adapter "
                f"{self.adapter!r}; {self.patterns()}; {self.scale_source}")

    def patterns(self) -> str:
        """Each matched pattern with its count, e.g. ``16 x edsr [x + s*conv(act(conv(x))), lambda=4 (chunk 16)]``."""
        groups = collections.Counter((t.family, t.pattern, t.chunking) for t in self.targets)
        return "patterns: " + ("; ".join(f"{n} x {family} [{pattern}, {chunking}]" if pattern else
                                         f"{n} x {family} [{chunking}]"
                                         for (family, pattern, chunking), n in groups.items()) or "none")

    def __str__(self) -> str:
        verb = "replaced" if self.converted else "would replace"
        lines = [f"adapter {self.adapter!r}, block root {self.block_root or '<model>'!r}: "
                 f"{verb} {len(self.targets)} block(s), skipped {len(self.skipped)}; {self.scale_source}"]
        for t in self.targets:
            widths = ", ".join(f"{w:g}:{n}" for w, n in t.width_channels.items())
            lines.append(f"  {verb:>13} {t.name:<32} {t.upstream_type:<10} {t.family:<5} "
                         f"C={t.channels:<4} {t.chunking}; channels per width {{{widths}}}; "
                         f"computes {t.computes or t.pattern}")
        for s in self.skipped:
            lines.append(f"  {'skipped':>13} {s.name:<32} {s.upstream_type:<10} {s.reason}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------
# block signatures: one full-width check per distinct block


def _config_key(config: AnySRConfig) -> str:
    return repr(sorted(config.to_dict().items()))


def block_signature(cls, module: nn.Module, config: AnySRConfig, config_key: str | None = None):
    """What decides the full-width check's verdict, or None when `module` must be checked alone:
    the block type and config plus the module's own signature (blocks/signature.py: same code
    on the same structure).  The check asks whether that code is the computation the block type
    implements; the weight *values* only flow through that computation, so its verdict carries
    over.  ``config_key``: ``_config_key(config)`` when the caller has it already.
    """
    sig = signature_of(module)
    if sig is None:
        return None
    return (cls, config_key if config_key is not None else _config_key(config)) + sig


# ---------------------------------------------------------------------------
# plan and validate


def _resolve(model: nn.Module, config, adapter):
    config = AnySRConfig() if config is None else config
    if isinstance(config, dict):
        config = AnySRConfig.from_dict(config)
    if not isinstance(config, AnySRConfig):
        raise ConfigError(f"config must be an AnySRConfig or a dict, got {type(config).__name__}")
    adapter = detect_adapter(model) if adapter is None else get_adapter(adapter)
    root = adapter.block_root(model)
    root_name = next((n for n, m in model.named_modules() if m is root), "")
    return config, adapter, root, root_name


class _Planner:
    """One walk of the block root: targets, skipped modules, and the verdict cache."""

    def __init__(self, config: AnySRConfig, policy):
        self.config = config
        self.policy = policy
        self.types = block_types()
        self.targets, self.skipped, self.entries = [], [], []
        self.verdicts: dict = {}  # signature -> (difference, representative name)
        self.validations = 0
        self.config_key = _config_key(config)
        #: the module that came closest to a block without converting: (stage, name, type, reason)
        self.near = None
        #: analyses of the walk (blocks/described.py), kept for building the blocks
        self.analyses: dict = {}

    def _difference(self, cls, module: nn.Module, name: str):
        sig = block_signature(cls, module, self.config, self.config_key)
        if sig is not None and sig in self.verdicts:
            return self.verdicts[sig]
        self.validations += 1
        try:
            diff = cls.full_width_difference(module, self.config)
        except Exception as exc:  # a forward that cannot run on a plain (B, C, H, W) input
            diff = f"its forward does not run on a (2, {cls.input_channels(module)}, 6, 6) input " \
                   f"({type(exc).__name__}: {exc})"
        if sig is not None:
            self.verdicts[sig] = (diff, name)
        return diff, name

    def _problem(self, cls, module: nn.Module, name: str):
        """``(problem, computes_otherwise, representative)``: problem is None if `cls` converts
        `module`; computes_otherwise is True when the full-width check failed (the module has
        the structure but not the computation), False for a setting that does not fit."""
        channels = cls.gated_channels(module)
        if channels_at(channels, self.config.widths[0]) < 1:
            return f"width {self.config.widths[0]} leaves no channel of {channels}", False, ""
        diff, rep = self._difference(cls, module, name)
        if isinstance(diff, str):
            return f"has the structure of a {cls.family!r} block but {diff}", True, rep
        if not diff <= EQUIVALENCE_TOLERANCE:
            same = f" (checked on {rep}, same block signature)" if rep != name else ""
            return (f"has the structure of a {cls.family!r} block but its forward differs from that "
                    f"type's x + body(x) by {diff:.3g}{same}"), True, rep
        return None, False, rep

    def offer(self, module: nn.Module, name: str, parent: nn.Module, attr: str) -> bool:
        """Match `module` against the block types; True when it must not be descended into."""
        named = None  # (cls, problem): a type whose name pattern matched but whose structure did not
        fits = []
        for base in self.types:
            cls = self.policy.block_type(base.variant_for(self.config))
            try:
                problem = cls.structure_problem(module)
            except Exception as exc:  # a structure check must not break the walk on odd modules
                problem = f"{cls.__name__}.structure_problem raised {type(exc).__name__}: {exc}"
            if problem is None:
                fits.append(cls)
            elif named is None and base.name_matches(module):
                named = (cls, problem)
        upstream = type(module).__name__
        if not fits:
            if named is not None:
                self.skipped.append(Skipped(name, upstream, named[1]))
                return True
            flow = dataflow_of(module)
            if isinstance(flow, Mismatch):
                self._near_miss(flow, name, upstream)
                if flow.shape is not None and flow.stage >= COMPUTATION:  # block-shaped: say why it is left
                    self.skipped.append(Skipped(name, upstream, flow.reason + "; not converted (its class name "
                                                "does not mark it as a block)", False))
            return False
        first = None
        for cls in fits:
            problem, computes_otherwise, rep = self._problem(cls, module, name)
            if problem is None:
                channels = cls.gated_channels(module)
                self.targets.append(Target(name, upstream, cls.family, channels, self.config.lam_for(cls),
                                           {w: channels_at(channels, w) for w in self.config.widths}, rep,
                                           pattern_of(cls), self.config.interweave,
                                           computes(module) if issubclass(cls, DescribedBlock) else ""))
                self.entries.append((cls, module, parent, attr))
                return True
            first = first or (problem, computes_otherwise)
            self._near_miss(Mismatch(COMPUTATION + 1, problem), name, upstream)
        # refuse a named block, or a setting that does not fit; leave a look-alike that computes otherwise
        by_name = named is not None or any(cls.name_matches(module) for cls in fits)
        reason, fatal = first[0], by_name or not first[1]
        if not fatal:
            reason += "; not converted (its class name does not mark it as a block)"
        self.skipped.append(Skipped(name, upstream, reason, fatal))
        return fatal

    def _near_miss(self, flow: Mismatch, name: str, upstream: str) -> None:
        if flow.stage >= 1 and (self.near is None or flow.stage > self.near[0]):
            self.near = (flow.stage, name, upstream, flow.reason)

    def walk(self, root: nn.Module, root_name: str):
        counts = collections.Counter()
        stack = [(root_name, root, None, None)]
        while stack:
            name, module, parent, attr = stack.pop()
            counts[type(module).__name__] += 1
            if isinstance(module, AnySRBlock):
                continue
            if parent is not None and self.offer(module, name, parent, attr):
                continue
            for child_attr, child in reversed(list(module._modules.items())):
                if child is not None:
                    stack.append((f"{name}.{child_attr}" if name else child_attr, child, module, child_attr))
        return dict(counts)


def _plan(config: AnySRConfig, root: nn.Module, root_name: str) -> "tuple[_Planner, dict]":
    planner = _Planner(config, policy_for(config.compat))
    with analysis_scope(planner.analyses):
        types = planner.walk(root, root_name)
    return planner, types


def pattern_of(cls) -> str:
    """The computation a block type converts, in words (its ``pattern``, else its docstring's first line)."""
    pattern = getattr(cls, "pattern", "")
    if pattern:
        return pattern
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def computes(module: nn.Module) -> str:
    """What `module` (an upstream block or a converted one) computes, read from its forward."""
    flow = module.flow if isinstance(module, DescribedBlock) else dataflow_of(module)
    return "" if isinstance(flow, Mismatch) else flow.describe()


#: module types that mark an attention / transformer encoder (knowledge for the refusal only)
ATTENTION_TYPES = (nn.MultiheadAttention, nn.LayerNorm, nn.Softmax)
ATTENTION_NAMES = ("transformer", "swin")


def why_nothing_converts(types: dict, near=None) -> str:
    """Why nothing converts, for a refusal: an encoder of attention blocks is told AnySR does not
    convert those; otherwise the closest near-miss ``(stage, name, type, reason)`` and the way on."""
    attention = [k for k in types if k in {t.__name__ for t in ATTENTION_TYPES}
                 or any(w in k.lower() for w in ATTENTION_NAMES)]
    if attention:
        return (f"This encoder is built of attention blocks ({', '.join(attention)}): AnySR slims convolutional "
                "residual blocks and does not convert attention or transformer blocks; use an encoder with residual "
                "conv blocks (EDSR, RDN, RCAN, RRDB, ...)")
    closest = f"Closest: {near[1]} ({near[2]}) {near[3]}. " if near is not None else ""
    return closest + ("AnySR converts residual conv blocks by what they compute (the patterns are listed in "
                      "docs/block-types.md); for a block the patterns cannot express, register a block type "
                      "(anysr_plugin.register_block_type)")


def _no_blocks_message(root_label: str, adapter, types: dict, planner, left: list) -> str:
    seen = ", ".join(f"{k} x{v}" for k, v in sorted(types.items(), key=lambda kv: -kv[1]))
    also = "".join(f"; {s.name} ({s.upstream_type}) {s.reason}" for s in left)
    return (f"no convertible block under {root_label!r} (adapter {adapter.name!r}; block types: "
            f"{', '.join(t.family for t in block_types())}); module types seen: {seen}{also}. "
            + why_nothing_converts(types, planner.near))


def resolve_scale_source(model: nn.Module, adapter, scale_from=None):
    """Where the scale of `model`'s calls comes from, or None when nothing says.

    In order: the user's ``scale_from`` ("context", a callable or a ScaleSource); the
    adapter's (structure first: ``cell`` / ``scale`` arguments, ``set_scale``; method
    adapters may add knowledge); a single-input network (an encoder ``forward(x)``, the
    documented default) takes its scale from context (``use_scale`` / ``use_width``)."""
    if scale_from is not None:
        return explicit_source(scale_from)
    source = adapter.scale_source(model)
    if source is not None:
        return source
    if single_input(model):
        return ContextSource("a single-input network (an encoder) carries no scale in its call")
    return None


def inspect_targets(model: nn.Module, config: AnySRConfig | dict | None = None, adapter=None,
                    scale_from=None) -> TargetReport:
    """Report which blocks anysrify replaces (or replaced) and which it skips, and why,
    and where the scale of a call comes from."""
    wrapped, model = model, unwrap(model)
    state = getattr(model, "_anysr_state", None)
    if state is None:
        _refuse_compiled(wrapped)
    if state is not None:
        config, adapter = state.config, state.adapter_name
    config, adapter, root, root_name = _resolve(model, config, adapter)
    planner, types = _plan(config, root, root_name)
    targets = planner.targets
    if state is not None:
        for name, module in model.named_modules():
            if isinstance(module, AnySRBlock):
                described = isinstance(module, DescribedBlock)
                targets.append(Target(name, module.upstream_type, module.family, module.channels, module.lam,
                                      {w: channels_at(module.channels, w) for w in config.widths}, "",
                                      pattern_of(type(module)), config.interweave,
                                      computes(module) if described else ""))
        where = state.describe_scale_source()
    else:
        source = resolve_scale_source(model, adapter, scale_from if scale_from is not None else config.scale_from)
        where = source.describe() if source is not None else (
            "no scale source found: anysrify raises NoScaleSourceError unless given scale_from=")
    return TargetReport(adapter.name, root_name, state is not None, targets, planner.skipped, types,
                        planner.validations, where, planner.near)


def _refuse_compiled(model: nn.Module) -> None:
    parts = compiled_parts(model)
    if parts:
        where = "; ".join(f"{name or '<model>'} is {kind}" for name, kind in parts[:3])
        raise CompiledModelError(
            f"anysrify converts the eager model, but {where}: call anysrify on the plain model first, then "
            "script, trace or compile the converted model (model = anysrify(model); model = torch.compile(model))")


def anysrify(model: nn.Module, config: AnySRConfig | dict | None = None, adapter=None, scale_from=None,
             verbose: bool = False, example_inputs=None) -> nn.Module:
    """Convert `model` in place into an AnySR model and return the same object.

    ``config``: an :class:`AnySRConfig` (or its dict); None = paper defaults.
    ``adapter``: None to detect ("liif", "srno", ...; generic when none matches), a
    name, or a MethodAdapter.  ``scale_from``: where the scale of a call comes from when
    the model's structure does not say (see :func:`resolve_scale_source`): ``"context"``
    (the full network unless told by ``use_scale`` / ``use_width``), a callable
    ``fn(module, args, kwargs) -> (B, 2) scale or None``, or a ScaleSource; None: the config's
    ``scale_from`` ("context" / "module:function"), else the structure.
    ``example_inputs``: one call of the model, its positional arguments (a tuple) or
    ``(args, kwargs)``: the scale source reads it before any module is replaced (the model is
    not run), so a source that cannot read the model's calls fails here, model untouched.
    One info line (what was converted, where the scale comes from) goes to the
    ``anysr_plugin`` logger, and to stderr with ``verbose=True``.

    Raises ``NoBlocksError`` when nothing is convertible, ``UnsupportedBlockError`` when a
    block-like module cannot be converted, ``NoScaleSourceError`` when no scale source is
    found and ``ScaleSourceError`` when it cannot read the example call (nothing is changed
    then either), ``AlreadyAnySRError`` on a second call, ``CompiledModelError`` for a TorchScript
    or torch.compile'd model (convert first, then script or compile).  Modules that
    have a block type's structure but compute something else are left unconverted, with an
    ``AnySRWarning``.
    """
    if isinstance(model, nn.parallel.DistributedDataParallel):
        raise AnySRError("anysrify the model before wrapping it in DistributedDataParallel "
                         "(DDP registers its parameters at construction)")
    target_model = unwrap(model)
    if getattr(target_model, "_anysr_state", None) is not None or any(
            isinstance(m, AnySRBlock) for m in target_model.modules()):
        raise AlreadyAnySRError(f"{type(target_model).__name__} already holds AnySR blocks; "
                                "anysrify converts a model once")
    _refuse_compiled(model)
    config, adapter, root, root_name = _resolve(target_model, config, adapter)
    planner, types = _plan(config, root, root_name)
    fatal = [s for s in planner.skipped if s.fatal]
    if fatal:
        details = "\n".join(f"  {s.name} ({s.upstream_type}): {s.reason}" for s in fatal)
        raise UnsupportedBlockError(f"{len(fatal)} block-like module(s) cannot be converted; the model "
                                    f"was not changed:\n{details}")
    left = [s for s in planner.skipped if not s.fatal]
    if not planner.entries:
        raise NoBlocksError(_no_blocks_message(root_name or type(root).__name__, adapter, types, planner, left))
    source = resolve_scale_source(target_model, adapter, scale_from if scale_from is not None else config.scale_from)
    if source is None:
        raise no_source_error(target_model)
    checked = ""
    if example_inputs is not None:  # dry run: the source reads the example call before anything changes

        scale = dry_run(source, target_model, example_inputs)
        checked = ("; the example call was not read (the scale comes from "
                   f"{'set_scale(...)' if source.kind == 'set_scale' else 'context'})" if scale is None else f"; checked on the example call: {scale.shape[0]} scale(s), "
                   f"x{float(scale.min()):.4g} to x{float(scale.max()):.4g}")
    if left:
        warnings.warn("AnySR left these modules unconverted: " + "; ".join(
            f"{s.name} ({s.upstream_type}) {s.reason}" for s in left), AnySRWarning, stacklevel=2)

    decoder_plan = None
    if config.decoder == "slim":  # beyond the paper, opt-in: validated before anything changes
        decoder_plan = plan_decoder(target_model, config, adapter)

    state = AnySRState(config, adapter.name, root_name, source, planner.policy)
    built = []
    # gate init from config.seed when given (identical on every DDP rank), the caller's RNG untouched
    with torch.random.fork_rng(devices=[], enabled=config.seed is not None), analysis_scope(planner.analyses):
        if config.seed is not None:
            torch.manual_seed(config.seed)
        for cls, module, parent, attr in planner.entries:
            built.append((parent, attr, cls(module, config, state)))
    for parent, attr, new in built:  # apply: everything was validated above
        parent._modules[attr] = new
    target_model._anysr_state = state
    hooked = [target_model] if root is target_model else [target_model, root]
    for i, module in enumerate(hooked):
        module._anysr_state = state
        module.__dict__["_anysr_first_block"] = next(n for n, m in module.named_modules() if isinstance(m, AnySRBlock))
        module.register_forward_pre_hook(PlanHook(reads_call=(i == 0)), with_kwargs=True)
        module.register_forward_hook(ClearPlanHook(), always_call=True)
    if decoder_plan is not None:
        apply_decoder(target_model, decoder_plan, state)
    _prepare_source(target_model, source)
    report = TargetReport(adapter.name, root_name, True, planner.targets, [], types, planner.validations,
                          source.describe())
    line = f"anysrify: {type(target_model).__name__}: {report.summary()}{checked}"
    logging.getLogger("anysr_plugin").info(line)
    if verbose:
        print(f"anysr: {line}", file=sys.stderr, flush=True)
    return model


def _prepare_source(model: nn.Module, source) -> None:
    """Instance-level plumbing a scale source needs (set_scale records the pair it sets)."""
    contract = getattr(source, "contract", None) if getattr(source, "kind", "") == "set_scale" else None
    if contract is not None:
        wrap_set_scale(model, contract)


def is_anysr(model: nn.Module) -> bool:
    return getattr(unwrap(model), "_anysr_state", None) is not None


__all__ = ["anysrify", "inspect_targets", "resolve_scale_source", "is_anysr", "TargetReport", "Target", "Skipped", "block_signature",
           "EQUIVALENCE_TOLERANCE"]
