"""Writes look-alike *forks* of the LIIF code base that no adapter knows by name, for the
structure-over-names tests: the LIIF look-alike repo (tests/lookalike_liif_repo.py) plus
``models/forks.py`` and scripts that call the fork's own methods.

* ``fork`` -- model ``myiif`` (class ``ImplicitFork``): its own registry name and class name,
  the feature method renamed ``gen_feats`` and returning a tuple (stored on the model),
  ``forward(inp, coord=None, cell=None, inp_coord=None, bsize=None)``;
* ``op`` -- model ``opiif`` (class ``OpDispatchIIF``): an op-dispatched
  ``forward(op, inp=None, feat=None, coord=None, cell=None)``; the test path asks for the
  features with ``model('gen_feat', inp=inp)`` and passes them back to
  ``model('query_rgb', feat=feat, coord=..., cell=...)``;
* ``plain`` -- model ``plainiif`` (class ``NoScaleIIF``): ``forward(inp, size)`` takes the HR
  size and no cell: nothing says where the scale enters (the typed error's case).

Scripts: ``train_liif.py`` and ``test.py`` of the LIIF look-alike with the fork's calls.
"""
from __future__ import annotations

from pathlib import Path

import lookalike_liif_repo as L

MODELS_FORKS = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import register


def _query(feat, imnet, coord, cell):
    grid = coord.flip(-1).unsqueeze(1)
    q = F.grid_sample(feat, grid, mode='nearest', align_corners=False)[:, :, 0, :].permute(0, 2, 1)
    rel_cell = cell.clone()
    rel_cell[:, :, 0] *= feat.shape[-2]
    rel_cell[:, :, 1] *= feat.shape[-1]
    return imnet(torch.cat([q, coord, rel_cell], dim=-1))


@register('myiif')
class ImplicitFork(nn.Module):
    def __init__(self, encoder_spec, imnet_spec=None):
        super().__init__()
        self.encoder = models.make(encoder_spec)
        self.imnet = models.make(imnet_spec, args={'in_dim': self.encoder.out_dim + 4})

    def gen_feats(self, inp):
        self.inp = inp
        self.feats = (self.encoder(inp), inp.mean(dim=1, keepdim=True))
        return self.feats

    def query_rgb(self, coord, cell=None):
        feat, _ = self.feats
        return _query(feat, self.imnet, coord, cell)

    def forward(self, inp, coord=None, cell=None, inp_coord=None, bsize=None):
        self.gen_feats(inp)
        if bsize is None:
            return self.query_rgb(coord, cell)
        return torch.cat([self.query_rgb(coord[:, i:i + bsize], cell[:, i:i + bsize])
                          for i in range(0, coord.shape[1], bsize)], dim=1)


@register('opiif')
class OpDispatchIIF(nn.Module):
    def __init__(self, encoder_spec, imnet_spec=None):
        super().__init__()
        self.encoder = models.make(encoder_spec)
        self.imnet = models.make(imnet_spec, args={'in_dim': self.encoder.out_dim + 4})

    def gen_feat(self, inp):
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, feat, coord, cell):
        return _query(feat, self.imnet, coord, cell)

    def forward(self, op, inp=None, feat=None, coord=None, cell=None):
        if op == 'gen_feat':
            return self.gen_feat(inp)
        if op == 'query_rgb':
            return self.query_rgb(feat, coord, cell)
        return self.query_rgb(self.gen_feat(inp), coord, cell)


@register('plainiif')
class NoScaleIIF(nn.Module):
    def __init__(self, encoder_spec, imnet_spec=None):
        super().__init__()
        self.encoder = models.make(encoder_spec)
        self.out = nn.Conv2d(self.encoder.out_dim, 3, 1)

    def forward(self, inp, size):
        return F.interpolate(self.out(self.encoder(inp)), size=size, mode='bilinear', align_corners=False)
'''

#: variant -> (model name, the calls of train_liif.py and test.py)
VARIANTS = {
    "fork": ("myiif", {
        "model.gen_feat(inp)": "model.gen_feats(inp)",
    }),
    "op": ("opiif", {
        "pred = model(inp, batch['coord'], batch['cell'])":
            "pred = model('sr', inp=inp, coord=batch['coord'], cell=batch['cell'])",
        "model.gen_feat(inp)": "feat = model('gen_feat', inp=inp)",
        "model.query_rgb(coord[:, ql:qr], cell[:, ql:qr])":
            "model('query_rgb', feat=feat, coord=coord[:, ql:qr], cell=cell[:, ql:qr])",
    }),
    "plain": ("plainiif", {}),
}


def write_fork_repo(root: Path, variant: str) -> Path:
    """The LIIF look-alike repo at `root` with the `variant` fork registered and its calls."""
    L.write_repo(root, "liif")
    (root / "models" / "forks.py").write_text(MODELS_FORKS.lstrip())
    init = root / "models" / "__init__.py"
    init.write_text(init.read_text() + "from . import forks\n")
    texts = {script: (root / script).read_text() for script in ("train_liif.py", "test.py")}
    for old, new in VARIANTS[variant][1].items():
        assert any(old in t for t in texts.values()), old
        texts = {script: t.replace(old, new) for script, t in texts.items()}
    for script, text in texts.items():
        (root / script).write_text(text)
    return root


def train_config(variant: str, **extra) -> dict:
    cfg = L.train_config("liif", **extra)
    cfg["model"]["name"] = VARIANTS[variant][0]
    return cfg
