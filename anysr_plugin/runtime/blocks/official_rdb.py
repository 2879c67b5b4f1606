"""The official AnySR release's RDB layout (``RDB_any``), opt-in: ``AnySRConfig(compat="official")``.

Written here from documented facts about the release's ``RDB_any`` (its code read, not copied).
anysrify uses this class for RDBs only in compat mode (the release's policy, ``glue/official.py``:
``ReleasePolicy.block_type``); the default path keeps the paper-faithful
:class:`~anysr_plugin.blocks.rdn.AnySRRDB`.

Layout of one RDB with ``C = 8`` dense layers of growth ``G`` on ``G0`` input channels,
at width ``w`` with ``g = floor(G*w)`` (0.7/0.8/0.9/1.0 -> 44/51/57/64 for G = 64):

* dense layers 0-3 are not sliced (full ``G`` outputs, full inputs);
* layer 4 writes its first ``g`` filters (reads its full input);
* layers 5, 6, 7 read a **prefix** of their input columns (as many as the concatenation
  holds); 5 and 7 write all ``G`` filters, 6 writes its first ``g``;
* ``LFF`` reads a prefix of its columns (``G0 + 6G + 2g``: 536/550/562/576);
* the gate sits on the **last 2g channels of the dense concatenation, after the ReLUs**
  (the concatenation is split at the fixed column ``G0 + 6G``), pools them, interweaves the
  scale pair, and multiplies them channel-wise before ``LFF``.  It is an
  :class:`~anysr_plugin.gate.InterweavingGate` over ``2G`` channels with lambda 8: for
  G = 64 that is the release's ``fc1`` 144 -> 256, ``fc2`` 256 -> 128 (rows ``[:2g]``) and
  its scale pair after every 16 features (fc1 input 98/114/128/144).

Prefix slicing is *not* position-consistent here (the release's choice, reproduced on
purpose): at w < 1 the columns after layer 4's slot shift meaning, and the gated tail is
the end of layer 6's output plus all of layer 7's.  A batch with several widths is run
per width group (exact; the shifted layouts have no single masked full-size pass).
``export_subnet`` does not cover this layout (it raises).

Parameter names are the upstream ones (``convs.{k}.conv.0``, ``LFF``) plus
``anysr_gate.fc1`` / ``anysr_gate.fc2``; the release's ``RDBs.{i}.fc1`` / ``fc2`` (1x1
convolutions) map onto them (``adapters/official_release.py``).
"""
from __future__ import annotations

import torch

from ..errors import AnySRError
from ..gate import InterweavingGate
from .base import activate, sliced_conv
from .rdn import AnySRRDB

#: dense layers of the release's RDB (RDN config B)
RELEASE_LAYERS = 8
#: layers that write only their first g filters
SLICED_OUTPUT = (4, 6)
#: layers (and LFF) that read a prefix of their input columns
PREFIX_INPUT = (5, 6, 7)
NO_EXPORT = ("the official release's RDB layout (compat='official') reads shifting prefixes, not gathered "
             "columns; export_subnet does not support it (convert with the default compat=None to export)")
#: the concatenation is split before the gated tail at G0 + GATE_SPLIT_LAYERS * G
GATE_SPLIT_LAYERS = 6


class OfficialRDB(AnySRRDB):
    """RDB converted to the release's ``RDB_any`` layout (compat mode only)."""

    gate_layer = None  # the gate is on the concatenation's tail, not on one dense layer

    @classmethod
    def structure_problem(cls, module):
        problem = super().structure_problem(module)
        if problem is None and not (isinstance(getattr(module, "convs", None), torch.nn.Sequential)
                                    and isinstance(getattr(module, "LFF", None), torch.nn.Conv2d)):
            problem = ("compat='official' reproduces the release's RDN layout (dense layers `convs.k.conv`, "
                       "fusion `LFF`); this residual dense block is laid out otherwise")
        elif problem is None and len(module.convs) != RELEASE_LAYERS:
            problem = (f"has {len(module.convs)} dense layers; the official release's RDB layout "
                       f"(compat='official') needs exactly {RELEASE_LAYERS} (RDN config B)")
        return problem

    def __init__(self, block, config, state=None):
        super().__init__(block, config, state)
        if self.anysr_gate is not None:  # re-made over the last 2G channels of the concatenation
            param = next(block.parameters())
            self.anysr_gate = InterweavingGate(2 * self.channels, self.lam, config.interweave, config.gate,
                                               device=param.device, dtype=param.dtype)
            self.anysr_gate.train(block.training)

    def gated_channels_at(self, width: float) -> int:
        return 2 * self.width_channels(width)  # the last two dense outputs' slices

    def extra_repr(self) -> str:
        return (f"family={self.family!r}, channels={self.channels}, widths={self.widths}, "
                f"layers={len(self.convs)}, layout='official'")

    def export_static(self, g, scale=None):
        raise AnySRError(NO_EXPORT)

    def forward_sliced(self, x, g, scale):
        full = g == self.channels
        feats = x
        for k, layer in enumerate(self.convs):
            conv, act = layer.conv[0], layer.conv[1]
            if full or k < min(SLICED_OUTPUT):
                out = conv(feats)
            else:
                out = sliced_conv(conv, feats, out_channels=g if k in SLICED_OUTPUT else None,
                                  in_index=feats.shape[1] if k in PREFIX_INPUT else None)
            feats = torch.cat((feats, activate(act, out)), 1)
        split = self.in_channels + GATE_SPLIT_LAYERS * self.channels
        if self.anysr_gate is not None:
            tail = feats[:, split:]
            feats = torch.cat((feats[:, :split], tail * self.anysr_gate(tail, scale, tail.shape[1])), 1)
        if full:
            return self.LFF(feats) + x
        return sliced_conv(self.LFF, feats, in_index=feats.shape[1]) + x

    def forward_masked(self, x, ns, scale):
        out = None
        for g in sorted(set(ns)):
            rows = torch.tensor([b for b, n in enumerate(ns) if n == g], device=x.device)
            y = self.forward_sliced(x.index_select(0, rows), g, scale.index_select(0, rows))
            out = (x.new_zeros((x.shape[0],) + y.shape[1:]) if out is None else out).index_put((rows,), y)
        return out

    def conv_macs_per_pixel(self, width: float) -> int:
        g, G0, G = self.width_channels(width), self.in_channels, self.channels
        cin, macs = G0, 0
        for k, layer in enumerate(self.convs):
            kh, kw = layer.conv[0].kernel_size
            out = g if k in SLICED_OUTPUT else G
            macs += cin * out * kh * kw
            cin += out
        kh, kw = self.LFF.kernel_size
        return macs + cin * G0 * kh * kw


__all__ = ["OfficialRDB"]
