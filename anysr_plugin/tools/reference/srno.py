"""A look-alike of upstream SRNO (``srno:models/sronet.py``, ``models/galerkin.py``).

Written here from the documented facts (docs/upstream.md; docs/reference-models.md for the Galerkin block):

* ``SRNO(encoder_spec, width=256, blocks=16)``; ``conv00`` is a 1x1 conv from
  ``(C + 2) * 4 + 2`` channels (266 for the 64-channel encoders upstream hard-codes) to
  ``width``; ``conv0``/``conv1`` are Galerkin attention blocks ``simple_attn(width, blocks)``
  with ``qkv_proj``, ``o_proj1``, ``o_proj2``, ``kln``, ``vln`` (per-head LayerNorm affine
  of shape ``(heads, 1, head_channels)``); ``fc1`` (width -> 256, upstream's fixed hidden
  size), ``fc2`` (256 -> 3).
* The Galerkin block computes ``x + MLP(x + attn(x))`` -- the MLP's residual is the block
  *input*, not the attention output -- and its key/value LayerNorm divides by
  ``std + eps`` with the **unbiased** standard deviation (``Tensor.std``), not by
  ``sqrt(var + eps)``.  A standard ``nn.LayerNorm`` here would load upstream weights with
  every key matched and compute a different function (see docs/reference-models.md).
* ``query_rgb(coord (B, H, W, 2), cell (B, 2)) -> (B, 3, H, W)``: the four nearest latent
  codes, area-weighted, with their relative coordinates and the relative cell
  ``cell * (H_feat, W_feat)``, then ``conv00 -> conv0 -> conv1 -> fc2(gelu(fc1))`` plus a
  bilinear upsampling of the LR input.
* The attention is global over the queried positions, so results depend on how the
  queries are chunked (as upstream).

Nothing is hard-wired to CUDA: coordinates follow ``feat``'s device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...runtime.errors import ConfigError
from ..coords import make_coord
from .registry import MODELS, make


class HeadLayerNorm(nn.Module):
    """Upstream SRNO's LayerNorm: ``(x - mean) / (std + eps)`` over the last axis, ``std``
    unbiased (Bessel-corrected), then a per-head affine of shape (heads, 1, head_channels)."""

    def __init__(self, shape, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(dim=-1, keepdim=True)
        std = x.std(dim=-1, keepdim=True)  # unbiased, as upstream
        return (x - mean) / (std + self.eps) * self.weight + self.bias


class simple_attn(nn.Module):  # noqa: N801 - upstream class name
    """Galerkin-type linear attention over all positions, then a 1x1 MLP:
    ``y = x + attn(x)``, output ``x + MLP(y)`` (both residuals are the block input ``x``)."""

    def __init__(self, midc, heads):
        super().__init__()
        if midc % heads:
            raise ConfigError(f"simple_attn: width {midc} is not divisible by blocks (heads) {heads}")
        self.heads = heads
        self.headc = midc // heads
        self.qkv_proj = nn.Conv2d(midc, 3 * midc, 1)
        self.o_proj1 = nn.Conv2d(midc, midc, 1)
        self.o_proj2 = nn.Conv2d(midc, midc, 1)
        self.kln = HeadLayerNorm((heads, 1, self.headc))
        self.vln = HeadLayerNorm((heads, 1, self.headc))
        self.act = nn.GELU()

    def forward(self, x, name="0"):
        b, c, h, w = x.shape
        qkv = self.qkv_proj(x).permute(0, 2, 3, 1).reshape(b, h * w, self.heads, 3 * self.headc)
        q, k, v = qkv.permute(0, 2, 1, 3).chunk(3, dim=-1)      # (B, heads, HW, headc) each
        k, v = self.kln(k), self.vln(v)
        kv = torch.matmul(k.transpose(-2, -1), v) / (h * w)     # (B, heads, headc, headc)
        att = torch.matmul(q, kv).permute(0, 2, 1, 3).reshape(b, h, w, c).permute(0, 3, 1, 2)
        y = att + x
        return self.o_proj2(self.act(self.o_proj1(y))) + x


class SRNO(nn.Module):
    #: upstream's fc1 / fc2 hidden size (fixed, whatever ``width`` is)
    HIDDEN = 256

    def __init__(self, encoder_spec=None, width=256, blocks=16, encoder: nn.Module | None = None):
        super().__init__()
        if (encoder_spec is None) == (encoder is None):
            raise ConfigError("SRNO needs exactly one of encoder_spec (a {'name','args'} spec) or encoder (a module)")
        self.width = width
        self.encoder = make(encoder_spec) if encoder is None else encoder
        feat_dim = self.encoder.out_dim
        self.conv00 = nn.Conv2d((feat_dim + 2) * 4 + 2, width, 1)
        self.conv0 = simple_attn(width, blocks)
        self.conv1 = simple_attn(width, blocks)
        self.fc1 = nn.Conv2d(width, self.HIDDEN, 1)
        self.fc2 = nn.Conv2d(self.HIDDEN, 3, 1)

    def gen_feat(self, inp):
        self.inp = inp
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, coord, cell):
        feat = self.feat
        b, c, h, w = feat.shape
        qh, qw = coord.shape[1:3]
        pos_lr = make_coord((h, w), flatten=False).to(feat).permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)
        rh, rw = 1.0 / h, 1.0 / w
        rel_coords, feats, areas = [], [], []
        for vh in (-1, 1):
            for vw in (-1, 1):
                shifted = coord.clone()
                shifted[..., 0] += vh * rh + 1e-6
                shifted[..., 1] += vw * rw + 1e-6
                shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
                grid = shifted.flip(-1)
                q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)
                q_coord = F.grid_sample(pos_lr, grid, mode="nearest", align_corners=False)
                rel = coord.permute(0, 3, 1, 2) - q_coord
                rel = torch.stack([rel[:, 0] * h, rel[:, 1] * w], dim=1)
                rel_coords.append(rel)
                feats.append(q_feat)
                areas.append((rel[:, 0] * rel[:, 1]).abs() + 1e-9)
        total = torch.stack(areas).sum(dim=0)
        areas = areas[::-1]  # each code is weighted by the area opposite to it
        feats = [f * (a / total).unsqueeze(1) for f, a in zip(feats, areas)]
        rel_cell = cell.clone()
        rel_cell[:, 0] *= h
        rel_cell[:, 1] *= w
        x = torch.cat(rel_coords + feats + [rel_cell[:, :, None, None].expand(b, 2, qh, qw)], dim=1)
        x = self.conv00(x)
        x = self.conv0(x, 0)
        x = self.conv1(x, 1)
        out = self.fc2(F.gelu(self.fc1(x)))
        return out + F.grid_sample(self.inp, coord.flip(-1), mode="bilinear", padding_mode="border",
                                   align_corners=False)

    def forward(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)


MODELS.register("sronet", SRNO)

__all__ = ["SRNO", "simple_attn", "HeadLayerNorm"]
