"""Look-alike encoders of the upstream repos, written here from the documented facts.

They mirror the upstream class names, attribute names, state_dict key patterns and
forward semantics (docs/upstream.md) so the plugin is tested on exactly the structures it meets upstream:

* ``EDSR``: ``sub_mean``/``add_mean`` (unused in forward, as in LIIF), ``head.0``,
  ``body.{i}.body.{0,2}`` ResBlocks with ``res_scale``, trailing ``body.{n}`` conv;
  ``shared_act=True`` reproduces EDSR-PyTorch/Meta-SR's single ReLU shared by all blocks.
* ``RDN``: ``SFENet1/2``, ``RDBs.{d}.convs.{c}.conv.0``, ``RDBs.{d}.LFF``, ``GFF.{0,1}``.
* ``RCAN``: ``head.0``, ``body.{g}.body.{b}.body.{0,2,3}`` RCABs with ``CALayer.conv_du``.

All run at LR resolution (``no_upsampling``) and return ``out_dim`` feature channels.
"""
from __future__ import annotations

import torch
from torch import nn

from .registry import MODELS


def default_conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Conv2d):
    """Frozen 1x1 colour shift (present in the state_dict, unused in forward, as upstream)."""

    def __init__(self, rgb_range=1, rgb_mean=(0.4488, 0.4371, 0.4040), rgb_std=(1.0, 1.0, 1.0), sign=-1):
        super().__init__(3, 3, kernel_size=1)
        std = torch.tensor(rgb_std)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
        self.bias.data = sign * rgb_range * torch.tensor(rgb_mean) / std
        for p in self.parameters():
            p.requires_grad = False


class ResBlock(nn.Module):
    def __init__(self, conv, n_feats, kernel_size, bias=True, act=None, res_scale=1.0):
        super().__init__()
        act = nn.ReLU(True) if act is None else act
        self.body = nn.Sequential(conv(n_feats, n_feats, kernel_size, bias=bias), act,
                                  conv(n_feats, n_feats, kernel_size, bias=bias))
        self.res_scale = res_scale

    def forward(self, x):
        res = self.body(x).mul(self.res_scale)
        res += x
        return res


class EDSR(nn.Module):
    def __init__(self, n_resblocks=16, n_feats=64, res_scale=1.0, n_colors=3, rgb_range=1,
                 shared_act=False, conv=default_conv):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv(n_colors, n_feats, 3))
        act = nn.ReLU(True)
        blocks = [ResBlock(conv, n_feats, 3, act=act if shared_act else None, res_scale=res_scale)
                  for _ in range(n_resblocks)]
        self.body = nn.Sequential(*blocks, conv(n_feats, n_feats, 3))
        self.out_dim = n_feats

    def forward(self, x):
        x = self.head(x)
        res = self.body(x)
        res += x
        return res


def make_edsr_baseline(n_resblocks=16, n_feats=64, res_scale=1.0, **kw) -> EDSR:
    return EDSR(n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale, **kw)


def make_edsr(n_resblocks=32, n_feats=256, res_scale=0.1, **kw) -> EDSR:
    return EDSR(n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale, **kw)


class RDB_Conv(nn.Module):
    def __init__(self, in_channels, grow_rate, k_size=3):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, grow_rate, k_size, padding=(k_size - 1) // 2, stride=1),
                                  nn.ReLU())

    def forward(self, x):
        out = self.conv(x)
        return torch.cat((x, out), 1)


class RDB(nn.Module):
    def __init__(self, grow_rate0, grow_rate, n_conv_layers, k_size=3):
        super().__init__()
        self.convs = nn.Sequential(*[RDB_Conv(grow_rate0 + c * grow_rate, grow_rate, k_size)
                                     for c in range(n_conv_layers)])
        self.LFF = nn.Conv2d(grow_rate0 + n_conv_layers * grow_rate, grow_rate0, 1, padding=0, stride=1)

    def forward(self, x):
        return self.LFF(self.convs(x)) + x


RDN_CONFIGS = {"A": (20, 6, 32), "B": (16, 8, 64)}


class RDN(nn.Module):
    def __init__(self, G0=64, RDNkSize=3, RDNconfig="B", D=None, C=None, G=None, n_colors=3):
        super().__init__()
        d, c, g = RDN_CONFIGS[RDNconfig]
        self.D, C, G = D or d, C or c, G or g
        k = RDNkSize
        self.SFENet1 = nn.Conv2d(n_colors, G0, k, padding=(k - 1) // 2, stride=1)
        self.SFENet2 = nn.Conv2d(G0, G0, k, padding=(k - 1) // 2, stride=1)
        self.RDBs = nn.ModuleList([RDB(G0, G, C) for _ in range(self.D)])
        self.GFF = nn.Sequential(nn.Conv2d(self.D * G0, G0, 1, padding=0, stride=1),
                                 nn.Conv2d(G0, G0, k, padding=(k - 1) // 2, stride=1))
        self.out_dim = G0

    def forward(self, x):
        f__1 = self.SFENet1(x)
        x = self.SFENet2(f__1)
        outs = []
        for i in range(self.D):
            x = self.RDBs[i](x)
            outs.append(x)
        x = self.GFF(torch.cat(outs, 1))
        x += f__1
        return x


class CALayer(nn.Module):
    def __init__(self, channel, reduction=16):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(nn.Conv2d(channel, channel // reduction, 1, padding=0, bias=True),
                                     nn.ReLU(inplace=True),
                                     nn.Conv2d(channel // reduction, channel, 1, padding=0, bias=True),
                                     nn.Sigmoid())

    def forward(self, x):
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    def __init__(self, conv, n_feat, kernel_size, reduction, bias=True, res_scale=1):
        super().__init__()
        self.body = nn.Sequential(conv(n_feat, n_feat, kernel_size, bias=bias), nn.ReLU(True),
                                  conv(n_feat, n_feat, kernel_size, bias=bias), CALayer(n_feat, reduction))
        self.res_scale = res_scale  # stored, unused in forward (as upstream)

    def forward(self, x):
        res = self.body(x)
        res += x
        return res


class ResidualGroup(nn.Module):
    def __init__(self, conv, n_feat, kernel_size, reduction, n_resblocks):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(conv, n_feat, kernel_size, reduction) for _ in range(n_resblocks)],
                                  conv(n_feat, n_feat, kernel_size))

    def forward(self, x):
        res = self.body(x)
        res += x
        return res


class RCAN(nn.Module):
    def __init__(self, n_resgroups=10, n_resblocks=20, n_feats=64, reduction=16, rgb_range=1, n_colors=3,
                 conv=default_conv):
        super().__init__()
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        self.head = nn.Sequential(conv(n_colors, n_feats, 3))
        self.body = nn.Sequential(*[ResidualGroup(conv, n_feats, 3, reduction, n_resblocks)
                                    for _ in range(n_resgroups)], conv(n_feats, n_feats, 3))
        self.out_dim = n_feats

    def forward(self, x):
        x = self.head(x)
        res = self.body(x)
        res += x
        return res


def _at_lr_size(build):
    """A builder for the registry: LIIF-style encoder specs pass ``no_upsampling`` and ``scale``,
    which the look-alikes (always at LR resolution) take no notice of."""
    def make(no_upsampling=None, scale=None, **kwargs):
        return build(**kwargs)
    return make


MODELS.register("edsr-baseline", _at_lr_size(make_edsr_baseline))
MODELS.register("edsr", _at_lr_size(make_edsr))
MODELS.register("rdn", _at_lr_size(RDN))
MODELS.register("rcan", _at_lr_size(RCAN))

__all__ = ["EDSR", "ResBlock", "MeanShift", "make_edsr_baseline", "make_edsr", "RDN", "RDB", "RDB_Conv",
           "RCAN", "RCAB", "CALayer", "ResidualGroup"]
