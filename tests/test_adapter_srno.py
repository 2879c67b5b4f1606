"""SRNO adapter: detection (not confused with LIIF), (B, H, W, 2) coord / (B, 2) cell,
the batched_predict path over HR-row chunks, SRNO's own fc1/fc2 never taken for gates."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anysr_plugin as anysr
from anysr_plugin.adapters import detect_adapter, get_adapter
from anysr_plugin.adapters.liif import defer_features, scale_from_cell
from anysr_plugin.reference.encoders import EDSR
from anysr_plugin.reference.models import make_coord


class SRNO(nn.Module):
    """Minimal SRNO look-alike: coord (B, H, W, 2), cell (B, 2) -> (B, 3, H, W)."""

    def __init__(self, encoder, width=8):
        super().__init__()
        self.encoder = encoder
        self.conv00 = nn.Conv2d(encoder.out_dim + 4, width, 1)
        self.conv0 = nn.Conv2d(width, width, 1)
        self.fc1 = nn.Conv2d(width, width, 1)
        self.fc2 = nn.Conv2d(width, 3, 1)

    def gen_feat(self, inp):
        self.inp = inp
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, coord, cell):
        b, h, w, _ = coord.shape
        q = F.grid_sample(self.feat, coord.flip(-1), mode="bilinear", align_corners=False)
        rel = cell * torch.tensor([self.feat.shape[-2], self.feat.shape[-1]], dtype=cell.dtype)
        x = torch.cat([q, coord.permute(0, 3, 1, 2), rel[:, :, None, None].expand(-1, -1, h, w)], 1)
        return self.fc2(F.gelu(self.fc1(self.conv0(F.gelu(self.conv00(x))))))

    def forward(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)


def srno_model(seed=0):
    torch.manual_seed(seed)
    return SRNO(EDSR(n_resblocks=2, n_feats=16)).eval()


def grid(b, h_lr, s):
    h = round(h_lr * s)
    return make_coord((h, h), flatten=False)[None].expand(b, -1, -1, -1), torch.full((b, 2), 2 / h)


def test_detected_as_srno_not_liif():
    m = srno_model()
    assert detect_adapter(m).name == "srno"
    assert not get_adapter("liif").detect(m)
    conv = anysr.anysrify(m)
    names = [n for n, _ in conv.named_parameters()]
    assert "fc1.weight" in names and "fc2.weight" in names  # SRNO's decoder layers, untouched
    assert all(n.startswith("encoder.") for n in names if "anysr_" in n)


def test_reference_srno_detected():
    ref = pytest.importorskip("anysr_plugin.reference.srno")
    try:
        m = ref.SRNO(encoder=EDSR(n_resblocks=1, n_feats=64), width=16, blocks=1)
    except TypeError:
        pytest.skip("reference SRNO has another constructor")
    assert detect_adapter(m).name == "srno"


def test_forward_scale_from_b2_cell_and_full_width_identity():
    base = srno_model(seed=1)
    conv = anysr.anysrify(copy.deepcopy(base), anysr.AnySRConfig(gate="paper"))
    inp = torch.randn(2, 3, 6, 6)
    coord, cell = grid(2, 6, 2.0)
    assert torch.allclose(scale_from_cell(inp, cell), torch.full((2, 2), 2.0))
    out = conv(inp, coord, cell)
    with anysr.use_width(conv, 0.7), anysr.use_scale(conv, 2.0):
        assert torch.allclose(out, conv(inp, coord, cell), atol=1e-6)
    ident = anysr.anysrify(copy.deepcopy(base))
    coord4, cell4 = grid(2, 6, 4.0)
    assert torch.allclose(ident(inp, coord4, cell4), base(inp, coord4, cell4), atol=1e-5)


def test_batched_predict_rows_with_deferred_features():
    conv = anysr.anysrify(srno_model(), anysr.AnySRConfig(gate="paper"))
    inp = torch.randn(1, 3, 6, 6)
    coord, cell = grid(1, 6, 1.5)
    ref = conv(inp, coord, cell)
    with defer_features(conv):
        conv.gen_feat(inp)   # SRNO batched_predict: gen_feat, then query_rgb over HR-row chunks with the whole cell
        out = torch.cat([conv.query_rgb(coord[:, :4], cell), conv.query_rgb(coord[:, 4:], cell)], dim=2)
    assert torch.allclose(out, ref, atol=1e-6)
