"""Look-alikes of ESRGAN's RRDB and of an RRDBNet encoder, written from the well-known
structure (not copied), in the two common attribute layouts:

* ESRGAN: ``ResidualDenseBlock_5C`` (conv1..conv5, lrelu), ``RRDB`` with ``RDB1..RDB3``,
  ``RRDBNet`` with ``conv_first``, ``RRDB_trunk``, ``trunk_conv``;
* BasicSR style: ``ResidualDenseBlock``, ``RRDB`` with ``rdb1..rdb3``, ``RRDBNet`` with
  ``conv_first``, ``body``, ``conv_body``.

As LIIF-derived repositories use it, the encoder stops before upsampling
(``fea + trunk``) and reports ``out_dim = nf``.
"""
from __future__ import annotations

import torch
from torch import nn


class ResidualDenseBlock_5C(nn.Module):
    def __init__(self, nf=16, gc=8, bias=True):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, 1, 1, bias=bias)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, 1, 1, bias=bias)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, 1, 1, bias=bias)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, 1, 1, bias=bias)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, 1, 1, bias=bias)
        self.lrelu = nn.LeakyReLU(negative_slope=0.2, inplace=True)

    def forward(self, x):
        x1 = self.lrelu(self.conv1(x))
        x2 = self.lrelu(self.conv2(torch.cat((x, x1), 1)))
        x3 = self.lrelu(self.conv3(torch.cat((x, x1, x2), 1)))
        x4 = self.lrelu(self.conv4(torch.cat((x, x1, x2, x3), 1)))
        x5 = self.conv5(torch.cat((x, x1, x2, x3, x4), 1))
        return x5 * 0.2 + x


class RRDB(nn.Module):
    """ESRGAN layout: RDB1, RDB2, RDB3."""

    def __init__(self, nf=16, gc=8):
        super().__init__()
        self.RDB1 = ResidualDenseBlock_5C(nf, gc)
        self.RDB2 = ResidualDenseBlock_5C(nf, gc)
        self.RDB3 = ResidualDenseBlock_5C(nf, gc)

    def forward(self, x):
        out = self.RDB1(x)
        out = self.RDB2(out)
        out = self.RDB3(out)
        return out * 0.2 + x


class RRDBNet(nn.Module):
    """ESRGAN's RRDBNet as an encoder (no upsampling)."""

    def __init__(self, in_nc=3, nf=16, nb=2, gc=8):
        super().__init__()
        self.conv_first = nn.Conv2d(in_nc, nf, 3, 1, 1, bias=True)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.out_dim = nf

    def forward(self, x):
        fea = self.conv_first(x)
        trunk = self.trunk_conv(self.RRDB_trunk(fea))
        return fea + trunk


class ResidualDenseBlock(ResidualDenseBlock_5C):
    """BasicSR-style name of the same dense block."""


class BasicRRDB(nn.Module):
    """BasicSR layout: rdb1, rdb2, rdb3 (class named RRDB upstream; renamed here, so the
    structure alone must be recognised)."""

    def __init__(self, nf=16, gc=8):
        super().__init__()
        self.rdb1 = ResidualDenseBlock(nf, gc)
        self.rdb2 = ResidualDenseBlock(nf, gc)
        self.rdb3 = ResidualDenseBlock(nf, gc)

    def forward(self, x):
        out = self.rdb1(x)
        out = self.rdb2(out)
        out = self.rdb3(out)
        return out * 0.2 + x


class BasicRRDBNet(nn.Module):
    """BasicSR-style RRDBNet as an encoder: conv_first, body, conv_body."""

    def __init__(self, num_in_ch=3, num_feat=16, num_block=2, num_grow_ch=8):
        super().__init__()
        self.conv_first = nn.Conv2d(num_in_ch, num_feat, 3, 1, 1)
        self.body = nn.Sequential(*[BasicRRDB(num_feat, num_grow_ch) for _ in range(num_block)])
        self.conv_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.out_dim = num_feat

    def forward(self, x):
        feat = self.conv_first(x)
        body_feat = self.conv_body(self.body(feat))
        return feat + body_feat


def esrgan_encoder(**kw):
    return RRDBNet(**kw)


def basicsr_encoder(nf=16, nb=2, gc=8):
    return BasicRRDBNet(num_feat=nf, num_block=nb, num_grow_ch=gc)


ENCODERS = {"esrgan": esrgan_encoder, "basicsr": basicsr_encoder}
