"""export_subnet: a plain model with physically smaller weights, equal to the slimmable one."""
from __future__ import annotations


import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.blocks import AnySRBlock
from anysr_plugin.control import anysr_blocks
from anysr_plugin.gate import InterweavingGate
from anysr_plugin.errors import NotAnySRError, ScaleError, WidthError
from anysr_plugin.export import ScaleInputModel, export_subnet, static_blocks

from conftest import randomize_gates, tiny_edsr, tiny_rcan, tiny_rdn

BUILDERS = {"edsr": lambda: tiny_edsr(res_scale=0.5), "rcab": lambda: tiny_rcan(n_resgroups=1),
            "rdb": lambda: tiny_rdn(D=2, C=3)}
CASES = [(fam, gate, iw) for fam in BUILDERS for gate in ("identity", "paper")
         for iw in ("interleave", "concat", "none")]


def _model(fam, gate="identity", iw="interleave", seed=0):
    torch.manual_seed(seed)
    m = anysr.anysrify(BUILDERS[fam](), anysr.AnySRConfig(gate=gate, interweave=iw))
    randomize_gates(m, seed)
    return m.eval()


def _reference(m, x, w, scale):
    with torch.no_grad(), anysr.use_width(m, w), anysr.use_scale(m, scale):
        return m(x)


@pytest.mark.parametrize("fam,gate,iw", CASES)
def test_export_equals_slimmable_every_width(fam, gate, iw):
    m = _model(fam, gate, iw)
    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(1))
    for w in m._anysr_state.config.widths:
        # folded scale: the original call signature
        ref = _reference(m, x, w, (2.0, 3.0))
        folded = export_subnet(m, w, scale=(2.0, 3.0))
        with torch.no_grad():
            assert torch.allclose(folded(x), ref, atol=1e-5), (w, "folded")
        # open scale: the scale is an input; a different scale than folded ones
        ref2 = _reference(m, x, w, (1.5, 4.0))
        open_ = export_subnet(m, w)
        with torch.no_grad():
            out = open_(x, scale=(1.5, 4.0)) if iw != "none" else open_(x)
        assert torch.allclose(out, ref2, atol=1e-5), (w, "open")


@pytest.mark.parametrize("fam", list(BUILDERS))
def test_export_is_plain_and_physically_smaller(fam):
    m = _model(fam)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    e = export_subnet(m, 0.5, scale=2.0)
    # the source is untouched
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert anysr_blocks(m)
    # nothing slimmable, no AnySR hook or attribute left
    for mod in e.modules():
        assert not isinstance(mod, (AnySRBlock, InterweavingGate))
        assert not [k for k in mod.__dict__ if k.startswith("_anysr_")]
        assert not mod._forward_pre_hooks and not mod._forward_hooks
    assert not anysr.is_anysr(e)
    blocks = static_blocks(e)
    assert blocks
    full_c = anysr_blocks(m)[0].channels
    n = full_c // 2
    for b in blocks:
        if fam == "rdb":
            assert b.convs[0].conv[0].out_channels == n
            assert b.convs[1].conv[0].in_channels == b.convs[0].conv[0].in_channels + n
            assert b.LFF.in_channels == b.convs[0].conv[0].in_channels + len(b.convs) * n
        else:
            assert b.body[0].out_channels == n and b.body[2].in_channels == n
        assert b.gate.fc1.in_features == n and b.gate.fc2.out_features == n and b.gate.fc1_scale is None
    assert sum(p.numel() for p in e.parameters()) < sum(p.numel() for p in m.parameters())


def test_folded_bias_is_the_scale_columns():
    m = _model("edsr")
    block = anysr_blocks(m)[0]
    g = block.anysr_gate
    w = 0.9
    n = block.width_channels(w)  # 16 ch, lambda 4: chunk 4 -> 3 complete chunks -> 3 pairs
    e = export_subnet(m, w, scale=(2.0, 3.0))
    sg = static_blocks(e)[0].gate
    from anysr_plugin.gate import interleave_layout

    feat, pairs, _ = interleave_layout(g.channels, n, g.lam)
    assert len(pairs) == 3
    expected = g.fc1.bias.detach().clone()
    for c in pairs:
        expected += 2.0 * g.fc1.weight.detach()[:, c] + 3.0 * g.fc1.weight.detach()[:, c + 1]
    assert torch.allclose(sg.fc1.bias, expected, atol=1e-6)
    assert torch.equal(sg.fc1.weight, g.fc1.weight.detach()[:, feat])


def test_trace_and_export_run():
    m = _model("edsr")
    x = torch.rand(1, 3, 8, 8)
    folded = export_subnet(m, 0.7, scale=2.0)
    traced = torch.jit.trace(folded, (x,))
    ref = _reference(m, x, 0.7, 2.0)
    assert torch.allclose(traced(x), ref, atol=1e-5)
    x2 = torch.rand(1, 3, 5, 6)  # traced graph works on another size (fully convolutional)
    assert torch.allclose(traced(x2), _reference(m, x2, 0.7, 2.0), atol=1e-5)
    ep = torch.export.export(folded, (x,))
    assert torch.allclose(ep.module()(x), ref, atol=1e-5)
    # scale as a traced input
    open_ = export_subnet(m, 0.7)
    s = torch.tensor([[2.0, 2.0]])
    traced_open = torch.jit.trace(open_, (x, s))
    assert torch.allclose(traced_open(x, torch.tensor([[1.2, 3.0]])), _reference(m, x, 0.7, (1.2, 3.0)), atol=1e-5)


def test_torchscript_save_load_roundtrip(tmp_path):
    m = _model("rdb")
    x = torch.rand(1, 3, 6, 6)
    e = export_subnet(m, 0.5, scale=(1.5, 1.5))
    path = tmp_path / "sub.pt"
    torch.jit.save(torch.jit.trace(e, (x,)), str(path))
    loaded = torch.jit.load(str(path))
    assert torch.allclose(loaded(x), _reference(m, x, 0.5, 1.5), atol=1e-5)


def test_onnx_when_installed(tmp_path):
    pytest.importorskip("onnx")
    m = _model("edsr")
    e = export_subnet(m, 0.5, scale=2.0)
    torch.onnx.export(e, (torch.rand(1, 3, 8, 8),), str(tmp_path / "sub.onnx"), dynamo=False)  # as `anysr export`
    assert (tmp_path / "sub.onnx").stat().st_size > 0


def test_export_errors():
    with pytest.raises(NotAnySRError):
        export_subnet(tiny_edsr(), 0.5)
    m = _model("edsr")
    with pytest.raises(WidthError):
        export_subnet(m, 0.6)
    with pytest.raises(ScaleError):
        export_subnet(m, 0.5, scale=torch.tensor([[2.0, 2.0], [3.0, 3.0]]))
    open_ = export_subnet(m, 0.5)
    assert isinstance(open_, ScaleInputModel)
    with pytest.raises(ScaleError):
        open_(torch.rand(1, 3, 4, 4))


def test_export_keeps_state_dict_names():
    m = _model("edsr")
    keys = set(export_subnet(m, 0.5, scale=2.0).state_dict())
    assert "body.0.body.0.weight" in keys and "body.0.body.2.weight" in keys
    assert "body.0.gate.fc1.weight" in keys and "head.0.weight" in keys
