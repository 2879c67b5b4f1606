"""A look-alike of upstream LIIF (``liif:models/liif.py``) and its ``mlp`` imnet.

Written here from the documented facts (docs/upstream.md):

* ``LIIF(encoder_spec, imnet_spec=None, local_ensemble=True, feat_unfold=True,
  cell_decode=True)``; also accepts a ready ``encoder=`` module (our addition).
* ``imnet`` input = ``C*9`` (feat_unfold) ``+ 2`` (relative coord) ``+ 2`` (cell_decode):
  580 for a 64-channel encoder; keys ``imnet.layers.{0,2,4,6,8}`` for four hidden layers.
* ``gen_feat(inp)`` stores ``self.feat``; ``query_rgb(coord, cell)`` takes ``(B, Q, 2)``
  each and returns ``(B, Q, 3)``; ``forward(inp, coord, cell)`` = both.
* Relative cell = ``cell * (H_feat, W_feat)`` = ``2 / s``; local ensemble over the four
  nearest latent codes, weighted by the area of the opposite rectangle.

Unlike upstream nothing is hard-wired to CUDA: coordinates follow ``feat``'s device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...runtime.errors import ConfigError
from ..coords import make_coord
from .registry import MODELS, make


class MLP(nn.Module):
    """``Linear``/``ReLU`` pairs ending in a ``Linear`` (keys ``layers.{0,2,4,...}``)."""

    def __init__(self, in_dim, out_dim, hidden_list):
        super().__init__()
        layers, last = [], in_dim
        for hidden in hidden_list:
            layers += [nn.Linear(last, hidden), nn.ReLU()]
            last = hidden
        layers.append(nn.Linear(last, out_dim))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        lead = x.shape[:-1]
        return self.layers(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


def _gather_nearest(grid: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """Nearest sample of a (B, C, H, W) grid at (B, Q, 2) (row, col) coords -> (B, Q, C)."""
    out = F.grid_sample(grid, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)
    return out[:, :, 0, :].permute(0, 2, 1)


class LIIF(nn.Module):
    def __init__(self, encoder_spec=None, imnet_spec=None, local_ensemble=True, feat_unfold=True,
                 cell_decode=True, encoder: nn.Module | None = None):
        super().__init__()
        if (encoder_spec is None) == (encoder is None):
            raise ConfigError("LIIF needs exactly one of encoder_spec (a {'name','args'} spec) or encoder (a module)")
        self.local_ensemble = local_ensemble
        self.feat_unfold = feat_unfold
        self.cell_decode = cell_decode
        self.encoder = make(encoder_spec) if encoder is None else encoder
        if imnet_spec is not None:
            in_dim = self.encoder.out_dim * (9 if feat_unfold else 1) + 2 + (2 if cell_decode else 0)
            self.imnet = make(imnet_spec, args={"in_dim": in_dim})
        else:
            self.imnet = None

    def gen_feat(self, inp):
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, coord, cell=None):
        feat = self.feat
        if self.imnet is None:
            return _gather_nearest(feat, coord)
        b, c, h, w = feat.shape
        if self.feat_unfold:
            feat = F.unfold(feat, 3, padding=1).view(b, c * 9, h, w)
        if self.local_ensemble:
            shifts, eps = [(-1, -1), (-1, 1), (1, -1), (1, 1)], 1e-6
        else:
            shifts, eps = [(0, 0)], 0.0
        # half a latent cell in normalised units
        rh, rw = 1.0 / h, 1.0 / w
        feat_coord = make_coord((h, w), flatten=False).to(feat).permute(2, 0, 1).unsqueeze(0).expand(b, 2, h, w)
        preds, areas = [], []
        for vh, vw in shifts:
            shifted = coord.clone()
            shifted[:, :, 0] += vh * rh + eps
            shifted[:, :, 1] += vw * rw + eps
            shifted.clamp_(-1 + 1e-6, 1 - 1e-6)
            q_feat = _gather_nearest(feat, shifted)
            q_coord = _gather_nearest(feat_coord, shifted)
            rel_coord = coord - q_coord
            rel_coord[:, :, 0] *= h
            rel_coord[:, :, 1] *= w
            parts = [q_feat, rel_coord]
            if self.cell_decode:
                rel_cell = cell.clone()
                rel_cell[:, :, 0] *= h
                rel_cell[:, :, 1] *= w
                parts.append(rel_cell)
            preds.append(self.imnet(torch.cat(parts, dim=-1)))
            areas.append((rel_coord[:, :, 0] * rel_coord[:, :, 1]).abs() + 1e-9)
        total = torch.stack(areas).sum(dim=0)
        if self.local_ensemble:  # each code is weighted by the area opposite to it
            areas = areas[::-1]
        out = 0
        for pred, area in zip(preds, areas):
            out = out + pred * (area / total).unsqueeze(-1)
        return out

    def forward(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)


MODELS.register("mlp", MLP)
MODELS.register("liif", LIIF)

__all__ = ["LIIF", "MLP"]
