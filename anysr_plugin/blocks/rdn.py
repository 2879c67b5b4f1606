"""RDN residual dense block: dense layers ``convs.k.conv = [conv, act]`` + ``LFF`` 1x1 + ``x``.

Matches LIIF/LTE/SRNO ``models/rdn.py`` and Meta-SR / EDSR-PyTorch ``RDB``.

Slicing.  At width w every dense layer produces only its first
``g = floor(G*w)`` growth filters.  Later layers and ``LFF`` read exactly the channels
they read in the full network: the input index of layer k is ``[0, G0)`` plus the
first ``g`` columns of every earlier layer's slot (an index gather), so a sub-RDB is a
true smaller RDB and every weight column means the same feature at every width
(the official release slices only layers 4-7 and reads a prefix, so its columns
shift meaning between widths).

Gate placement.  The gate sits on **one** dense layer, pooling that layer's
pre-activation output (G channels, lambda = 8: a chunk of 8 features per scale
pair) and weighting it before its activation, exactly the EDSR recipe with "the
first sub-block" being that dense layer.  Default ``rdb_gate="first"``: layer 0's
gated output feeds every later dense layer *and* LFF, so the scale-aware weighting
reaches the whole block at the cost of one small MLP (``fc1: 80 -> 128``,
``fc2: 128 -> 64``; 18,624 parameters per RDB for G = 64, against 70,016 for the
release's gate on the last two dense outputs).  ``rdb_gate="last"`` gates the last
dense layer, the one that feeds LFF directly (closest to the release's choice).
Measured by ``python examples/rdb_gate_placement.py`` (LIIF-RDN, 3 RDBs x 8 layers, G0 = G = 32,
CPU-size fine-tune; results in examples/rdb_gate_placement/): "first" and "last" are within
0.01 dB of each other and 0.03-0.05 dB above no gate at x1.5 / x2 (33.91 / 33.92 / 33.86 dB at
x1.5), so the default stays "first", whose gated features reach every later layer.  Slicing
every dense layer makes the sub-RDB cheap: encoder cost 0.327 / 0.536 / 0.797 of the original
at widths 0.5 / 0.7 / 0.9 (the release slices only four of the eight layers).
"""
from __future__ import annotations

import torch
from torch import nn

from .base import (AnySRBlock, DenseColumns, StaticBlock, activate, add_residual, channel_mask, check_activation,
                   check_conv, sliced_conv, static_activation, static_conv)


class AnySRRDB(DenseColumns, AnySRBlock):
    family = "rdb"
    default_lam = 8  # paper Sec. III-C: lambda 8 for RDN
    name_pattern = r"(?i)^rdb$"

    @classmethod
    def structure_problem(cls, module: nn.Module):
        convs, lff = getattr(module, "convs", None), getattr(module, "LFF", None)
        if not isinstance(convs, nn.Sequential) or len(convs) == 0:
            return "has no non-empty `convs` nn.Sequential of dense layers"
        first = getattr(convs[0], "conv", None)
        if not isinstance(first, nn.Sequential) or len(first) != 2:
            return "convs.0 has no `conv` = nn.Sequential(conv, act)"
        if not isinstance(first[0], nn.Conv2d):
            return f"convs.0.conv.0 is {type(first[0]).__name__}, expected a plain nn.Conv2d"
        g0, g = first[0].in_channels, first[0].out_channels
        for k, layer in enumerate(convs):
            seq = getattr(layer, "conv", None)
            if not isinstance(seq, nn.Sequential) or len(seq) != 2:
                return f"convs.{k} has no `conv` = nn.Sequential(conv, act)"
            problem = (check_conv(seq[0], f"convs.{k}.conv.0", in_ch=g0 + k * g, out_ch=g)
                       or check_activation(seq[1], f"convs.{k}.conv.1", g))
            if problem:
                return problem
        return check_conv(lff, "LFF", in_ch=g0 + len(convs) * g, out_ch=g0)

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:
        return module.convs[0].conv[0].out_channels

    @classmethod
    def input_channels(cls, module: nn.Module) -> int:
        return module.convs[0].conv[0].in_channels

    @classmethod
    def variant_for(cls, config):
        if config.compat == "official":  # the official release's RDB layout (opt-in)
            from .official_rdb import OfficialRDB

            return OfficialRDB
        return cls

    def __init__(self, block, config, state=None):
        super().__init__(block, config, state)
        self.gate_layer = 0 if config.rdb_gate == "first" else len(self.convs) - 1

    def _adopt(self, block: nn.Module) -> None:
        self.convs = block.convs
        self.LFF = block.LFF
        self.in_channels = block.convs[0].conv[0].in_channels

    def extra_repr(self) -> str:
        return super().extra_repr() + f", layers={len(self.convs)}, gate_layer={getattr(self, 'gate_layer', 0)}"

    def forward_sliced(self, x, g, scale):
        full = g == self.channels
        feats = x
        for k, layer in enumerate(self.convs):
            conv, act = layer.conv[0], layer.conv[1]
            if full:
                out = conv(feats)
            else:
                out = sliced_conv(conv, feats, out_channels=g,
                                  in_index=None if k == 0 else self._input_index(g, k, x.device))
            out = self.gate_activation(out, scale, g, act) if k == self.gate_layer else activate(act, out)
            feats = torch.cat((feats, out), 1)
        if full:
            return add_residual(self.LFF(feats), x)
        return add_residual(sliced_conv(self.LFF, feats, in_index=self._input_index(g, len(self.convs), x.device)), x)

    def forward_masked(self, x, ns, scale):
        mask = channel_mask(ns, self.channels, x)
        feats = x
        for k, layer in enumerate(self.convs):
            out = layer.conv[0](feats) * mask
            if k == self.gate_layer:
                out = self.apply_gate_masked(out, scale, ns, mask)
            feats = torch.cat((feats, layer.conv[1](out) * mask), 1)
        return add_residual(self.LFF(feats), x)

    def conv_macs_per_pixel(self, width: float) -> int:
        g, G0 = self.width_channels(width), self.in_channels
        macs = 0
        for k, layer in enumerate(self.convs):
            kh, kw = layer.conv[0].kernel_size
            macs += (G0 + k * g) * g * kh * kw
        kh, kw = self.LFF.kernel_size
        return macs + (G0 + len(self.convs) * g) * G0 * kh * kw

    def activations_per_pixel(self, width: float) -> int:
        return self.width_channels(width) * len(self.convs)

    def export_static(self, g, scale=None):
        return StaticRDB(self, g, scale)


class _DenseLayer(nn.Module):
    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv = nn.Sequential(conv, act)


class StaticRDB(StaticBlock):
    """RDB of one growth ``g``: dense layer k reads ``G0 + k*g`` channels (the gathered columns)."""

    def __init__(self, block: AnySRRDB, g: int, scale=None):
        super().__init__()
        layers = []
        for k, layer in enumerate(block.convs):
            conv, act = layer.conv[0], layer.conv[1]
            index = None if k == 0 else block._input_index(g, k, conv.weight.device)
            layers.append(_DenseLayer(static_conv(conv, out_index=g, in_index=index), static_activation(act, g)))
        self.convs = nn.Sequential(*layers)
        self.LFF = static_conv(block.LFF, in_index=block._input_index(g, len(block.convs), block.LFF.weight.device))
        self.gate_layer = block.gate_layer
        self.gate = block.static_gate(g, scale)

    def forward(self, x):
        feats = x
        for k, layer in enumerate(self.convs):
            out = layer.conv[0](feats)
            if k == self.gate_layer and self.gate is not None:
                out = self.gate(out)
            feats = torch.cat((feats, layer.conv[1](out)), 1)
        return self.LFF(feats) + x


__all__ = ["AnySRRDB", "StaticRDB"]
