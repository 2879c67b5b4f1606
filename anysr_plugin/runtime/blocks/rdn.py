"""The residual dense block, described: ``x + s * fuse(cat(x, g_1, ..., g_k))`` with growth layers
``g_i = act(conv_i(cat(x, g_1, ..., g_{i-1})))``.

Matches LIIF / LTE / SRNO ``models/rdn.py`` and Meta-SR / EDSR-PyTorch ``RDB`` (dense layers
``convs.k.conv = [conv, act]``, 1x1 ``LFF``), MMEditing's RDB (dense layers under ``layers``,
the fusion conv ``lff``), ESRGAN's five-conv dense block (``conv1..conv5``, LeakyReLU,
``x + x5 * 0.2``; a 3x3 fusion) and any other names or containers (dataflow.py).

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

from .described import DescribedBlock, StaticDescribedBlock


class StaticRDB(StaticDescribedBlock):
    """A residual dense block of one growth ``g``: dense layer k reads ``G0 + k*g`` gathered channels."""


class AnySRRDB(DescribedBlock):
    family = shape = "rdb"
    default_lam = 8  # paper Sec. III-C: lambda 8 for RDN
    name_pattern = r"(?i)^rdb$"
    pattern = "x + s*fuse(cat(x, g_1..g_k)), g_i = act(conv_i(cat(x, g_1..g_(i-1))))"
    static_class = StaticRDB

    @classmethod
    def gate_region_of(cls, flow, config) -> int:
        """``rdb_gate="first"``: the first dense layer; ``"last"``: the last one."""
        return flow.units[0].regions[0 if config.rdb_gate == "first" else -1]

    @property
    def gate_layer(self) -> int:
        """Index of the dense layer that carries the gate."""
        return self.flow.units[0].regions.index(self.gate_region)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", layers={len(self.flow.units[0].regions)}, gate_layer={self.gate_layer}"


__all__ = ["AnySRRDB", "StaticRDB"]
