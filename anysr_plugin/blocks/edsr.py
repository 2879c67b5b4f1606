"""EDSR residual block: ``body = [conv, act, conv]``, ``x + res_scale * body(x)``.

Matches LIIF/LTE/SRNO ``models/edsr.py`` ``ResBlock`` and EDSR-PyTorch / Meta-SR
``common.ResBlock`` (whose single ReLU instance is shared by every block: we call
``body[1]`` as a function, so sharing is harmless), and any renamed class with that
structure (``ResidualBlockNoBN``, ``MyResBlock``, ...).  The first conv is the
"reducing" sub-block (its first ``n = floor(C*w)`` filters), the gate weights its
output, the second conv reads only those ``n`` channels and restores ``C``.  A
per-channel ``PReLU(C)`` between the convs uses the slopes of the ``n`` kept channels.
"""
from __future__ import annotations

from torch import nn

from .base import (AnySRBlock, StaticBlock, activate, add_residual, channel_mask, check_activation, check_conv,
                   sliced_conv, static_activation, static_conv)


def conv_pair_problem(body, length: int, layout: str, hint: str = ""):
    """None if ``body`` is an nn.Sequential starting [conv C->C, act, conv C->C] of `length`."""
    if not isinstance(body, nn.Sequential):
        return "has no `body` nn.Sequential"
    if len(body) != length:
        kinds = ", ".join(type(m).__name__ for m in body)
        return f"body has {len(body)} layers [{kinds}], expected [{layout}]{hint}"
    c = getattr(body[0], "out_channels", None)
    return (check_conv(body[0], "body.0", in_ch=c, out_ch=c) or check_activation(body[1], "body.1", c)
            or check_conv(body[2], "body.2", in_ch=c, out_ch=c))


def conv_pair_macs(conv1: nn.Conv2d, conv2: nn.Conv2d, c: int, n: int) -> int:
    """Per-pixel MACs of conv1 (C -> n) and conv2 (n -> C)."""
    k1 = conv1.kernel_size[0] * conv1.kernel_size[1]
    k2 = conv2.kernel_size[0] * conv2.kernel_size[1]
    return c * n * k1 + n * c * k2


class AnySRResBlock(AnySRBlock):
    family = "edsr"
    default_lam = 4  # paper Sec. III-C: lambda 4 for EDSR
    name_pattern = r"(?i)^res(idual)?_?block$"

    @classmethod
    def structure_problem(cls, module: nn.Module):
        return conv_pair_problem(getattr(module, "body", None), 3, "conv, act, conv",
                                 " (batch norm is not supported)")

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:
        return module.body[0].out_channels

    @classmethod
    def input_channels(cls, module: nn.Module) -> int:
        return module.body[0].in_channels

    def _adopt(self, block: nn.Module) -> None:
        self.body = block.body
        self.res_scale = getattr(block, "res_scale", 1)

    def forward_sliced(self, x, n, scale):
        conv1, act, conv2 = self.body[0], self.body[1], self.body[2]
        full = n == self.channels
        h = conv1(x) if full else sliced_conv(conv1, x, out_channels=n)
        h = self.gate_activation(h, scale, n, act)
        res = conv2(h) if full else sliced_conv(conv2, h, in_index=n)
        return add_residual(res, x, self.res_scale)

    def forward_masked(self, x, ns, scale):
        conv1, act, conv2 = self.body[0], self.body[1], self.body[2]
        mask = channel_mask(ns, self.channels, x)
        h = conv1(x) * mask
        h = act(self.apply_gate_masked(h, scale, ns, mask)) * mask
        return add_residual(conv2(h), x, self.res_scale)

    def export_static(self, n, scale=None):
        return StaticResBlock(self, n, scale)

    def conv_macs_per_pixel(self, width: float) -> int:
        return conv_pair_macs(self.body[0], self.body[2], self.channels, self.width_channels(width))


class StaticResBlock(StaticBlock):
    """EDSR ResBlock of one width: ``x + res_scale * conv2(act(gate(conv1(x))))``, conv1: C -> n."""

    def __init__(self, block: AnySRResBlock, n: int, scale=None):
        super().__init__()
        conv1, act, conv2 = block.body[0], block.body[1], block.body[2]
        self.body = nn.Sequential(static_conv(conv1, out_index=n), static_activation(act, n),
                                  static_conv(conv2, in_index=n))
        self.res_scale = block.res_scale
        self.gate = block.static_gate(n, scale)

    def forward(self, x):
        h = self.body[0](x)
        if self.gate is not None:
            h = self.gate(h)
        res = self.body[2](self.body[1](h))
        return res * self.res_scale + x


__all__ = ["AnySRResBlock", "StaticResBlock"]
