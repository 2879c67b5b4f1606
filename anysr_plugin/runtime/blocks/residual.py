"""Any other residual conv block the dataflow explains: ``x + s * [CA](T(x))`` with ``T`` a chain
of three or more convolutions, parallel convolutions joined by a concatenation, or a dense
block with a channel attention.

Why a catch-all: "any residual CNN block layout converts" includes layouts none of the named
patterns cover, and the parse in dataflow.py already proves what matters for slicing: every
sliced channel is read only by convolutions of the block, and the block's output is its input
plus one branch.  It takes only what no named pattern describes (the dataflow decides, not the lookup order),
with the paper's lambda 4
and the gate on the first region (the first reducing convolution's output).
"""
from __future__ import annotations

from .described import DescribedBlock, StaticDescribedBlock


class StaticResidualBlock(StaticDescribedBlock):
    """A generic residual conv block of one width."""


class AnySRResidualBlock(DescribedBlock):
    family = shape = "residual"
    default_lam = 4
    pattern = "x + s*[CA](T(x)), T a conv network whose inner channels only its convolutions read"
    static_class = StaticResidualBlock


__all__ = ["AnySRResidualBlock", "StaticResidualBlock"]
