"""Block types given by a description of their computation, not by code per layout.

A :class:`DescribedBlock` subclass states which dataflow it converts (``describes(flow)``
on the :class:`~anysr_plugin.blocks.dataflow.Dataflow` of a module's traced forward), its
default lambda and where its gate sits.  Everything else is derived from the dataflow, the
same for every layout: the sliced and masked forwards and the static export run the block's
own graph with the sliced parts swapped in (program.py), and the cost is read off the
convolutions' roles.  So a new layout of a known computation needs no new code, and the
built-in types (``edsr``, ``rcab``, ``rdb``, ``rrdb``, ``residual``) are a few lines each.

The converted block adopts every child, parameter and buffer of the upstream block under its
own name (so keys and ``Parameter`` objects stay); its only new tensors are in ``anysr_gate``.
A block's analysis is computed once per block signature while anysrify plans
(:func:`analysis_scope`), and shared by deep copies.
"""
from __future__ import annotations

import contextlib
import contextvars
import copy

from torch import nn

from ..errors import UnsupportedBlockError
from ..gate import eager_no_grad
from .base import AnySRBlock, StaticBlock, channel_mask, static_activation, static_conv
from .dataflow import Dataflow, Mismatch, analyze, not_a_block, region_counts
from .program import MaskedRun, SlicedRun, column_masks, compiled, conv_spec, no_global_hooks, program
from .signature import module_signature

#: names an upstream block cannot use (the AnySR block's own attributes)
RESERVED = frozenset(("anysr_gate", "channels", "lam", "widths", "upstream_type", "family", "in_channels",
                      "gate_region", "flow", "training"))

_SCOPE: contextvars.ContextVar = contextvars.ContextVar("anysr_analyses", default=None)


@contextlib.contextmanager
def analysis_scope(cache: dict | None = None):
    """Within this scope a module's analysis is computed once per block signature (anysrify's
    planning and building; pass the same `cache` dict to reopen a scope); outside it every
    call analyses afresh (the module may have changed)."""
    token = _SCOPE.set({} if cache is None else cache)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def signature_of(module: nn.Module):
    """``module_signature(module)``, computed once per module inside :func:`analysis_scope`."""
    cache = _SCOPE.get()
    if cache is None:
        return module_signature(module)
    key = ("signature", id(module))
    if key not in cache:
        cache[key] = module_signature(module)
    return cache[key]


def dataflow_of(module: nn.Module):
    """The module's Dataflow or Mismatch (cached per block signature inside :func:`analysis_scope`)."""
    cache = _SCOPE.get()
    if cache is None:
        return analyze(module)
    key = ("id", id(module))
    if key not in cache:
        quick = not_a_block(module)
        sig = signature_of(module) if quick is None else None
        cache[key] = quick or (cache[sig] if sig is not None and sig in cache else analyze(module))
        if sig is not None:
            cache.setdefault(sig, cache[key])
    return cache[key]


class DescribedBlock(AnySRBlock):
    """Base of the block types described by their computation (see the module docstring).

    A subclass sets ``family``, ``default_lam``, ``pattern`` (the computation in words, for
    messages and docs) and optionally ``shape`` or ``describes(flow)``; by default it converts
    the dataflows whose family (``flow.shape``) is its ``shape`` (or ``family``).  ``static_class`` names its exported form.
    """

    pattern: str = ""
    #: the dataflow family this type converts (dataflow.py); defaults to ``family``, so a subclass
    #: registered under another name (other defaults) still describes the same computation
    shape: str = ""
    static_class: type = None  # set below / by subclasses

    # -- matching -------------------------------------------------------------
    @classmethod
    def describes(cls, flow: Dataflow):
        """None when this type converts `flow`, else why not."""
        if flow.shape == (cls.shape or cls.family):
            return None
        return f"computes {flow.describe()} (a {flow.shape!r} block), not {cls.pattern or cls.family}"

    @classmethod
    def structure_problem(cls, module: nn.Module):
        flow = dataflow_of(module)
        if isinstance(flow, Mismatch):
            return flow.reason
        clash = RESERVED & (set(module._modules) | set(module._parameters) | set(module._buffers))
        if clash:
            return f"its attribute(s) {', '.join(sorted(clash))} collide with the AnySR block's own"
        return cls.describes(flow)

    @classmethod
    def gate_region_of(cls, flow: Dataflow, config) -> int:
        """Which region carries the gate: the first one (the paper's first sub-block)."""
        return 0

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:
        flow = dataflow_of(module)
        return flow.regions[0]

    @classmethod
    def input_channels(cls, module: nn.Module) -> int:
        return dataflow_of(module).in_channels

    # -- construction ---------------------------------------------------------
    def __init__(self, block: nn.Module, config, state=None):
        flow = dataflow_of(block)
        if isinstance(flow, Mismatch):
            raise UnsupportedBlockError(f"{type(block).__name__}: {flow.reason}")
        self.__dict__["_flow"] = flow
        self.__dict__["gate_region"] = self.gate_region_of(flow, config)
        super().__init__(block, config, state)
        self.channels = flow.regions[self.gate_region]
        self.in_channels = flow.in_channels
        self.__dict__["_specs"] = {}
        self._build_program()
        self.upstream_type = type(block).__name__

    def _adopt(self, block: nn.Module) -> None:
        for name, child in block._modules.items():
            self._modules[name] = child
        for name, param in block._parameters.items():
            self._parameters[name] = param
        for name, buf in block._buffers.items():
            self._buffers[name] = buf
        self._non_persistent_buffers_set |= set(block._non_persistent_buffers_set)
        self.__dict__.update(self._flow.attributes)  # plain attributes its forward reads

    def _build_program(self) -> None:
        source = program(self._flow, "slim", self.gate_region)
        self.__dict__["_slim_source"] = source
        self.__dict__["_slim"] = compiled(source, f"{self.family} block")
        infer = program(self._flow, "infer", self.gate_region)
        self.__dict__["_infer_source"] = infer
        self.__dict__["_infer"] = compiled(infer, f"{self.family} block, no grad")

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_slim", None)
        state.pop("_infer", None)
        state["_specs"] = {}
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__["_slim"] = compiled(self.__dict__["_slim_source"], f"{self.family} block")
        infer = self.__dict__.get("_infer_source", self.__dict__["_slim_source"])  # pickles made before it
        self.__dict__["_infer"] = compiled(infer, f"{self.family} block, no grad")

    @property
    def flow(self) -> Dataflow:
        """The analysis this block runs (what it computes, which convolutions are sliced).  After
        unpickling it has no graph (pickles carry generated sources only); code that needs one
        (a static export at a new gate position) gets it by tracing the upstream module again."""
        flow = self._flow
        upstream = self.__dict__.get("_anysr_upstream")
        if flow.graph is None and upstream is not None:
            fresh = analyze(upstream)
            if isinstance(fresh, Dataflow):
                fresh.sources.update(flow.sources)
                flow = self.__dict__["_flow"] = fresh
        return flow

    def extra_repr(self) -> str:
        return super().extra_repr() + f", computes={self._flow.describe()!r}"

    # -- execution ------------------------------------------------------------
    def counts(self, n: int) -> list:
        """Channels kept in every region when the gated one keeps `n`."""
        return region_counts(self._flow.regions, self.gate_region, n)

    def _spec(self, n: int, device):
        key = (n, device)
        spec = self._specs.get(key)
        if spec is None:
            spec = self._specs[key] = conv_spec(self._flow, self.counts(n), device)
        return spec

    def forward_sliced(self, x, n, scale):
        spec = self._spec(n, x.device)
        if eager_no_grad():
            gate = self._modules.get("anysr_gate")
            native = gate._native_step(scale, n, x.shape[0]) if gate is not None and x.is_cpu else None
            return self._infer(self, x, SlicedRun(self, spec, scale, n, native, no_global_hooks()))
        return self._slim(self, x, SlicedRun(self, spec, scale, n))

    def forward_masked(self, x, ns, scale):
        per_sample = [self.counts(n) for n in ns]
        masks = column_masks(self._flow, per_sample, x.device, x.dtype)
        gated = [c[self.gate_region] for c in per_sample]
        run = MaskedRun(self, masks, scale, gated, channel_mask(gated, self.channels, x))
        return self._slim(self, x, run)

    # -- export ---------------------------------------------------------------
    def export_static(self, n, scale=None):
        return (self.static_class or StaticDescribedBlock)(self, n, scale)

    # -- cost -----------------------------------------------------------------
    def conv_macs_per_pixel(self, width: float) -> int:
        counts = self.counts(self.width_channels(width))
        macs = 0
        for role in self._flow.convs:
            cin = sum(length if region < 0 else counts[region] for region, length in role.segments)
            cout = role.out_channels if role.out_region is None else counts[role.out_region]
            kh, kw = role.kernel
            sh, sw = role.stride
            macs += cin * cout * kh * kw // (sh * sw)
        return macs

    def activations_per_pixel(self, width: float) -> int:
        counts = self.counts(self.width_channels(width))
        return sum(counts[region] for _, region, _, _ in self._flow.activations)


class StaticDescribedBlock(StaticBlock):
    """A described block at one width with physically sliced weights: the upstream graph on
    sliced copies of the upstream layers (same names), the gate as the submodule ``gate``."""

    def __init__(self, block: DescribedBlock, n: int, scale=None):
        super().__init__()
        flow = block.flow
        counts = block.counts(n)
        memo: dict = {}
        for name, child in block._modules.items():
            if name != "anysr_gate":
                self._modules[name] = copy.deepcopy(child, memo)
        for name, param in block._parameters.items():
            self._parameters[name] = None if param is None else nn.Parameter(param.detach().clone(),
                                                                            param.requires_grad)
        for name, buf in block._buffers.items():
            self._buffers[name] = None if buf is None else buf.detach().clone()
        self.__dict__.update(copy.deepcopy(flow.attributes))
        for (out, inp), role in zip(conv_spec(flow, counts, "cpu"), flow.convs):
            if out is not None or inp is not None:
                self._replace(role.target, static_conv(block.get_submodule(role.target), out, inp))
        for _, region, target, sliced in flow.activations:
            if sliced == "module":
                self._replace(target, static_activation(block.get_submodule(target), counts[region]))
            elif sliced == "weight":  # a functional prelu's own weight: its first slopes
                parent_name, _, attr = target.rpartition(".")
                parent = self.get_submodule(parent_name) if parent_name else self
                weight = getattr(parent, attr).detach()[: counts[region]].clone()
                if attr in parent._parameters:
                    parent._parameters[attr] = nn.Parameter(weight, parent._parameters[attr].requires_grad)
                else:
                    parent._buffers[attr] = weight
        gate = block.static_gate(n, scale)
        gate_name = None
        if gate is not None:
            gate_name = "gate" if "gate" not in self._modules else "static_gate"
            self._modules[gate_name] = gate
        self.gate_name = gate_name
        self.__dict__["_source"] = program(flow, "static", block.gate_region, gate_name)
        self.__dict__["_forward"] = compiled(self._source, f"static {block.family} block")

    def _replace(self, target: str, module: nn.Module) -> None:
        parent_name, _, attr = target.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        parent._modules[attr] = module

    def __getstate__(self):
        state = self.__dict__.copy()
        state.pop("_forward", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__["_forward"] = compiled(self._source, "static block")

    def forward(self, x):
        return self._forward(self, x)


__all__ = ["DescribedBlock", "StaticDescribedBlock", "dataflow_of", "signature_of", "analysis_scope", "RESERVED"]
