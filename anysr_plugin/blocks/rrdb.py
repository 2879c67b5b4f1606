"""ESRGAN's residual-in-residual dense block (RRDB), the encoder block of ESRGAN/BasicSR's
``RRDBNet`` and of the LIIF-derived repositories that use it as their encoder.

Upstream structure (attribute names ``RDB1``/``RDB2``/``RDB3``, or ``rdb1``/``rdb2``/``rdb3``
in the common BasicSR-style variant)::

    RDB_5C(x):  x1 = lrelu(conv1(x));  x2 = lrelu(conv2([x, x1]));  ...  x4 = lrelu(conv4([x, x1..x3]))
                x5 = conv5([x, x1..x4]);  return x5 * 0.2 + x          (conv k: nf + (k-1)*gc -> gc)
    RRDB(x):    return RDB3(RDB2(RDB1(x))) * 0.2 + x                   (lrelu: LeakyReLU(0.2))

What is sliced.  At width w every dense conv (conv1..conv4 of each of the three RDBs)
produces only its first ``g = floor(gc*w)`` growth filters, and every later conv reads the
channels it reads in the full network: ``[0, nf)`` plus the first ``g`` columns of every
earlier growth slot (an index gather, exactly as our RDN block does).  So a sub-RRDB is a
true smaller RRDB and a weight column means the same feature at every width.  ``conv5``
keeps its ``nf`` outputs: it writes the residual, so each RDB (and the RRDB) still reads
and returns ``nf`` channels and blocks compose at any per-block width.  Cost of the block's
convolutions for ESRGAN's nf=64, gc=32: 0.52 / 0.69 / 0.87 of full at widths 0.5 / 0.7 / 0.9
(``conv5``'s input shrinks, its output cannot).

Where the gate sits.  One gate per RRDB, on the **first dense output** (``RDB1.conv1``,
before its LeakyReLU, over ``gc`` channels), the paper's "first sub-block" recipe and our
RDB default: that output feeds every later dense conv of RDB1 and, through RDB1's output,
RDB2 and RDB3, so the scale-aware weighting reaches the whole block for one small MLP
(``fc1: gc + 2*lambda -> 2gc``, ``fc2: 2gc -> gc``; 4,704 parameters per RRDB for
gc=32, lambda=4).  A gate per RDB would triple that with nothing measured in its favour.
Default lambda 4: a scale pair after every ``gc/4`` = 8 features for gc=32, the same
chunk size as RDN's lambda 8 on G=64.

The residual scales (0.2) are the upstream constants; the conversion-time equivalence
check refuses a look-alike whose forward uses others.
"""
from __future__ import annotations

import torch
from torch import nn

from .base import (AnySRBlock, DenseColumns, StaticBlock, activate, add_residual, channel_mask, check_activation,
                   check_conv, sliced_conv, static_activation, static_conv)

#: attribute names of the three dense blocks, per upstream variant
RDB_NAMES = (("RDB1", "RDB2", "RDB3"), ("rdb1", "rdb2", "rdb3"))
#: dense convs (conv1..conv4 write the growth); conv5 fuses back to nf
DENSE = 4
CONV_NAMES = tuple(f"conv{k}" for k in range(1, DENSE + 2))
#: upstream residual scaling of each RDB and of the RRDB
RES_SCALE = 0.2


def _rdb_problem(rdb: nn.Module, what: str, nf: int, gc: int):
    extra = sorted(set(rdb._modules) - set(CONV_NAMES) - {"lrelu"})
    if extra:
        return f"{what} has extra layer(s) {', '.join(extra)}; expected conv1..conv5 and lrelu"
    for k, name in enumerate(CONV_NAMES):
        conv = getattr(rdb, name, None)
        last = k == DENSE
        problem = check_conv(conv, f"{what}.{name}", in_ch=nf + k * gc, out_ch=nf if last else gc)
        if problem:
            return problem
    return check_activation(getattr(rdb, "lrelu", None), f"{what}.lrelu", gc)


class AnySRRRDB(DenseColumns, AnySRBlock):
    family = "rrdb"
    default_lam = 4
    name_pattern = r"(?i)^rrdb$"

    @staticmethod
    def _names(module: nn.Module):
        for names in RDB_NAMES:
            if all(isinstance(getattr(module, n, None), nn.Module) for n in names):
                return names
        return None

    @classmethod
    def structure_problem(cls, module: nn.Module):
        names = cls._names(module)
        if names is None:
            return "has no dense blocks RDB1, RDB2, RDB3 (or rdb1, rdb2, rdb3)"
        extra = sorted(set(module._modules) - set(names))
        if extra:
            return f"has layer(s) {', '.join(extra)} besides {', '.join(names)}"
        first = getattr(getattr(module, names[0]), "conv1", None)
        if not isinstance(first, nn.Conv2d):
            return f"{names[0]}.conv1 is {type(first).__name__}, expected a plain nn.Conv2d"
        nf, gc = first.in_channels, first.out_channels
        for name in names:
            problem = _rdb_problem(getattr(module, name), name, nf, gc)
            if problem:
                return problem
        return None

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:
        return getattr(module, cls._names(module)[0]).conv1.out_channels

    @classmethod
    def input_channels(cls, module: nn.Module) -> int:
        return getattr(module, cls._names(module)[0]).conv1.in_channels

    def _adopt(self, block: nn.Module) -> None:
        self.rdb_names = self._names(block)
        for name in self.rdb_names:
            setattr(self, name, getattr(block, name))
        self.in_channels = self.input_channels(block)

    @property
    def rdbs(self) -> list:
        return [getattr(self, n) for n in self.rdb_names]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nf={self.in_channels}, blocks={self.rdb_names}"

    def forward_sliced(self, x, g, scale):
        full = g == self.channels
        out = x
        for r, rdb in enumerate(self.rdbs):
            feats = out
            for k in range(DENSE):
                conv = getattr(rdb, CONV_NAMES[k])
                if full:
                    h = conv(feats)
                else:
                    h = sliced_conv(conv, feats, out_channels=g,
                                    in_index=None if k == 0 else self._input_index(g, k, x.device))
                if r == 0 and k == 0:
                    h = self.apply_gate(h, scale, g)
                feats = torch.cat((feats, activate(rdb.lrelu, h)), 1)
            conv5 = getattr(rdb, CONV_NAMES[DENSE])
            x5 = conv5(feats) if full else sliced_conv(conv5, feats, in_index=self._input_index(g, DENSE, x.device))
            out = add_residual(x5, out, RES_SCALE)
        return add_residual(out, x, RES_SCALE)

    def forward_masked(self, x, ns, scale):
        mask = channel_mask(ns, self.channels, x)
        out = x
        for r, rdb in enumerate(self.rdbs):
            feats = out
            for k in range(DENSE):
                h = getattr(rdb, CONV_NAMES[k])(feats) * mask
                if r == 0 and k == 0:
                    h = self.apply_gate_masked(h, scale, ns, mask)
                feats = torch.cat((feats, rdb.lrelu(h) * mask), 1)
            out = add_residual(getattr(rdb, CONV_NAMES[DENSE])(feats), out, RES_SCALE)
        return add_residual(out, x, RES_SCALE)

    def export_static(self, g, scale=None):
        return StaticRRDB(self, g, scale)

    def conv_macs_per_pixel(self, width: float) -> int:
        g, nf = self.width_channels(width), self.in_channels
        macs = 0
        for rdb in self.rdbs:
            for k, name in enumerate(CONV_NAMES):
                kh, kw = getattr(rdb, name).kernel_size
                macs += (nf + k * g) * (nf if k == DENSE else g) * kh * kw
        return macs

    def activations_per_pixel(self, width: float) -> int:
        return len(self.rdb_names) * DENSE * self.width_channels(width)


class _StaticRDB5C(nn.Module):
    """Holds one dense block's sliced convs (conv1..conv5) and its activation."""

    def __init__(self, block: AnySRRRDB, rdb: nn.Module, g: int):
        super().__init__()
        device = rdb.conv1.weight.device
        for k, name in enumerate(CONV_NAMES):
            conv = getattr(rdb, name)
            index = None if k == 0 else block._input_index(g, k, device)
            setattr(self, name, static_conv(conv, out_index=None if k == DENSE else g, in_index=index))
        self.lrelu = static_activation(rdb.lrelu, g)


class StaticRRDB(StaticBlock):
    """RRDB of one growth ``g``: conv k of each RDB reads ``nf + (k-1)*g`` gathered channels;
    the gate (if any) weights RDB1's first dense output."""

    def __init__(self, block: AnySRRRDB, g: int, scale=None):
        super().__init__()
        self.rdb_names = block.rdb_names
        for name, rdb in zip(block.rdb_names, block.rdbs):
            setattr(self, name, _StaticRDB5C(block, rdb, g))
        self.gate = block.static_gate(g, scale)

    def forward(self, x):
        out = x
        for r, name in enumerate(self.rdb_names):
            rdb = getattr(self, name)
            feats = out
            for k in range(DENSE):
                h = getattr(rdb, CONV_NAMES[k])(feats)
                if r == 0 and k == 0 and self.gate is not None:
                    h = self.gate(h)
                feats = torch.cat((feats, rdb.lrelu(h)), 1)
            out = getattr(rdb, CONV_NAMES[DENSE])(feats) * RES_SCALE + out
        return out * RES_SCALE + x


__all__ = ["AnySRRRDB", "StaticRRDB", "RDB_NAMES", "RES_SCALE"]
