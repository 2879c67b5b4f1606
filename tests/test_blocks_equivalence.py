"""Every block type: full-width identity, every width against the plain reference of
Eq. 6-8, masked mixed-width batches against each sample alone on the sliced path."""
import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig
from anysr_plugin.blocks import AnySRBlock

from conftest import ENCODERS, assert_mixed_batch_equals_each_sample, randomize_gates
from reference_eq import edsr_like_block, rdb_block

WIDTHS = (0.5, 0.7, 0.9, 1.0)


def converted(kind, **cfg):
    model = ENCODERS[kind]().eval()
    return anysr.anysrify(model, AnySRConfig(**cfg))


def test_full_width_equals_the_original(encoder_kind):
    model = ENCODERS[encoder_kind]().eval()
    x = torch.randn(2, 3, 12, 10)
    with torch.no_grad():
        before = model(x)
        anysr.anysrify(model)
        with anysr.use_scale(model, 4.0):
            after = model(x)
        with anysr.use_width(model, 1.0), anysr.use_scale(model, 1.5):
            forced = model(x)
    assert (after - before).abs().max() <= 1e-5
    assert (forced - before).abs().max() <= 1e-5


def test_paper_gate_changes_the_function():
    model = ENCODERS["edsr"]().eval()
    x = torch.randn(1, 3, 8, 8)
    before = model(x)
    anysr.anysrify(model, AnySRConfig(gate="paper"))
    with anysr.use_scale(model, 4.0):
        assert not torch.allclose(model(x), before)


@pytest.mark.parametrize("gate", ["identity", "paper"])
@pytest.mark.parametrize("interweave", ["interleave", "concat", "none"])
def test_every_width_matches_the_plain_reference(encoder_kind, gate, interweave):
    model = converted(encoder_kind, gate=gate, interweave=interweave)
    randomize_gates(model)
    blocks = [m for m in model.modules() if isinstance(m, AnySRBlock)]
    x = torch.randn(2, blocks[0].channels if blocks[0].family != "rdb" else blocks[0].in_channels, 7, 6)
    scale = torch.tensor([[1.6, 2.4], [3.0, 3.0]])
    for width in WIDTHS:
        for block in blocks:
            with anysr.use_width(model, width), anysr.use_scale(model, scale), torch.no_grad():
                got = block(x)
                if block.family == "rdb":
                    want = rdb_block(block, x, scale, width, gate)
                else:
                    want = edsr_like_block(block, x, scale, width, gate, has_attention=block.family == "rcab")
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("gate", ["identity", "paper"])
def test_masked_mixed_batch_equals_each_sample_alone(encoder_kind, gate):
    model = converted(encoder_kind, gate=gate)
    randomize_gates(model)
    x = torch.randn(4, 3, 9, 8)
    assert_mixed_batch_equals_each_sample(model, x)


def test_mixed_batch_takes_the_masked_path_and_uniform_batch_the_sliced_path(monkeypatch):
    model = converted("edsr")
    calls = []
    block = next(m for m in model.modules() if isinstance(m, AnySRBlock))
    cls = type(block)
    for name in ("forward_sliced", "forward_masked"):
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, *a, _n=name, _o=original: calls.append(_n) or _o(self, *a))
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        with anysr.use_scale(model, torch.tensor([[2.0, 2.0], [2.1, 2.1]])):
            model(x)
        assert set(calls) == {"forward_sliced"}
        calls.clear()
        with anysr.use_scale(model, torch.tensor([[2.0, 2.0], [4.0, 4.0]])):
            model(x)
        assert set(calls) == {"forward_masked"}


def test_widths_give_different_outputs():
    model = converted("edsr", gate="paper")
    x = torch.randn(1, 3, 8, 8)
    outs = []
    with torch.no_grad(), anysr.use_scale(model, 2.0):
        for w in WIDTHS:
            with anysr.use_width(model, w):
                outs.append(model(x))
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not torch.allclose(outs[i], outs[j])
