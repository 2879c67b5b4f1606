"""RCAN residual channel-attention block: ``body = [conv, act, conv, CALayer]``, ``x + body(x)``.

Matches LIIF/LTE ``models/rcan.py``, Meta-SR ``model/metarcan.py`` and ArbSR
``model/arbrcan.py`` ``RCAB`` (all ignore ``res_scale`` in forward; so do we).
The slimmable part is the conv pair exactly as in the EDSR block; the CALayer sees
the restored ``C`` channels, so it keeps operating on all channels.
"""
from __future__ import annotations

from torch import nn

from .base import AnySRBlock, add_residual, channel_mask, check_activation, check_conv, sliced_conv


class AnySRRCAB(AnySRBlock):
    family = "rcab"
    name_pattern = r"(?i)^rcab$"

    @classmethod
    def structure_problem(cls, module: nn.Module):
        body = getattr(module, "body", None)
        if not isinstance(body, nn.Sequential):
            return "has no `body` nn.Sequential"
        if len(body) != 4:
            kinds = ", ".join(type(m).__name__ for m in body)
            return f"body has {len(body)} layers [{kinds}], expected [conv, act, conv, channel attention]"
        c = getattr(body[0], "out_channels", None)
        return (check_conv(body[0], "body.0", in_ch=c, out_ch=c) or check_activation(body[1], "body.1")
                or check_conv(body[2], "body.2", in_ch=c, out_ch=c)
                or (None if not isinstance(body[3], (nn.Conv2d, nn.Sequential))
                    else f"body.3 is {type(body[3]).__name__}, expected a channel-attention layer"))

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:
        return module.body[0].out_channels

    def _adopt(self, block: nn.Module) -> None:
        self.body = block.body

    def forward_sliced(self, x, n, scale):
        conv1, act, conv2, attention = self.body[0], self.body[1], self.body[2], self.body[3]
        full = n == self.channels
        h = conv1(x) if full else sliced_conv(conv1, x, out_channels=n)
        h = act(self.apply_gate(h, scale, n))
        res = conv2(h) if full else sliced_conv(conv2, h, in_index=n)
        return add_residual(attention(res), x)

    def forward_masked(self, x, ns, scale):
        conv1, act, conv2, attention = self.body[0], self.body[1], self.body[2], self.body[3]
        mask = channel_mask(ns, self.channels, x)
        h = conv1(x) * mask
        h = act(self.apply_gate_masked(h, scale, ns, mask)) * mask
        return add_residual(attention(conv2(h)), x)

    def conv_macs_per_pixel(self, width: float) -> int:
        n, c = self.width_channels(width), self.channels
        k1 = self.body[0].kernel_size[0] * self.body[0].kernel_size[1]
        k2 = self.body[2].kernel_size[0] * self.body[2].kernel_size[1]
        # the channel attention runs on a pooled 1x1 map: a per-image cost, not per pixel
        return c * n * k1 + n * c * k2
