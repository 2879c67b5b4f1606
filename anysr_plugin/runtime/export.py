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

This module is the generic walk only: each block type builds its own static form
(``AnySRBlock.export_static``, in the block type's file), and the closed-form gate is
``gate.StaticGate``.  Key names stay those of the upstream block (``body.0.weight``,
``convs.3.conv.0.weight``, ``LFF.weight``, ``RDB1.conv1.weight``); the gate lives under
``gate`` (``gate.fc1``, ``gate.fc1_scale``, ``gate.fc2``).

With ``AnySRConfig(decoder="slim")`` the decoder is exported too: LIIF/LTE ``imnet``
becomes plain ``layers`` of the scale group's decoder width, SRNO's ``fc1``/``fc2``
plain sliced 1x1 convs (decoder.py).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from .blocks import AnySRBlock, StaticBlock, StaticRCAB, StaticRDB, StaticResBlock, StaticRRDB
from .config import channels_at
from .control import anysr_blocks, as_scale_tensor, get_state, unwrap
from .decoder import _SlimDecoder, export_decoders
from .errors import AnySRError, NotAnySRError, ScaleError
from .gate import InterweavingGate, StaticGate
from .unload import strip_anysr

__all__ = ["safe_deepcopy", "export_subnet", "StaticGate", "StaticBlock", "StaticResBlock", "StaticRCAB", "StaticRDB", "StaticRRDB",
           "ScaleInputModel", "static_blocks"]



def static_blocks(model: nn.Module) -> list:
    """The exported (static) blocks of an exported sub-network."""
    return [m for m in model.modules() if isinstance(m, StaticBlock)]


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


def safe_deepcopy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` that leaves out tensors cached as plain attributes (LIIF's
    ``self.feat`` / ``self.inp`` of the last call: non-leaf tensors that deepcopy refuses)."""
    stash = []
    for m in model.modules():
        for k, v in list(m.__dict__.items()):
            if isinstance(v, torch.Tensor) and not isinstance(v, nn.Parameter):
                stash.append((m, k, v))
                m.__dict__[k] = None
    try:
        with torch.no_grad():
            return copy.deepcopy(model)
    finally:
        for m, k, v in stash:
            m.__dict__[k] = v


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
    twin = safe_deepcopy(src)
    names = {id(m): n for n, m in src.named_modules()}
    twin_modules = dict(twin.named_modules())
    for block in blocks:
        name = names[id(block)]
        twin_block = twin_modules[name]
        n = channels_at(twin_block.channels, width)
        static = twin_block.export_static(n, scale)  # each block type owns its static form
        static.train(twin_block.training)
        parent_name, _, attr = name.rpartition(".")
        parent = twin_modules[parent_name] if parent_name else twin
        parent._modules[attr] = static

    export_decoders(twin, width)  # decoder="slim": plain sliced layers of the group's decoder width
    strip_anysr(twin)  # hooks, _anysr_* state and instance patches of the source model

    leftovers = [type(m).__name__ for m in twin.modules()
                 if isinstance(m, (AnySRBlock, InterweavingGate, _SlimDecoder))]
    if leftovers:  # pragma: no cover - defensive
        raise AnySRError(f"export left slimmable modules behind: {leftovers}")
    twin.eval()
    has_open_gate = any(isinstance(m, StaticGate) and m.fc1_scale is not None for m in twin.modules())
    if has_open_gate:
        out = ScaleInputModel(twin)
        out.eval()
        return out
    return twin
