"""ESRGAN's residual-in-residual dense block (RRDB), described: a chain of residual dense blocks
inside one outer residual, ``x + s * D_m(...D_1(x))`` with ``D_k(u) = u + s_k * dense_k(u)``.
The encoder block of ESRGAN / BasicSR's ``RRDBNet`` and of the LIIF-derived repositories
that use it as their encoder; any names and any number of dense blocks (dataflow.py).

ESRGAN's layout (attribute names ``RDB1``/``RDB2``/``RDB3``, or ``rdb1``/``rdb2``/``rdb3``
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

The residual scales are whatever the upstream forward applies (0.2 in ESRGAN); the block runs
its own traced forward, so other scales convert as they are.
"""
from __future__ import annotations

from .described import DescribedBlock, StaticDescribedBlock


def unit_names(block) -> tuple:
    """The child names of the chained dense blocks (``("RDB1", "RDB2", "RDB3")``), in order;
    () when a dense block is not one child of its own."""
    names = []
    for unit in block.flow.units:
        firsts = {block.flow.convs[i].target.split(".")[0] for i in unit.convs}
        if len(firsts) != 1 or "." not in block.flow.convs[unit.convs[0]].target:
            return ()
        names.append(firsts.pop())
    return tuple(names)


class StaticRRDB(StaticDescribedBlock):
    """An RRDB of one growth ``g``: conv k of each dense block reads ``nf + (k-1)*g`` gathered
    channels; the gate (if any) weights the first dense output."""

    def __init__(self, block, g: int, scale=None):
        super().__init__(block, g, scale)
        self.rdb_names = block.rdb_names


class AnySRRRDB(DescribedBlock):
    family = shape = "rrdb"
    default_lam = 4
    name_pattern = r"(?i)^rrdb$"
    pattern = "x + s*D_m(...D_1(x)), D_k(u) = u + s_k*dense_k(u)"
    static_class = StaticRRDB

    @property
    def rdb_names(self) -> tuple:
        return unit_names(self)

    @property
    def rdbs(self) -> list:
        return [getattr(self, n) for n in self.rdb_names]

    def extra_repr(self) -> str:
        return super().extra_repr() + f", nf={self.in_channels}, blocks={self.rdb_names}"


__all__ = ["AnySRRRDB", "StaticRRDB", "unit_names"]
