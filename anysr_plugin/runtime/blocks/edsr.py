"""The EDSR residual block, described by what it computes: ``x + s * conv_b(act(conv_a(x)))``.

Every layout of that computation converts, with no code per layout: LIIF / LTE / SRNO /
EDSR-PyTorch / Meta-SR ``ResBlock`` (``body = [conv, act, conv]``, ``res_scale``; the single
ReLU instance EDSR-PyTorch shares between blocks is harmless), BasicSR / MMEditing
``ResidualBlockNoBN`` (``conv1``, ``relu``, ``conv2``; ``identity + out * res_scale``), the
convolutions in a ModuleList or any Sequential, functional or module activations, a residual
scale that is a number, a buffer, a learned scalar or absent, and the residual written as
``x + out``, ``out + x``, ``torch.add`` or ``out.mul(s).add(x)`` (dataflow.py).

``conv_a`` is the paper's reducing sub-block: at width w it keeps its first ``n = floor(C*w)``
filters; the gate weights its output (before the activation); ``conv_b`` reads only those
``n`` channels and restores ``C``.  A per-channel ``PReLU(C)`` between them uses the slopes of
the ``n`` kept channels.
"""
from __future__ import annotations

from .described import DescribedBlock, StaticDescribedBlock


def scale_value(block, scales) -> float:
    """The product of a dataflow's residual scale terms, buffers and parameters read now."""
    value = 1.0
    for op, term in scales:
        if isinstance(term, str):
            obj = block
            for part in term.split("."):
                obj = getattr(obj, part)
            term = float(obj)
        value = value * term if op == "mul" else value / term
    return value


class StaticResBlock(StaticDescribedBlock):
    """An EDSR block of one width: ``conv_a`` has ``n`` filters, ``conv_b`` reads ``n`` channels."""


class AnySRResBlock(DescribedBlock):
    family = shape = "edsr"
    default_lam = 4  # paper Sec. III-C: lambda 4 for EDSR
    name_pattern = r"(?i)^res(idual)?_?block$"
    pattern = "x + s*conv_b(act(conv_a(x)))"
    static_class = StaticResBlock

    @property
    def res_scale(self) -> float:
        """The residual scale ``s`` the forward applies (1.0 when it applies none)."""
        return scale_value(self, self.flow.scales)


__all__ = ["AnySRResBlock", "StaticResBlock", "scale_value"]
