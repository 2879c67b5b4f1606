"""The RCAN residual channel-attention block, described: ``x + s * CA(conv_b(act(conv_a(x))))``.

``CA(t) = t * A(t)`` with ``A`` any computation that starts with a global pooling of ``t``
(RCAN's ``CALayer``: pool, 1x1 C -> C/r, ReLU, 1x1 C/r -> C, sigmoid; squeeze-and-excitation
with linear layers alike).  Matches LIIF / LTE ``models/rcan.py``, Meta-SR ``metarcan``, ArbSR
``arbrcan`` and BasicSR ``RCAB`` (``rcab = Sequential(conv, ReLU, conv, ChannelAttention)``)
under any names.  The conv pair is sliced exactly as in the EDSR block; the attention sees the
restored ``C`` channels, so it keeps operating on all channels.
"""
from __future__ import annotations

from .described import DescribedBlock, StaticDescribedBlock


class StaticRCAB(StaticDescribedBlock):
    """An RCAB of one width; its channel attention keeps all C channels."""


class AnySRRCAB(DescribedBlock):
    family = shape = "rcab"
    default_lam = 4
    name_pattern = r"(?i)^rcab$"
    pattern = "x + s*CA(conv_b(act(conv_a(x))))"
    static_class = StaticRCAB


__all__ = ["AnySRRCAB", "StaticRCAB"]
