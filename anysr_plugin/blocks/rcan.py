"""RCAN residual channel-attention block: ``body = [conv, act, conv, CALayer]``, ``x + body(x)``.

Matches LIIF/LTE ``models/rcan.py``, Meta-SR ``model/metarcan.py`` and ArbSR
``model/arbrcan.py`` ``RCAB`` (all ignore ``res_scale`` in forward; so do we), and any
renamed class with that structure.  The slimmable part is the conv pair exactly as in
the EDSR block; the CALayer sees the restored ``C`` channels, so it keeps operating on
all channels.
"""
from __future__ import annotations

import copy

from torch import nn

from .base import AnySRBlock, StaticBlock, activate, add_residual, channel_mask, sliced_conv, static_activation, \
    static_conv
from .edsr import conv_pair_macs, conv_pair_problem


class AnySRRCAB(AnySRBlock):
    family = "rcab"
    default_lam = 4
    name_pattern = r"(?i)^rcab$"

    @classmethod
    def structure_problem(cls, module: nn.Module):
        body = getattr(module, "body", None)
        problem = conv_pair_problem(body, 4, "conv, act, conv, channel attention")
        if problem is None and isinstance(body[3], (nn.Conv2d, nn.Sequential)):
            problem = f"body.3 is {type(body[3]).__name__}, expected a channel-attention layer"
        return problem

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:
        return module.body[0].out_channels

    @classmethod
    def input_channels(cls, module: nn.Module) -> int:
        return module.body[0].in_channels

    def _adopt(self, block: nn.Module) -> None:
        self.body = block.body

    def forward_sliced(self, x, n, scale):
        conv1, act, conv2, attention = self.body[0], self.body[1], self.body[2], self.body[3]
        full = n == self.channels
        h = conv1(x) if full else sliced_conv(conv1, x, out_channels=n)
        h = self.gate_activation(h, scale, n, act)
        res = conv2(h) if full else sliced_conv(conv2, h, in_index=n)
        return add_residual(attention(res), x)

    def forward_masked(self, x, ns, scale):
        conv1, act, conv2, attention = self.body[0], self.body[1], self.body[2], self.body[3]
        mask = channel_mask(ns, self.channels, x)
        h = conv1(x) * mask
        h = act(self.apply_gate_masked(h, scale, ns, mask)) * mask
        return add_residual(attention(conv2(h)), x)

    def export_static(self, n, scale=None):
        return StaticRCAB(self, n, scale)

    def conv_macs_per_pixel(self, width: float) -> int:
        # the channel attention runs on a pooled 1x1 map: a per-image cost, not per pixel
        return conv_pair_macs(self.body[0], self.body[2], self.channels, self.width_channels(width))


class StaticRCAB(StaticBlock):
    """RCAB of one width: ``x + CA(conv2(act(gate(conv1(x)))))``; the CALayer keeps all C channels."""

    def __init__(self, block: AnySRRCAB, n: int, scale=None):
        super().__init__()
        conv1, act, conv2, att = block.body[0], block.body[1], block.body[2], block.body[3]
        self.body = nn.Sequential(static_conv(conv1, out_index=n), static_activation(act, n),
                                  static_conv(conv2, in_index=n), copy.deepcopy(att))
        self.gate = block.static_gate(n, scale)

    def forward(self, x):
        h = self.body[0](x)
        if self.gate is not None:
            h = self.gate(h)
        return self.body[3](self.body[2](self.body[1](h))) + x


__all__ = ["AnySRRCAB", "StaticRCAB"]
