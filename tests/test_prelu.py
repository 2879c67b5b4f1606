"""A per-channel PReLU(C) between a block's convolutions slices with the channels: every
width against the plain reference (PReLU written out), masked == sliced, export."""
import pytest
import torch
from torch import nn

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig
from anysr_plugin.control import anysr_blocks
from anysr_plugin.errors import UnsupportedBlockError
from anysr_plugin.export import export_subnet, static_blocks

from conftest import assert_mixed_batch_equals_each_sample, randomize_gates, tiny_edsr, tiny_rcan, tiny_rdn
from reference_eq import edsr_like_block, floor_width, rdb_block

WIDTHS = (0.5, 0.7, 0.9, 1.0)


def _prelu(channels, g):
    act = nn.PReLU(channels)
    with torch.no_grad():  # distinct slopes per channel, so a wrong slice shows
        act.weight.copy_(torch.rand(channels, generator=g) * 0.9 - 0.3)
    return act


def with_prelu(kind, channels=16):
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(0)
    if kind == "rdb":
        model = tiny_rdn()
        for rdb in model.RDBs:
            for layer in rdb.convs:
                layer.conv[1] = _prelu(channels, g)
        return model.eval()
    model = tiny_edsr() if kind == "edsr" else tiny_rcan()
    blocks = [m for m in model.modules() if type(m).__name__ in ("ResBlock", "RCAB")]
    for block in blocks:
        block.body[1] = _prelu(channels, g)
    return model.eval()


def _reference(kind, block, x, scale, w, gate):
    if kind == "rdb":
        return rdb_block(block, x, scale, w, gate)
    return edsr_like_block(block, x, scale, w, gate, has_attention=kind == "rcab")


@pytest.mark.parametrize("kind", ["edsr", "rcab", "rdb"])
def test_every_width_matches_the_reference(kind):
    model = with_prelu(kind)
    x = torch.randn(2, 3, 9, 8)
    with torch.no_grad():
        before = model(x)
    anysr.anysrify(model, AnySRConfig(gate="paper"))
    with torch.no_grad(), anysr.use_width(model, 1.0), anysr.use_scale(model, 2.0):
        for b in anysr_blocks(model):
            b.anysr_gate, b._saved = None, b.anysr_gate
        try:
            assert torch.equal(model(x), before)  # full width, gates off: the original function
        finally:
            for b in anysr_blocks(model):
                b.anysr_gate = b._saved
    randomize_gates(model)
    h = torch.randn(2, 16, 7, 6)
    scale = torch.tensor([[1.6, 2.4], [3.0, 3.0]])
    for w in WIDTHS:
        for block in anysr_blocks(model):
            with torch.no_grad(), anysr.use_width(model, w), anysr.use_scale(model, scale):
                torch.testing.assert_close(block(h), _reference(kind, block, h, scale, w, "paper"),
                                           atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["edsr", "rcab", "rdb"])
def test_masked_equals_sliced_and_export(kind):
    model = anysr.anysrify(with_prelu(kind), AnySRConfig(gate="paper"))
    randomize_gates(model)
    x = torch.randn(4, 3, 7, 6)
    assert_mixed_batch_equals_each_sample(model, x)
    for w in WIDTHS:
        with torch.no_grad(), anysr.use_width(model, w), anysr.use_scale(model, 2.0):
            ref = model(x)
        exported = export_subnet(model, w, scale=2.0)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), ref, atol=1e-5, rtol=1e-4)
        n = floor_width(16, w)
        source = anysr_blocks(model)[0]
        static = static_blocks(exported)[0]
        if kind == "rdb":
            act, full_act = static.convs[1].conv[1], source.convs[1].conv[1]
        else:
            act, full_act = static.body[1], source.body[1]
        assert isinstance(act, nn.PReLU) and act.num_parameters == n
        assert torch.equal(act.weight, full_act.weight[:n])


def test_a_single_slope_prelu_needs_no_slicing():
    model = tiny_edsr()
    for block in model.body[:2]:
        block.body[1] = nn.PReLU()
    anysr.anysrify(model, AnySRConfig(gate="paper"))
    randomize_gates(model)
    h = torch.randn(2, 16, 5, 5)
    scale = torch.tensor([[1.5, 1.5], [2.0, 2.0]])
    with torch.no_grad(), anysr.use_width(model, 0.5), anysr.use_scale(model, scale):
        torch.testing.assert_close(model.body[0](h), edsr_like_block(model.body[0], h, scale, 0.5, "paper"),
                                   atol=2e-5, rtol=1e-4)


def test_a_prelu_of_another_size_is_refused_with_the_reason():
    model = tiny_edsr()
    model.body[1].body[1] = nn.PReLU(7)
    with pytest.raises(UnsupportedBlockError, match=r"body\.1 is PReLU\(7\) on 16 channels; expected PReLU\(1\) "
                                                     r"or PReLU\(16\)"):
        anysr.anysrify(model)
