"""EDSR residual block: ``body = [conv, act, conv]``, ``x + res_scale * body(x)``.

Matches LIIF/LTE/SRNO ``models/edsr.py`` ``ResBlock`` and EDSR-PyTorch / Meta-SR
``common.ResBlock`` (whose single ReLU instance is shared by every block: we call
``body[1]`` as a function, so sharing is harmless).  The first conv is the
"reducing" sub-block (its first ``n = floor(C*w)`` filters), the gate weights its
output, the second conv reads only those ``n`` channels and restores ``C``.
"""
from __future__ import annotations

from torch import nn

from .base import AnySRBlock, add_residual, channel_mask, check_activation, check_conv, sliced_conv


class AnySRResBlock(AnySRBlock):
    family = "edsr"
    name_pattern = r"(?i)^res(idual)?_?block$"

    @classmethod
    def structure_problem(cls, module: nn.Module):
        body = getattr(module, "body", None)
        if not isinstance(body, nn.Sequential):
            return "has no `body` nn.Sequential"
        if len(body) != 3:
            kinds = ", ".join(type(m).__name__ for m in body)
            return f"body has {len(body)} layers [{kinds}], expected [conv, act, conv] (batch norm is not supported)"
        c = getattr(body[0], "out_channels", None)
        return (check_conv(body[0], "body.0", in_ch=c, out_ch=c) or check_activation(body[1], "body.1")
                or check_conv(body[2], "body.2", in_ch=c, out_ch=c))

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:
        return module.body[0].out_channels

    def _adopt(self, block: nn.Module) -> None:
        self.body = block.body
        self.res_scale = getattr(block, "res_scale", 1)

    def forward_sliced(self, x, n, scale):
        conv1, act, conv2 = self.body[0], self.body[1], self.body[2]
        full = n == self.channels
        h = conv1(x) if full else sliced_conv(conv1, x, out_channels=n)
        h = act(self.apply_gate(h, scale, n))
        res = conv2(h) if full else sliced_conv(conv2, h, in_index=n)
        return add_residual(res, x, self.res_scale)

    def forward_masked(self, x, ns, scale):
        conv1, act, conv2 = self.body[0], self.body[1], self.body[2]
        mask = channel_mask(ns, self.channels, x)
        h = conv1(x) * mask
        h = act(self.apply_gate_masked(h, scale, ns, mask)) * mask
        return add_residual(conv2(h), x, self.res_scale)

    def conv_macs_per_pixel(self, width: float) -> int:
        n, c = self.width_channels(width), self.channels
        k1 = self.body[0].kernel_size[0] * self.body[0].kernel_size[1]
        k2 = self.body[2].kernel_size[0] * self.body[2].kernel_size[1]
        return c * n * k1 + n * c * k2
