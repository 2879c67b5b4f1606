"""Static sub-networks: ``export_subnet(model, width, scale=None)``.

An AnySR model holds every sub-network in one set of weights; deployment wants one
of them as a plain network.  ``export_subnet`` deep-copies the model and replaces
every AnySR block by a static block whose convolutions and gate layers are
*physically* the sliced weights of that width (Eq. 4 and Eq. 8), so the result has
no slimmable module, no AnySR hook and no AnySR attribute left, runs at the reduced
cost without any control flow, and traces / exports (``torch.jit.trace``,
``torch.export``, ONNX).

The gate of the exported block is rewritten in closed form.  The interleaved gate
input ``[f_0..f_{k-1}, s_h, s_w, f_k.., s_h, s_w, ...]`` enters ``fc1`` linearly, so

    fc1(interleave(f, s)) = W_feat f + W_scale s + b1,
    W_feat  = fc1.weight[:, feature columns]                 (2C x n)
    W_scale = [sum of the s_h columns, sum of the s_w columns] (2C x 2)

which is exactly the sliced computation with no scatter.  With a fixed ``scale``
the constant term ``W_scale s`` folds into ``fc1``'s bias (``fc1_scale`` disappears);
without one the exported model takes the scale as an extra input:
``exported(*args, scale=(s_h, s_w) or a (B, 2) tensor)`` (or positionally as the
last argument, which is how a trace receives it).

With ``AnySRConfig(decoder="slim")`` the decoder is exported too: LIIF/LTE ``imnet``
becomes plain ``layers`` of the scale group's decoder width, SRNO's ``fc1``/``fc2``
plain sliced 1x1 convs (decoder.py).

Key names stay those of the upstream block (``body.0.weight``, ``convs.3.conv.0.weight``,
``LFF.weight``); the gate lives under ``gate`` (``gate.fc1``, ``gate.fc1_scale``,
``gate.fc2``).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .config import channels_at
from .control import PlanHook, ClearPlanHook, anysr_blocks, as_scale_tensor, get_state, unwrap
from .errors import AnySRError, NotAnySRError, ScaleError
from .gate import interleave_layout

__all__ = ["export_subnet", "StaticGate", "StaticResBlock", "StaticRCAB", "StaticRDB", "ScaleInputModel",
           "static_blocks"]

_ANYSR_ATTRS = ("_anysr_state", "_anysr_plan", "_anysr_plan_owner", "_anysr_fixed_width",
                "_anysr_scale_override", "_anysr_budget", "_anysr_source")


def _sliced_conv_module(conv: nn.Conv2d, out_index=None, in_index=None) -> nn.Conv2d:
    """A new Conv2d holding ``conv.weight[out_index][:, in_index]`` (contiguous copies)."""
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else None
    if out_index is not None:
        w = w[:out_index]
        b = b[:out_index] if b is not None else None
    if in_index is not None:
        w = w[:, :in_index] if isinstance(in_index, int) else w.index_select(1, in_index.to(w.device))
    new = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=1, bias=b is not None, padding_mode=conv.padding_mode,
                    device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.train(conv.training)
    return new


class StaticGate(nn.Module):
    """The gate of one width in closed form: ``act(fc2(relu(fc1(gap(h)) + fc1_scale(s))))``.

    ``fc1``: n -> 2C (feature columns of the AnySR ``fc1``, its bias plus the folded
    scale term when the scale is fixed); ``fc1_scale``: 2 -> 2C without bias, absent when
    folded; ``fc2``: 2C -> n (the first n rows).  ``kind`` "identity" = 2*sigmoid,
    "paper" = sigmoid.
    """

    def __init__(self, gate, n: int, scale=None):
        super().__init__()
        feat_cols, scale_cols, length = interleave_layout(gate.channels, n, gate.lam, gate.interweave)
        w1 = gate.fc1.weight.detach()
        b1 = gate.fc1.bias.detach().clone()
        hidden = w1.shape[0]
        self.kind = gate.kind
        self.channels = n
        self.fc1 = nn.Linear(n, hidden, device=w1.device, dtype=w1.dtype)
        w_scale = w1.new_zeros(hidden, 2)
        for c in scale_cols:
            w_scale[:, 0] += w1[:, c]
            w_scale[:, 1] += w1[:, c + 1]
        with torch.no_grad():
            self.fc1.weight.copy_(w1[:, feat_cols])
        self.folded_scale = None
        if scale is not None:
            s = as_scale_tensor(scale, device=w1.device).to(w1.dtype)
            if s.shape[0] != 1:
                raise ScaleError("a folded scale must be one (s_h, s_w) pair, not per-sample scales")
            b1 = b1 + (w_scale @ s[0])
            self.folded_scale = tuple(float(v) for v in s[0].tolist())
            self.fc1_scale = None
        else:
            self.fc1_scale = nn.Linear(2, hidden, bias=False, device=w1.device, dtype=w1.dtype)
            with torch.no_grad():
                self.fc1_scale.weight.copy_(w_scale)
        with torch.no_grad():
            self.fc1.bias.copy_(b1)
        self.fc2 = nn.Linear(hidden, n, device=w1.device, dtype=w1.dtype)
        with torch.no_grad():
            self.fc2.weight.copy_(gate.fc2.weight.detach()[:n])
            self.fc2.bias.copy_(gate.fc2.bias.detach()[:n])
        # the exported model's root sets this per call when the scale is not folded
        self.scale_input = None

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kind={self.kind!r}, folded_scale={self.folded_scale}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        pooled = h.mean(dim=(2, 3))
        z = self.fc1(pooled)
        if self.fc1_scale is not None:
            s = self.scale_input
            if s is None:
                raise ScaleError("this exported sub-network was exported without a fixed scale: call it "
                                 "with scale=(s_h, s_w) (or export with export_subnet(..., scale=s))")
            z = z + self.fc1_scale(s.to(z.dtype))
        z = self.fc2(F.relu(z))
        a = 2.0 * torch.sigmoid(z) if self.kind == "identity" else torch.sigmoid(z)
        return h * a[:, :, None, None]


class StaticResBlock(nn.Module):
    """EDSR ResBlock of one width: ``x + res_scale * conv2(act(gate(conv1(x))))``, conv1: C -> n."""

    def __init__(self, block, n: int, scale=None):
        super().__init__()
        conv1, act, conv2 = block.body[0], block.body[1], block.body[2]
        self.body = nn.Sequential(_sliced_conv_module(conv1, out_index=n), copy.deepcopy(act),
                                  _sliced_conv_module(conv2, in_index=n))
        self.res_scale = block.res_scale
        self.gate = StaticGate(block.anysr_gate, n, scale) if block.anysr_gate is not None else None

    def forward(self, x):
        h = self.body[0](x)
        if self.gate is not None:
            h = self.gate(h)
        res = self.body[2](self.body[1](h))
        return res * self.res_scale + x


class StaticRCAB(nn.Module):
    """RCAB of one width: ``x + CA(conv2(act(gate(conv1(x)))))``; the CALayer keeps all C channels."""

    def __init__(self, block, n: int, scale=None):
        super().__init__()
        conv1, act, conv2, att = block.body[0], block.body[1], block.body[2], block.body[3]
        self.body = nn.Sequential(_sliced_conv_module(conv1, out_index=n), copy.deepcopy(act),
                                  _sliced_conv_module(conv2, in_index=n), copy.deepcopy(att))
        self.gate = StaticGate(block.anysr_gate, n, scale) if block.anysr_gate is not None else None

    def forward(self, x):
        h = self.body[0](x)
        if self.gate is not None:
            h = self.gate(h)
        return self.body[3](self.body[2](self.body[1](h))) + x


class _DenseLayer(nn.Module):
    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv = nn.Sequential(conv, act)


class StaticRDB(nn.Module):
    """RDB of one growth ``g``: dense layer k reads ``G0 + k*g`` channels (the gathered columns)."""

    def __init__(self, block, g: int, scale=None):
        super().__init__()
        layers = []
        for k, layer in enumerate(block.convs):
            conv, act = layer.conv[0], layer.conv[1]
            index = None if k == 0 else block._input_index(g, k, conv.weight.device)
            layers.append(_DenseLayer(_sliced_conv_module(conv, out_index=g, in_index=index), copy.deepcopy(act)))
        self.convs = nn.Sequential(*layers)
        self.LFF = _sliced_conv_module(block.LFF, in_index=block._input_index(g, len(block.convs),
                                                                               block.LFF.weight.device))
        self.gate_layer = block.gate_layer
        self.gate = StaticGate(block.anysr_gate, g, scale) if block.anysr_gate is not None else None

    def forward(self, x):
        feats = x
        for k, layer in enumerate(self.convs):
            out = layer.conv[0](feats)
            if k == self.gate_layer and self.gate is not None:
                out = self.gate(out)
            feats = torch.cat((feats, layer.conv[1](out)), 1)
        return self.LFF(feats) + x


_STATIC = {"edsr": StaticResBlock, "rcab": StaticRCAB, "rdb": StaticRDB}


def static_blocks(model: nn.Module) -> list:
    return [m for m in model.modules() if isinstance(m, (StaticResBlock, StaticRCAB, StaticRDB))]


class ScaleInputModel(nn.Module):
    """An exported sub-network whose scale is not folded: ``forward(*args, scale)``.

    ``scale`` is a number, an ``(s_h, s_w)`` pair or a ``(B, 2)`` tensor; under tracing
    pass a ``(B, 2)`` (or ``(1, 2)``) tensor as the last positional argument.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, *args, scale=None):
        if scale is None:
            if len(args) < 2:
                raise ScaleError("this sub-network was exported without a fixed scale: pass it, "
                                 "exported(*inputs, scale=(s_h, s_w)), or as the last positional argument")
            *args, scale = args
        if not isinstance(scale, torch.Tensor):
            scale = as_scale_tensor(scale)
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        if first is not None:
            scale = scale.to(device=first.device)
        if scale.dim() == 1:
            scale = scale.reshape(1, 2)
        gates = [m for m in self.model.modules() if isinstance(m, StaticGate)]
        for g in gates:
            g.scale_input = scale
        try:
            return self.model(*args)
        finally:
            for g in gates:
                g.scale_input = None


def _strip_anysr(model: nn.Module) -> None:
    for m in model.modules():
        for attr in _ANYSR_ATTRS:
            if attr in m.__dict__:
                del m.__dict__[attr]
        for hooks in (m._forward_pre_hooks, m._forward_hooks):
            for key in [k for k, h in hooks.items() if isinstance(h, (PlanHook, ClearPlanHook))]:
                del hooks[key]
                # keep the with_kwargs / always_call bookkeeping consistent
                for extra in ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs",
                              "_forward_hooks_always_called"):
                    d = getattr(m, extra, None)
                    if d is not None and key in d:
                        del d[key]


def export_subnet(model: nn.Module, width: float, scale=None) -> nn.Module:
    """A new plain ``nn.Module``: the AnySR model's sub-network ``width`` with physically
    smaller weights.

    ``model`` is left untouched (it is deep-copied).  ``width`` must be one of the
    config's widths.  ``scale`` (a number or an ``(s_h, s_w)`` pair) folds the constant
    scale input into each gate's ``fc1`` bias and the result has the original call
    signature; with ``scale=None`` the result is a :class:`ScaleInputModel` whose
    forward takes the scale as an extra (last / keyword) argument.  Blocks without a
    gate (``interweave="none"``) need no scale, so the call signature is kept then too.

    Outputs equal ``with use_width(model, width), use_scale(model, scale): model(*args)``
    up to float rounding; the model is put in eval mode (like the source's mode is copied).
    """
    src = unwrap(model)
    blocks = anysr_blocks(src)
    if not blocks:
        raise NotAnySRError(f"{type(src).__name__} holds no AnySR blocks: nothing to export "
                            "(call anysr_plugin.anysrify(model) first)")
    width = get_state(src).config.check_width(width)
    if scale is not None:
        st = as_scale_tensor(scale)
        if st.shape[0] != 1:
            raise ScaleError("export_subnet folds one (s_h, s_w) scale, not per-sample scales")
        scale = (float(st[0, 0]), float(st[0, 1]))
    from .cost import safe_deepcopy

    twin = safe_deepcopy(src)
    names = {id(m): n for n, m in src.named_modules()}
    twin_modules = dict(twin.named_modules())
    for block in blocks:
        name = names[id(block)]
        twin_block = twin_modules[name]
        n = channels_at(twin_block.channels, width)
        static = _STATIC[twin_block.family](twin_block, n, scale)
        static.train(twin_block.training)
        parent_name, _, attr = name.rpartition(".")
        parent = twin_modules[parent_name] if parent_name else twin
        parent._modules[attr] = static
    from .decoder import export_decoders

    export_decoders(twin, width)  # decoder="slim": plain sliced layers of the group's decoder width
    _strip_anysr(twin)
    leftovers = [type(m).__name__ for m in twin.modules()
                 if type(m).__module__.startswith(("anysr_plugin.blocks", "anysr_plugin.decoder"))
                 and type(m).__name__ != "StaticMLP"]
    if leftovers:  # pragma: no cover - defensive
        raise AnySRError(f"export left slimmable modules behind: {leftovers}")
    twin.eval()
    has_open_gate = any(isinstance(m, StaticGate) and m.fc1_scale is not None for m in twin.modules())
    if has_open_gate:
        out = ScaleInputModel(twin)
        out.eval()
        return out
    return twin
