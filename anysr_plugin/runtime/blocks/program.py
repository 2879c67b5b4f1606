"""Running a described block: its own traced forward, with the sliced parts swapped in.

Why generated code: the block's forward *is* the description (dataflow.py), so the
slimmable block runs that very graph, with only three kinds of node replaced:

* each body convolution becomes ``run.conv(i, conv, h)``: the first ``n`` filters of a region's
  producer, the kept input columns of a reader (a prefix, or a gather for dense layouts);
* the gated region's producer is followed by ``run.gate(h)`` (or, when an activation module is
  its only reader, ``run.gate_act(act, h)``: one fused step that saves less for backward);
* a per-channel PReLU on region channels becomes ``run.act(prelu, h)`` or, written as a function
  with its own weight, ``run.prelu(h, weight)`` (the first ``n`` slopes).

Everything else (the residual, its scale as a number, buffer or parameter, the channel
attention, in-place spellings) runs exactly as the upstream code wrote it.  ``run`` is one
of the per-call objects below: :class:`SlicedRun` (one width for the batch: really smaller
convolutions) or :class:`MaskedRun` (per-sample widths: full-size convolutions whose readers
see zeros beyond each sample's kept channels, which equals each sample's sliced result).
The static export runs the unmodified graph on physically sliced copies, with the gate
inserted as a module call, so it has no AnySR type left and traces / exports cleanly.

The code is generated with ``torch.fx`` (``Graph.python_code``) once per block signature
and per gate position, compiled, and cached with its source, so pickles carry the source.

Calls without gradients run a second version, ``"infer"`` (:func:`in_place`): the same graph
with a multiplication by the literal 1 dropped and additions done in place on a tensor the
block itself just made and reads nowhere else, as upstream inference code writes ``res += x``.
Same values; one feature map less allocated and written per block.
"""
from __future__ import annotations

import importlib
import itertools
import linecache
import operator
import types

import torch
import torch.nn.functional as F
from torch import fx

from ..gate import run_native_step
from ..native_gate import ACT_LEAKY, ACT_NONE, ACT_RELU
from .base import activate, sliced_conv
from .dataflow import Dataflow, region_counts

_COUNTER = itertools.count()


class Source:
    """Generated Python source of a block's forward and the globals it names.  Immutable: deep
    copies share it; pickles carry the text and the globals by reference (modules by name)."""

    def __init__(self, text: str, globals_: dict):
        self.text, self.globals = text, globals_
        self.function = None  # compiled on first use, shared by every block of this signature

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        refs = {k: ("module", v.__name__) if isinstance(v, types.ModuleType) else ("object", v)
                for k, v in self.globals.items()}
        return (_load_source, (self.text, refs))


def _load_source(text: str, refs: dict) -> Source:
    return Source(text, {k: importlib.import_module(v) if kind == "module" else v for k, (kind, v) in refs.items()})


def compiled(source: Source, what: str):
    """The function ``forward`` defined by `source` (compiled once per source)."""
    if source.function is None:
        name = f"<anysr {what} #{next(_COUNTER)}>"
        linecache.cache[name] = (len(source.text), None, source.text.splitlines(True), name)  # readable tracebacks
        scope = dict(source.globals)
        exec(compile(source.text, name, "exec"), scope)
        source.function = scope["forward"]
    return source.function


def program(flow: Dataflow, kind: str, gate_region: int, gate_name: str | None = None) -> Source:
    """The block's ``forward`` for ``kind`` "slim" (``forward(self, x, run)``), "infer" (the same
    for calls without gradients, see :func:`in_place`) or "static" (``forward(self, x)`` with the
    gate as submodule `gate_name`; None: no gate)."""
    key = (kind, gate_region, gate_name)
    if key not in flow.sources:
        flow.sources[key] = _generate(flow, kind, gate_region, gate_name)
    return flow.sources[key]


def _generate(flow: Dataflow, kind: str, gate_region: int, gate_name):
    infer = kind == "infer"
    kind = "slim" if infer else kind
    if flow.graph is None:
        raise RuntimeError("this block's analysis came from a pickle without its graph")
    old = flow.graph
    nodes = {n.name: n for n in old.nodes}
    conv_index = {c.node: i for i, c in enumerate(flow.convs)}
    gated = flow.producer(gate_region).node
    gated_node = nodes[gated]
    prelus = {name: sliced for name, _, _, sliced in flow.activations if sliced}
    readers = list(gated_node.users)
    fused = readers[0].name if (kind == "slim" and len(readers) == 1 and readers[0].op == "call_module"
                                and any(readers[0].name == a[0] for a in flow.activations)) else None
    g = fx.Graph()
    env: dict = {}
    run = None
    refs: dict = {}
    module = (lambda target: _submodule(g, target, refs)) if infer else g.get_attr
    for node in old.nodes:
        if node.op == "placeholder":
            env[node] = g.placeholder(node.name)
            if kind == "slim" and run is None:
                run = g.placeholder("run")
            continue
        if kind == "slim" and node.name in conv_index:
            conv = module(node.target)
            out = g.call_method("conv", (run, conv_index[node.name], conv, env[node.args[0]]))
            if node.name == gated and fused is None:
                out = g.call_method("gate", (run, out))
            env[node] = out
            continue
        if kind == "slim" and node.name == fused:
            env[node] = g.call_method("gate_act", (run, module(node.target), env[node.args[0]]))
            continue
        if kind == "slim" and prelus.get(node.name) == "module":
            env[node] = g.call_method("act", (run, module(node.target), env[node.args[0]]))
            continue
        if kind == "slim" and prelus.get(node.name) == "weight":
            env[node] = g.call_method("prelu", (run, env[node.args[0]], env[node.args[1]]))
            continue
        env[node] = g.node_copy(node, lambda n: env[n])
        if kind == "static" and node.name == gated and gate_name is not None:
            env[node] = g.call_module(gate_name, (env[node],))
    if infer:
        in_place(g)
    g.lint()
    code = g.python_code(root_module="self")
    return Source(code.src, dict(code.globals))


def _submodule(g: fx.Graph, target: str, refs: dict) -> fx.Node:
    """Submodule `target` ("body.0") read through the ``_modules`` dicts, where a submodule
    lives: the same object as ``self.body[0]`` without a Python ``Module.__getattr__`` frame per
    step, which a no-grad call pays on every block.  Shared prefixes are read once per call."""
    node, path = None, ""
    for part in target.split("."):
        if (path, "_modules") not in refs:
            refs[path, "_modules"] = g.get_attr("_modules") if node is None else \
                g.call_function(getattr, (node, "_modules"))
        path = f"{path}.{part}" if path else part
        if path not in refs:
            refs[path] = g.call_function(operator.getitem, (refs[(path.rpartition(".")[0], "_modules")], part))
        node = refs[path]
    return node


#: what the per-call ``run`` returns as a new tensor (``act`` may return its input: an in-place ReLU)
_FRESH_RUN = {"conv", "gate", "gate_act", "prelu"}
_ARITHMETIC = {operator.mul: "mul", torch.mul: "mul", operator.add: "add", torch.add: "add"}


def _arithmetic(node: fx.Node):
    """``"mul"`` or ``"add"`` for an out-of-place binary product or sum without keyword
    arguments (``a * b``, ``torch.add(a, b)``, ``a.mul(b)``), else None."""
    if node.kwargs or len(node.args) != 2:
        return None
    if node.op == "call_method":
        return node.target if node.target in ("mul", "add") else None
    return _ARITHMETIC.get(node.target) if node.op == "call_function" else None


def _is_fresh(node: fx.Node) -> bool:
    """True when `node` is a tensor this block's code made and no one else holds: a sliced
    convolution or gate step, or an out-of-place product or sum."""
    if node.op == "call_method" and node.args and getattr(node.args[0], "name", None) == "run":
        return node.target in _FRESH_RUN
    return _arithmetic(node) is not None


def in_place(g: fx.Graph) -> None:
    """Rewrite the no-grad program: ``t * 1`` becomes ``t`` (bit-identical), and ``a + b`` with
    `a` (or `b`) a fresh tensor read only by this sum becomes ``add_into(a, b)``, which adds in
    place when the two agree in shape and dtype (else it is the plain sum)."""
    for node in list(g.nodes):
        kind = _arithmetic(node)
        if kind == "mul":
            a, b = node.args
            if isinstance(a, fx.Node) and type(b) in (int, float) and b == 1 and _is_fresh(a):
                node.replace_all_uses_with(a)
                g.erase_node(node)
        elif kind == "add":
            for mine, other in (node.args, node.args[::-1]):
                if isinstance(mine, fx.Node) and isinstance(other, fx.Node) and _is_fresh(mine) \
                        and len(mine.users) == 1:
                    with g.inserting_after(node):
                        new = g.call_function(add_into, (mine, other))
                    node.replace_all_uses_with(new)
                    g.erase_node(node)
                    break


def add_into(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b``, written into `a` when that gives the same tensor (same shape and dtype)."""
    if a.shape == b.shape and a.dtype == b.dtype:
        return a.add_(b)
    return a + b


# ---------------------------------------------------------------------------
# per-call runs


#: activations the native gate applies in the same pass as the gate (any other runs as usual)
_NATIVE_ACTIVATIONS = {torch.nn.ReLU: ACT_RELU, torch.nn.LeakyReLU: ACT_LEAKY}


def conv_spec(flow: Dataflow, counts: list, device) -> tuple:
    """Per body convolution ``(filters kept or None, input columns: None | prefix int | LongTensor)``."""
    spec = []
    for role in flow.convs:
        out = None
        if role.out_region is not None and counts[role.out_region] != flow.regions[role.out_region]:
            out = counts[role.out_region]
        cols, offset, whole = [], 0, True
        for region, length in role.segments:
            keep = length if region < 0 else counts[region]
            whole = whole and keep == length
            cols.extend(range(offset, offset + keep))
            offset += length
        if whole:
            inp = None
        elif cols == list(range(len(cols))):
            inp = len(cols)
        else:
            with torch.inference_mode(False):  # a cache made in inference mode must serve training too
                inp = torch.tensor(cols, dtype=torch.long, device=device)
        spec.append((out, inp))
    return tuple(spec)


def column_masks(flow: Dataflow, per_sample: list, device, dtype) -> tuple:
    """Per body convolution, a (B, C_in, 1, 1) mask keeping each sample's columns, or None
    (it reads only full-width channels).  ``per_sample``: region counts of every sample."""
    masks = []
    for role in flow.convs:
        if all(region < 0 for region, _ in role.segments):
            masks.append(None)
            continue
        rows = []
        for counts in per_sample:
            row = []
            for region, length in role.segments:
                keep = length if region < 0 else counts[region]
                row.extend([1.0] * keep + [0.0] * (length - keep))
            rows.append(row)
        masks.append(torch.tensor(rows, device=device, dtype=dtype)[:, :, None, None])
    return tuple(masks)


_module = torch.nn.modules.module


def no_global_hooks() -> bool:
    """True when no module hook is registered for every module (``register_module_forward_hook``
    and its kin): then a plain convolution without hooks of its own is exactly its functional call."""
    return not (_module._global_forward_hooks or _module._global_forward_pre_hooks
                or _module._global_backward_hooks or _module._global_backward_pre_hooks)


class SlicedRun:
    """One width for the whole batch: really smaller convolutions.  ``native``: the gate's
    :meth:`~anysr_plugin.runtime.gate.InterweavingGate.native_step` for a call without
    gradients on the CPU (the gate, and the ReLU / LeakyReLU after it, in one native call),
    else None.  ``direct``: a call without gradients and without global module hooks, in which
    an unsliced plain ``nn.Conv2d`` with no hooks of its own runs as ``F.conv2d`` (what its
    module call would run, without the four Python frames of ``Module.__call__``)."""

    __slots__ = ("block", "spec", "scale", "n", "native", "direct")

    def __init__(self, block, spec, scale, n, native=None, direct=False):
        self.block, self.spec, self.scale, self.n, self.native, self.direct = block, spec, scale, n, native, direct

    def conv(self, i, conv, h):
        out, inp = self.spec[i]
        if out is None and inp is None:
            if self.direct and type(conv) is torch.nn.Conv2d and conv.padding_mode == "zeros" and not (
                    conv._forward_hooks or conv._forward_pre_hooks or conv._backward_hooks
                    or conv._backward_pre_hooks):
                params = conv._parameters  # where Module.__getattr__ finds them (also a functional_call's)
                if "weight" in params and "bias" in params:
                    return F.conv2d(h, params["weight"], params["bias"], conv.stride, conv.padding, conv.dilation,
                                    conv.groups)
            return conv(h)
        return sliced_conv(conv, h, out, inp)

    def gate(self, h):
        if self.native is not None and run_native_step(self.native, h):
            return h
        return self.block.apply_gate(h, self.scale, self.n)

    def gate_act(self, act, h):
        if self.native is not None:
            code = _NATIVE_ACTIVATIONS.get(type(act), ACT_NONE)
            if run_native_step(self.native, h, code, act.negative_slope if code == ACT_LEAKY else 0.0):
                return h if code != ACT_NONE else activate(act, h)
        return self.block.gate_activation(h, self.scale, self.n, act)

    def act(self, act, h):
        return activate(act, h)

    def prelu(self, h, weight):
        return F.prelu(h, weight[: h.shape[1]])


class MaskedRun:
    """Per-sample widths with full-size convolutions: every reader of region channels sees
    zeros beyond each sample's kept channels (exactly each sample's sliced result)."""

    __slots__ = ("block", "masks", "scale", "ns", "gate_mask")

    def __init__(self, block, masks, scale, ns, gate_mask):
        self.block, self.masks, self.scale, self.ns, self.gate_mask = block, masks, scale, ns, gate_mask

    def conv(self, i, conv, h):
        mask = self.masks[i]
        return conv(h if mask is None else h * mask)

    def gate(self, h):
        return self.block.apply_gate_masked(h, self.scale, self.ns, self.gate_mask)

    def gate_act(self, act, h):
        return act(self.gate(h))

    def act(self, act, h):
        return act(h)

    def prelu(self, h, weight):
        return F.prelu(h, weight)


__all__ = ["Source", "program", "compiled", "conv_spec", "column_masks", "SlicedRun", "MaskedRun", "region_counts"]
