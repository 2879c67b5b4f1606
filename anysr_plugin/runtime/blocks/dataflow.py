"""What a block computes, read from its traced forward: the dataflow that AnySR slims.

Why: research code writes the same residual block in many layouts (``body = [conv, act,
conv]``, ``conv1`` / ``relu`` / ``conv2`` attributes, convolutions in a ModuleList, functional
activations, ``x + out * s`` or ``out.mul(s).add(x)``, dense layers under any name).  What
does not change is the computation.  So a candidate module's ``forward`` is traced with
``torch.fx`` (submodules of ``torch.nn`` stay leaves, everything else is inlined) and its
dataflow is parsed into the few terms AnySR needs; attribute names, containers and the way
the residual is written never decide.

Terms (see docs/block-types.md for the patterns built from them):

* **body convolution**: a ``Conv2d`` applied to feature maps (convolutions on a globally
  pooled vector belong to a channel attention);
* **region**: the output channels of a body convolution that only other body convolutions
  read, through channel-wise operations (activations, scalar arithmetic) and channel
  concatenations.  These channels are internal to the block, so a sub-network may keep only
  the first ``floor(C * w)`` of them (the paper's first sub-block); everything else keeps its
  full width, so blocks compose at any per-block width;
* **layout** of a body convolution's input: which of its input channels come from the block's
  input or a restored map (kept whole) and which from which region (the first ``n`` kept);
* **unit**: a residual unit ``u + s * T(u)``: ``T`` is a chain of convolutions (``conv_b(act(
  conv_a(u)))``) or a dense block (growth layers reading concatenations, one fusion
  convolution), optionally followed by a channel attention ``t * A(t)`` (``A`` starts with a
  global pooling of ``t``); ``s`` is any product of scalars (numbers, 0-d buffers or
  parameters);
* **chain**: units in sequence inside one outer residual (ESRGAN's RRDB).

:func:`analyze` returns a :class:`Dataflow` (every node of the forward explained) or a
:class:`Mismatch` naming the stage it reached and what did not fit, so a refusal can say what
the closest near-miss lacked.  Executing a dataflow at a width is ``program.py``'s job.
"""
from __future__ import annotations

import contextlib
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

#: a module with more convolutions than this is a network, not a block: not traced
MAX_BLOCK_CONVS = 128

#: stages a candidate reaches (a Mismatch's ``stage``; higher = closer to a block)
TRACED, STRUCTURE, COMPUTATION = 1, 2, 3

ACTIVATION_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                      nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus,
                      nn.Identity, nn.Dropout, nn.Dropout2d)
#: methods that read only the shape of their second tensor (``y.expand_as(t)``)
SHAPE_OF_SECOND = frozenset(("expand_as", "view_as", "reshape_as", "type_as"))
ACTIVATION_FUNCTIONS = frozenset((F.relu, F.relu_, torch.relu, torch.relu_, F.leaky_relu, F.leaky_relu_, F.gelu,
                                  F.silu, F.elu, F.selu, F.celu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh,
                                  F.relu6, torch.sigmoid, torch.tanh, F.softplus, torch.clamp, F.sigmoid,
                                  F.tanh))
ACTIVATION_METHODS = frozenset(("relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_",
                                "clamp_min", "clamp_min_", "contiguous"))
NORM_MODULES = (nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)
ARITH_FUNCTIONS = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.truediv: "div",
                   operator.iadd: "add", operator.isub: "sub", operator.imul: "mul", operator.itruediv: "div",
                   torch.add: "add", torch.sub: "sub", torch.mul: "mul", torch.div: "div"}
ARITH_METHODS = {"add": "add", "add_": "add", "sub": "sub", "sub_": "sub", "mul": "mul", "mul_": "mul",
                 "div": "div", "div_": "div", "__add__": "add", "__radd__": "add", "__mul__": "mul",
                 "__rmul__": "mul", "__truediv__": "div"}
CAT_FUNCTIONS = frozenset((torch.cat, torch.concat, torch.concatenate))
PRELU_FUNCTIONS = frozenset((F.prelu, torch.prelu))
META_METHODS = frozenset(("size", "dim", "numel", "ndimension"))
META_ATTRIBUTES = frozenset(("shape", "dtype", "device", "ndim"))
INPLACE_FUNCTIONS = frozenset((F.relu_, torch.relu_, F.leaky_relu_, operator.iadd, operator.isub, operator.imul,
                               operator.itruediv))


# ---------------------------------------------------------------------------
# results


@dataclass
class Mismatch:
    """Why a module is not a block AnySR slims.  ``shape``: the block family its channel
    structure resembles (``"edsr"``, ``"rcab"``, ``"rdb"``, ``"rrdb"``) or None."""

    stage: int
    reason: str
    shape: str | None = None


@dataclass
class ConvRole:
    """One body convolution: where its input channels come from, whether its output is a region."""

    node: str                 # fx node name (unique in the graph)
    target: str               # qualified submodule name, e.g. "body.0", "RDB1.conv3"
    out_region: int | None    # region index its output forms, None for a full-width output
    segments: tuple           # input layout: ((region or -1, length), ...)
    in_channels: int
    out_channels: int
    kernel: tuple
    stride: tuple
    unit: int                 # index of the residual unit it belongs to


@dataclass
class Unit:
    """One residual unit ``u + s * T(u)``; ``kind``: "chain" (convolutions in sequence) or "dense"."""

    kind: str
    regions: list             # region indices, in order
    convs: list               # indices into Dataflow.convs, in order
    attention: bool = False
    scales: list = field(default_factory=list)


@dataclass
class Dataflow:
    """A block whose forward AnySR explains completely (see the module docstring)."""

    graph: fx.Graph
    input_name: str
    in_channels: int
    convs: list               # ConvRole, in execution order
    regions: list             # channels of each region, in order
    units: list               # Unit, in order (several: a chain)
    attention: bool           # a channel attention on the outer branch
    scales: list              # scalars multiplying the outer branch (float or attribute name)
    #: activations on region channels: (node name, region, target, what is sliced with the channels:
    #: None, "module" (a per-channel PReLU module) or "weight" (the weight of a functional prelu))
    activations: list
    shape: str                # "edsr" | "rcab" | "rdb" | "rrdb" | "residual"
    #: plain attributes the forward reads (not parameters, buffers or submodules): name -> value
    attributes: dict = field(default_factory=dict, repr=False, compare=False)
    #: generated programs, key -> (source, globals); see program.py
    sources: dict = field(default_factory=dict, repr=False, compare=False)

    def __deepcopy__(self, memo):  # an analysis is immutable: deep copies of a block share it
        return self

    def __getstate__(self):  # the fx graph stays out of pickles; the generated sources travel
        state = dict(self.__dict__)
        state["graph"] = None
        return state

    @property
    def chain(self) -> bool:
        return len(self.units) > 1

    def producer(self, region: int) -> ConvRole:
        return next(c for c in self.convs if c.out_region == region)

    def describe(self) -> str:
        """The computation in words, e.g. ``x + s*conv(act(conv(x)))``."""
        if self.chain:
            texts = [_unit_text(u, "u") for u in self.units]
            inner = f"{len(texts)} x {texts[0]}" if len(set(texts)) == 1 else " -> ".join(texts)
            return f"x + s*chain({inner}, each u + s*dense(u))"
        unit = self.units[0]
        body = _unit_text(unit, "x")
        if self.attention:
            body = f"CA({body})"
        return f"x + {'s*' if self.scales else ''}{body}"


def _unit_text(unit: Unit, arg: str) -> str:
    if unit.kind == "dense":
        return f"dense[{len(unit.regions)} growth layers + fusion]" + ("" if arg == "u" else f"({arg})")
    text = arg
    for _ in range(len(unit.convs) - 1):
        text = f"act(conv({text}))"
    return f"conv({text})"


# ---------------------------------------------------------------------------
# tracing


def count_convs(module: nn.Module) -> int:
    return sum(1 for m in module.modules() if isinstance(m, nn.Conv2d))


def _trace(module: nn.Module):
    """(GraphModule, None) or (None, why not)."""
    try:
        import inspect

        sig = inspect.signature(module.forward)
        params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        concrete = {p.name: p.default for p in params[1:] if p.default is not p.empty}
        required = [p.name for p in params if p.default is p.empty]
    except (TypeError, ValueError):
        concrete, required = {}, ["x"]
    if len(required) > 1:
        return None, f"its forward takes {len(required)} inputs ({', '.join(required)})"
    try:
        tracer = fx.Tracer()  # torch.nn modules stay leaves, user modules are inlined
        graph = tracer.trace(module, concrete_args=concrete or None)
        return fx.GraphModule(tracer.root, graph, type(module).__name__), None
    except Exception as exc:  # data-dependent control flow, untraceable calls
        text = " ".join(str(exc).split())
        return None, f"its forward cannot be traced ({type(exc).__name__}: {text[:160]})"


@contextlib.contextmanager
def buffers_kept(module: nn.Module):
    """Run `module` for analysis or checks without changing it: its buffers (batch-norm
    statistics, spectral-norm vectors, counters) are restored afterwards."""
    saved = [(b, b.detach().clone()) for b in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def _first_conv_channels(module: nn.Module):
    conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    return None if conv is None else conv.in_channels


# ---------------------------------------------------------------------------
# the resolved graph: in-place operations folded, every node classified


class _Graph:
    """The traced graph as values: in-place ops become the new value of the tensor they
    change, and each node gets a kind ("input", "conv", "gconv", "act", "norm", "arith",
    "cat", "pool", "attr", "meta" (shapes and numbers derived from them), "other")."""

    def __init__(self, gm: fx.GraphModule):
        self.gm = gm
        self.root = gm
        self.args = {}      # node -> resolved positional args
        self.kwargs = {}    # node -> resolved keyword args
        self.kind = {}
        self.users = {}
        current = {}
        resolve = lambda a: fx.node.map_arg(a, lambda n: current.get(n, n))  # noqa: E731
        nodes = [n for n in gm.graph.nodes]
        self.input = next((n for n in nodes if n.op == "placeholder"), None)
        for node in nodes:
            args, kwargs = resolve(node.args), resolve(node.kwargs)
            self.args[node], self.kwargs[node] = args, kwargs
            if node.op == "output":
                self.output = args[0]
                continue
            self.kind[node] = self._classify(node, args, kwargs)
            for dep in _tensor_args(args, kwargs):
                self.users.setdefault(dep, []).append(node)
            if self._inplace(node) and node.args and isinstance(node.args[0], fx.Node):
                current[node.args[0]] = node  # the variable now holds the changed tensor
                if args and isinstance(args[0], fx.Node):
                    current[args[0]] = node
        self.order = {n: i for i, n in enumerate(nodes)}
        self.shapes = {}

    # -- classification -------------------------------------------------------
    def module(self, node):
        return self.gm.get_submodule(node.target) if node.op == "call_module" else None

    def attr(self, node):
        obj = self.gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        return obj

    def _inplace(self, node) -> bool:
        if node.op == "call_method":
            return node.target.endswith("_") and not node.target.endswith("__")
        if node.op == "call_function":
            return node.target in INPLACE_FUNCTIONS or node.kwargs.get("inplace") is True
        if node.op == "call_module":
            return getattr(self.module(node), "inplace", False) is True
        return False

    def _classify(self, node, args, kwargs) -> str:
        op, target = node.op, node.target
        if op == "placeholder":
            return "input"
        if op == "get_attr":
            return "attr"
        if op == "call_module":
            m = self.module(node)
            if isinstance(m, nn.Conv2d) and type(m).forward is nn.Conv2d.forward:
                return "conv" if m.groups == 1 else "gconv"
            if isinstance(m, ACTIVATION_MODULES):
                return "act"
            if isinstance(m, NORM_MODULES):
                return "norm"
            if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and _is_one(m.output_size):
                return "pool"
            return "other"
        if op == "call_function":
            if self._meta_args(args, kwargs) and target in (operator.getitem, *ARITH_FUNCTIONS, operator.floordiv):
                return "meta"
            if target is getattr and len(args) == 2 and args[1] in META_ATTRIBUTES:
                return "meta"
            if target in ACTIVATION_FUNCTIONS:
                return "act"
            if target in PRELU_FUNCTIONS and len(args) == 2 and isinstance(args[1], fx.Node) \
                    and self.kind.get(args[1]) == "attr":
                return "act"
            if target in ARITH_FUNCTIONS:
                return "arith" if kwargs.get("alpha", 1) == 1 else "other"
            if target in CAT_FUNCTIONS:
                dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
                return "cat" if dim in (1, -3) else "other"
            if target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d) and _is_one(
                    args[1] if len(args) > 1 else kwargs.get("output_size")):
                return "pool"
            if target in (torch.mean, torch.amax) and _spatial_dims(args[1:], kwargs):
                return "pool"
            if target is F.batch_norm or target is F.instance_norm or target is F.group_norm:
                return "norm"
            return "other"
        if op == "call_method":
            if target in META_METHODS:
                return "meta"
            if target in ACTIVATION_METHODS:
                return "act"
            if target in ARITH_METHODS:
                return "arith" if kwargs.get("alpha", 1) == 1 else "other"
            if target in ("mean", "amax") and _spatial_dims(args[1:], kwargs):
                return "pool"
            return "other"
        return "other"

    def _meta_args(self, args, kwargs) -> bool:
        """True when every graph value among the args is a shape or a number derived from one."""
        nodes = _tensor_args(args, kwargs)
        return bool(nodes) and all(self.kind.get(n) == "meta" for n in nodes)

    # -- helpers --------------------------------------------------------------
    def tensor_inputs(self, node) -> list:
        """Resolved graph nodes `node` reads that are maps or vectors (not attributes, not shapes)."""
        return [a for a in _tensor_args(self.args[node], self.kwargs[node]) if self.kind.get(a) not in ("attr", "meta")]

    def attr_inputs(self, node) -> list:
        """Attribute tensors `node` reads that are not scalars (e.g. a PReLU weight)."""
        return [a for a in _tensor_args(self.args[node], self.kwargs[node])
                if self.kind.get(a) == "attr" and not self.is_scalar(a)]

    def is_scalar(self, value) -> bool:
        """A number, a shape-derived number, or a 0-d / one-element attribute (a buffer or a learned scalar)."""
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return True
        if isinstance(value, fx.Node) and self.kind.get(value) == "meta":
            return True
        if isinstance(value, fx.Node) and self.kind.get(value) == "attr":
            obj = self.attr(value)
            return isinstance(obj, torch.Tensor) and obj.numel() == 1
        return False

    def is_prelu_function(self, node) -> bool:
        return node.op == "call_function" and node.target in PRELU_FUNCTIONS

    def scalar_term(self, value):
        return value.target if isinstance(value, fx.Node) else float(value)

    def channels(self, node) -> int | None:
        shape = self.shapes.get(node)
        return shape[1] if shape is not None and len(shape) == 4 else None

    def describe(self, node) -> str:
        if not isinstance(node, fx.Node):
            return repr(node)
        if node.op == "call_module":
            return f"{node.target} ({type(self.module(node)).__name__})"
        if node.op == "placeholder":
            return "the block input"
        target = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", str(node.target))
        return f"{target}()"

    def spatial(self) -> dict:
        """node -> False for values derived from a global pooling (vectors), True for maps."""
        out = {}
        for node in self.order:
            if node.op == "output":
                continue
            kind = self.kind[node]
            inputs = self.tensor_inputs(node)
            if kind == "pool":
                out[node] = False
            elif kind in ("input",):
                out[node] = True
            elif kind in ("attr", "meta"):
                out[node] = False
            elif node.op == "call_method" and node.target in SHAPE_OF_SECOND:
                out[node] = out.get(self.args[node][0], False)  # y.expand_as(t) is y, shaped like t
            else:
                out[node] = any(out.get(a, False) for a in inputs) if inputs else False
        return out


def _is_one(size) -> bool:
    return size == 1 or (isinstance(size, (tuple, list)) and all(s == 1 for s in size))


def _spatial_dims(args, kwargs) -> bool:
    """A reduction over both spatial dimensions (a global pooling), with or without keepdim."""
    dim = kwargs.get("dim", args[0] if args else None)
    if not isinstance(dim, (tuple, list)):
        return False
    return sorted(d % 4 for d in dim) == [2, 3]


def _tensor_args(args, kwargs) -> list:
    found = []
    fx.node.map_arg((args, kwargs), lambda n: found.append(n))
    seen, out = set(), []
    for n in found:
        if n not in seen:
            seen.add(n)
            out.append(n)
    return out


# ---------------------------------------------------------------------------
# stage A: the channel structure (which convolution outputs are internal)


class _Structure:
    """Body convolutions, regions, layouts and the problems met on the way."""

    def __init__(self, g: _Graph):
        self.g = g
        spatial = g.spatial()
        self.spatial = spatial
        self.body = [n for n in g.order if g.kind.get(n) in ("conv", "gconv") and spatial.get(n)]
        self.problems = []
        self.internal = {c: self._internal(c) for c in self.body}
        self.regions = [c for c in self.body if self.internal[c]]
        self.region_of = {c: i for i, c in enumerate(self.regions)}
        for c in self.body:
            m = g.module(c)
            if g.kind[c] == "gconv":
                self.problems.append(f"{c.target} has groups={m.groups}; only groups=1 can be sliced")
            elif m._forward_pre_hooks_with_kwargs or m._forward_hooks_with_kwargs:
                self.problems.append(f"{c.target} has forward hooks that take keyword arguments; a sliced call "
                                     "cannot run them as the convolution's own call would")

    PASS = ("act",)

    def passes(self, node) -> bool:
        """A channel-wise operation on one map (its channels map one to one): an activation (a
        functional PReLU with its weight) or arithmetic with scalars.  Norms are not: their
        statistics would differ between sub-networks and between per-width groups of a batch."""
        g = self.g
        kind = g.kind.get(node)
        if kind not in self.PASS and kind != "arith" or len(g.tensor_inputs(node)) != 1:
            return False
        return len(g.attr_inputs(node)) == (1 if g.is_prelu_function(node) else 0)

    def _internal(self, conv) -> bool:
        """True when every use of `conv`'s output is a body convolution, through channel-wise
        operations and concatenations (its channels never reach the block's output)."""
        g, stack, seen, problems = self.g, [conv], set(), []
        while stack:
            value = stack.pop()
            if value is g.output or (isinstance(g.output, (tuple, list)) and value in g.output):
                return False
            users = g.users.get(value, [])
            if not users:
                return False
            for user in users:
                if user in seen:
                    continue
                seen.add(user)
                kind = g.kind.get(user)
                if kind in ("conv", "gconv") and self.spatial.get(user):
                    continue
                if kind == "norm" and len(g.tensor_inputs(user)) == 1:
                    problems.append(f"{g.describe(user)} sits between the convolutions (batch norm is not "
                                    "supported there: its statistics would mix sub-networks)")
                    stack.append(user)
                elif self.passes(user) or kind == "cat":
                    stack.append(user)
                else:
                    return False
        self.problems.extend(problems)
        return True

    def layout(self, value) -> list:
        """[(region or -1, channels), ...] of a map a body convolution reads."""
        g = self.g
        if value in self.region_of:
            return [(self.region_of[value], g.channels(value))]
        if g.kind.get(value) == "cat":
            parts = g.args[value][0] if g.args[value] else g.kwargs[value]["tensors"]
            out = []
            for p in parts:
                out.extend(self.layout(p))
            return out
        if self.passes(value):
            return self.layout(g.tensor_inputs(value)[0])
        return [(-1, g.channels(value))]

    def shape(self) -> str | None:
        """The block family this channel structure resembles, or None (not block-sized)."""
        g = self.g
        if not self.regions:
            return None
        restore = [c for c in self.body if not self.internal[c]]
        dense = [c for c in restore + self.regions if len(_merge(self.layout(g.args[c][0]))) > 1]
        if len(restore) == 1:
            if dense:
                return "rdb"
            return "rcab" if any(k == "pool" for k in g.kind.values()) else "edsr"
        if dense and all(c in dense for c in restore):
            return "rrdb"
        return None


def _merge(segments) -> list:
    """Adjacent full-width segments as one."""
    out = []
    for region, length in segments:
        if out and region == -1 and out[-1][0] == -1:
            out[-1] = (-1, out[-1][1] + length)
        else:
            out.append((region, length))
    return out


# ---------------------------------------------------------------------------
# stage B: the residual computation


class _ParseError(Exception):
    pass


class _Parser:
    def __init__(self, g: _Graph, s: _Structure):
        self.g, self.s = g, s
        self.units: list = []
        self.assigned: set = set()
        self.attention = False
        self.scales: list = []

    def residual(self, value, u):
        """The branch of ``u + branch`` (any operand order, any add spelling), else None."""
        g = self.g
        if g.kind.get(value) != "arith" or self._arith(value) != "add":
            return None
        inputs = g.tensor_inputs(value)
        if len(inputs) != 2 or u not in inputs or inputs[0] is inputs[1]:
            return None
        return inputs[1] if inputs[0] is u else inputs[0]

    def _arith(self, node) -> str:
        target = node.target
        return ARITH_FUNCTIONS.get(target) if node.op == "call_function" else ARITH_METHODS.get(target)

    def peel_scales(self, value, scales: list):
        """Strip ``value * s``, ``s * value``, ``value / s`` (s a scalar) and record s."""
        g = self.g
        while g.kind.get(value) == "arith" and self._arith(value) in ("mul", "div"):
            args = list(g.args[value]) + list(g.kwargs[value].values())
            tensors = g.tensor_inputs(value)
            scalars = [a for a in args if g.is_scalar(a)]
            if len(tensors) != 1 or len(scalars) != 1:
                break
            if self._arith(value) == "div":
                if g.args[value][0] is not tensors[0]:
                    break
                term = scalars[0]
                scales.append(("div", g.scalar_term(term)))
            else:
                scales.append(("mul", g.scalar_term(scalars[0])))
            value = tensors[0]
        return value

    def attention_of(self, value):
        """(t, attention nodes) when `value` is ``t * A(t)`` with A starting at a global pool of t."""
        g, s = self.g, self.s
        if g.kind.get(value) != "arith" or self._arith(value) != "mul":
            return None
        inputs = g.tensor_inputs(value)
        if len(inputs) != 2:
            return None
        for t, a in (inputs, inputs[::-1]):
            if not s.spatial.get(t) or s.spatial.get(a):
                continue
            nodes, stack, ok = set(), [a], True
            while stack and ok:
                n = stack.pop()
                if n in nodes or n is t:
                    continue
                nodes.add(n)
                for dep in g.tensor_inputs(n):
                    if dep is t:
                        shape_only = n.op == "call_method" and n.target in SHAPE_OF_SECOND and g.args[n][0] is not t
                        ok = ok and (g.kind.get(n) == "pool" or shape_only)
                    elif s.spatial.get(dep):
                        ok = False
                    else:
                        stack.append(dep)
            if ok and nodes:
                return t, nodes
        return None

    def branch(self, value, u, top: bool):
        """Parse ``s * [CA](T(u))`` into units; raises _ParseError with the reason."""
        g, s = self.g, self.s
        scales: list = []
        value = self.peel_scales(value, scales)
        attention = self.attention_of(value)
        if attention is not None:
            value = self.peel_scales(attention[0], scales)
        if value in s.body and not s.internal[value]:
            self.unit(value, u, attention is not None, scales)
            return
        if top and attention is None:
            links = self.chain(value, u)
            if links:
                if any(unit.kind != "dense" for unit in self.units):
                    raise _ParseError("its branch is a chain of residual blocks; they are converted one by one")
                self.scales = scales
                return
        raise _ParseError(f"its residual branch ends in {g.describe(value)}, not in a convolution")

    def chain(self, value, u) -> int:
        """Parse ``D_m(...D_1(u))`` with each ``D_k(v) = v + s_k * T_k(v)``; returns m (0: not a chain)."""
        g = self.g
        links = []
        while value is not u:
            inputs = g.tensor_inputs(value) if g.kind.get(value) == "arith" and self._arith(value) == "add" else []
            if len(inputs) != 2:
                return 0
            prev, branch = inputs
            if not (prev is u or self._is_add(prev)) or (branch is u or self._is_add(branch)):
                prev, branch = branch, prev
            if not (prev is u or self._is_add(prev)):
                return 0
            links.append((prev, branch))
            value = prev
        for prev, branch in reversed(links):
            self.branch(branch, prev, top=False)
        return len(links)

    def _is_add(self, node) -> bool:
        return self.g.kind.get(node) == "arith" and self._arith(node) == "add" and len(self.g.tensor_inputs(node)) == 2

    def unit(self, restore, u, attention: bool, scales: list):
        """Collect the convolutions of one unit back from its restore convolution to `u`."""
        g, s = self.g, self.s
        convs, stack, seen, reached = [], [restore], set(), False
        while stack:
            node = stack.pop()
            if node is u:
                reached = True
                continue
            if node in seen:
                continue
            seen.add(node)
            if node in s.body:
                if node is not restore and not s.internal[node]:
                    raise _ParseError(f"{g.describe(node)} writes a full-width map inside the branch "
                                      "(nested residual blocks are converted one by one)")
                if node in self.assigned:
                    raise _ParseError(f"{g.describe(node)} is shared by two residual units")
                convs.append(node)
            elif not (g.kind.get(node) == "cat" or s.passes(node)):
                what = "reads the block input besides its own input" if node is g.input else \
                    f"has {g.describe(node)} between the convolutions, which is not part of a residual conv block"
                raise _ParseError(f"its branch {what}")
            stack.extend(g.tensor_inputs(node))
        if not reached:
            raise _ParseError("no convolution of the branch reads the unit input")
        convs.sort(key=g.order.get)
        self.assigned.update(convs)
        regions = [s.region_of[c] for c in convs if c in s.region_of]
        dense = any(len(_merge(s.layout(g.args[c][0]))) > 1 for c in convs)
        self.units.append(Unit("dense" if dense else "chain", regions, convs, attention, list(scales)))
        self.attention = self.attention or attention
        if not self.scales:
            self.scales = list(scales)


# ---------------------------------------------------------------------------
# entry point


def not_a_block(module: nn.Module):
    """A Mismatch for what cannot be a block at a glance (no tracing needed), else None."""
    if isinstance(module, (nn.ModuleList, nn.ModuleDict)) or (
            isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward):
        return Mismatch(0, f"a plain {type(module).__name__} only chains its layers (no residual)")
    if type(module).__module__.startswith("torch.nn."):
        return Mismatch(0, f"a {type(module).__name__} layer")
    n_convs = count_convs(module)
    if n_convs < 2:
        return Mismatch(0, f"holds {n_convs} convolution(s); a residual block has at least two")
    if n_convs > MAX_BLOCK_CONVS:
        return Mismatch(0, f"holds {n_convs} convolutions: a network of blocks, not one block")
    return None


def analyze(module: nn.Module):
    """The :class:`Dataflow` of `module`, or a :class:`Mismatch` saying how far it got and why not."""
    quick = not_a_block(module)
    if quick is not None:
        return quick
    gm, why = _trace(module)
    channels = _first_conv_channels(module)
    if gm is None:
        stage = COMPUTATION if why.startswith("its forward takes") else TRACED
        what = f"does not run on a (2, {channels}, 6, 6) input ({why})" if stage == COMPUTATION else why
        return Mismatch(stage, what, _layout_shape(module))
    g = _Graph(gm)
    if g.input is None:
        return Mismatch(TRACED, "its forward takes no input")
    problem = _propagate_shapes(g, module)
    if problem:
        return Mismatch(TRACED, problem)
    s = _Structure(g)
    shape = s.shape()
    if not s.regions:
        return Mismatch(STRUCTURE, "no convolution output is read only by other convolutions (nothing to "
                                   "slice: AnySR slims the channels inside a residual conv block)")
    if s.problems:
        return Mismatch(STRUCTURE if shape is None else COMPUTATION, "; ".join(dict.fromkeys(s.problems)), shape)
    p = _Parser(g, s)
    family = shape or "residual"
    branch = p.residual(g.output, g.input)
    if branch is None:
        if g.shapes.get(g.output) != g.shapes.get(g.input):
            shape = None  # it changes the map's size: a head, a tail or an upsampler, not a block
        return Mismatch(COMPUTATION, f"has the structure of a {family!r} block but its forward differs from that "
                                     f"type's x + body(x): {_no_identity(g, p)}", shape)
    try:
        p.branch(branch, g.input, top=True)
    except _ParseError as exc:
        return Mismatch(COMPUTATION, f"has the structure of a {family!r} block but its forward differs from "
                                     f"that type's x + body(x): {exc}", shape)
    return _dataflow(g, s, p, module)


def _no_identity(g: _Graph, p: _Parser) -> str:
    out = g.output
    if isinstance(out, fx.Node) and p._is_add(out):
        return f"its output adds {' and '.join(g.describe(a) for a in g.tensor_inputs(out))}, not the block input " \
               "and a branch"
    return f"its output is {g.describe(out)}, with no identity path from the input"


def _layout_shape(module: nn.Module):
    """Best guess of a family for messages when the forward cannot be traced alone."""
    gm = None
    try:
        tracer = fx.Tracer()  # torch.nn modules stay leaves, user modules are inlined
        graph = tracer.trace(module)
        gm = fx.GraphModule(tracer.root, graph)
    except Exception:
        return None
    g = _Graph(gm)
    if _propagate_shapes(g, module, extra_inputs=True):
        return None
    try:
        return _Structure(g).shape()
    except Exception:
        return None


def _propagate_shapes(g: _Graph, module: nn.Module, extra_inputs: bool = False):
    """Record every node's shape by running the traced graph on a small input (meta tensors for
    a module on the meta device); None, or why it does not run."""
    channels = _first_conv_channels(module)
    param = next(module.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    placeholders = [n for n in g.gm.graph.nodes if n.op == "placeholder"]
    x = torch.zeros(1, channels, 8, 8, device=device, dtype=dtype)
    inputs = [x] + [torch.ones((), device=device, dtype=dtype)] * (len(placeholders) - 1) if extra_inputs else [x]
    shapes = g.shapes

    failed = []

    class _Recorder(fx.Interpreter):
        def run_node(self, n):
            try:
                result = super().run_node(n)
            except Exception:
                failed.append(n)
                raise
            if isinstance(result, torch.Tensor):
                shapes[n] = tuple(result.shape)
            return result

    try:
        with torch.no_grad(), buffers_kept(module):
            _Recorder(g.gm).run(*inputs)
    except Exception as exc:
        node = failed[0] if failed else None
        prelu = g.module(node) if node is not None and node.op == "call_module" else None
        inputs = g.tensor_inputs(node) if node is not None else []
        if isinstance(prelu, nn.PReLU) and inputs and inputs[0] in shapes:
            c = shapes[inputs[0]][1]
            return f"{node.target} is PReLU({prelu.num_parameters}) on {c} channels; expected PReLU(1) or PReLU({c})"
        where = f" at {g.describe(node)}" if node is not None else ""
        return f"its forward does not run on a (1, {channels}, 8, 8) input{where} ({type(exc).__name__}: " \
               f"{' '.join(str(exc).split())[:160]})"
    return None


def _dataflow(g: _Graph, s: _Structure, p: _Parser, module: nn.Module):
    shape = _family(p, s)
    convs, index = [], {}
    for u, unit in enumerate(p.units):
        for c in unit.convs:
            index[c] = len(convs)
            m = g.module(c)
            segments = tuple(_merge(s.layout(g.args[c][0])))
            if any(length is None for _, length in segments) or sum(l for _, l in segments) != m.in_channels:
                return Mismatch(COMPUTATION, f"cannot tell which input channels of {c.target} come from where",
                                s.shape())
            convs.append(ConvRole(c.name, c.target, s.region_of.get(c), segments, m.in_channels, m.out_channels,
                                  tuple(m.kernel_size), tuple(m.stride), u))
    targets = [c.target for c in convs]
    twice = next((t for t in targets if targets.count(t) > 1), None)
    if twice is not None:
        return Mismatch(COMPUTATION, f"the convolution {twice} is applied twice", s.shape())
    regions = [g.module(c).out_channels for c in s.regions]
    order = {c.node: i for i, c in enumerate(convs)}
    for unit in p.units:
        unit.convs = [order[c.name] for c in unit.convs]
    # activations on region channels (PReLU slopes are sliced with them; counted for the cost)
    activations, shared = [], {}
    for node in g.order:
        if node.op == "output" or g.kind.get(node) != "act":
            continue
        layout = _merge(s.layout(g.tensor_inputs(node)[0])) if g.tensor_inputs(node) else []
        region = layout[0][0] if len(layout) == 1 and layout[0][0] >= 0 else None
        target, sliced = (node.target if node.op == "call_module" else None), None
        if target is not None and isinstance(g.module(node), nn.PReLU) and g.module(node).num_parameters > 1:
            sliced = "module"
        elif g.is_prelu_function(node) and g.attr_inputs(node) and g.attr(g.attr_inputs(node)[0]).numel() > 1:
            target, sliced = g.attr_inputs(node)[0].target, "weight"
        if sliced:
            shared.setdefault(target, set()).add(region)
        if region is not None:
            activations.append((node.name, region, target, sliced))
    mixed = [t for t, regions_used in shared.items() if len(regions_used) > 1]
    if mixed:
        return Mismatch(COMPUTATION, f"the per-channel PReLU weight {mixed[0]} is used on sliced and full-width "
                                     "channels",
                        s.shape())
    in_channels = g.shapes[g.input][1]
    return Dataflow(g.gm.graph, g.input.name, in_channels, convs, regions, p.units, p.attention, p.scales,
                    activations, shape, attributes=_plain_attributes(g, module))


def _plain_attributes(g: _Graph, module: nn.Module) -> dict:
    """Top-level names the traced forward reads with ``get_attr`` that are no submodule, parameter or
    buffer of `module` (a plain tensor attribute, or a constant torch.fx made), with their values:
    the converted block must carry them for its program."""
    out = {}
    for node in g.gm.graph.nodes:
        name = node.target.split(".")[0] if node.op == "get_attr" else None
        if name and name not in module._modules and name not in module._parameters and name not in module._buffers:
            out[name] = module.__dict__[name] if name in module.__dict__ else getattr(g.gm, name)
    return out


def _densely_connected(unit: Unit, s: _Structure) -> bool:
    """Growth layer i reads the unit input and growth layers 1..i-1; the fusion reads them all."""
    g = s.g
    for k, conv in enumerate(unit.convs):
        segments = s.layout(g.args[conv][0])
        sources = sorted(r for r, _ in segments if r >= 0)
        if sum(1 for r, _ in segments if r < 0) != 1 or sources != sorted(unit.regions[:k]):
            return False
    return True


def _family(p: _Parser, s: _Structure) -> str:
    """The described family of a fully parsed block."""
    units = p.units
    if len(units) > 1:
        return "rrdb" if all(u.kind == "dense" for u in units) else "residual"
    unit = units[0]
    if unit.kind == "dense":
        return "rdb" if not p.attention and _densely_connected(unit, s) else "residual"
    if len(unit.convs) == 2:
        return "rcab" if p.attention else "edsr"
    return "residual"


def region_counts(regions: list, gated: int, n: int) -> list:
    """Channels kept per region when the gated region keeps `n` (same fraction, floored)."""
    full = regions[gated]
    if n >= full:
        return list(regions)
    return [n if r == full else max(1, int(math.floor(r * n / full + 1e-6))) for r in regions]


__all__ = ["analyze", "not_a_block", "buffers_kept", "Dataflow", "Mismatch", "ConvRole", "Unit", "region_counts", "count_convs",
           "MAX_BLOCK_CONVS", "TRACED", "STRUCTURE", "COMPUTATION"]
