"""Structure decides what converts (names only add knowledge), and the full-width check runs
once per block signature without letting a different block through."""
import copy
import warnings

import pytest
import torch
from torch import nn

import anysr_plugin as anysr
from anysr_plugin.blocks import AnySRResBlock
from anysr_plugin.errors import AnySRWarning, UnsupportedBlockError
from anysr_plugin.injection import block_signature
from anysr_plugin.reference.encoders import ResBlock, default_conv

from conftest import tiny_edsr


def _edsr(n=6, **kw):
    torch.manual_seed(0)
    return tiny_edsr(n_resblocks=n, **kw).eval()


def _untouched(model, snapshot):
    assert not anysr.is_anysr(model)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), snapshot.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)


# --------------------------------------------------------------------------- one check per signature


def test_identical_blocks_are_checked_once():
    report = anysr.inspect_targets(_edsr(6))
    assert len(report.targets) == 6 and report.validations == 1
    assert {t.validated_by for t in report.targets} == {"body.0"}


def test_what_can_change_the_computation_gets_its_own_check():
    model = _edsr(6)
    model.body[1].res_scale = 0.5                  # a plain attribute the forward reads
    model.body[2].body[1] = nn.LeakyReLU(0.1)      # another activation class
    model.body[3].body[1].negative_slope = 0.3     # an attribute added to the ReLU instance
    model.body[4].train()                          # train mode
    model.body[5].double()                         # another dtype
    report = anysr.inspect_targets(model)
    assert report.validations == 6
    assert [t.validated_by for t in report.targets] == [f"body.{i}" for i in range(6)]


def test_signatures_ignore_weight_values_only():
    a, b = ResBlock(default_conv, 8, 3), ResBlock(default_conv, 8, 3)
    cfg = anysr.AnySRConfig()
    assert block_signature(AnySRResBlock, a, cfg) == block_signature(AnySRResBlock, b, cfg)
    assert block_signature(AnySRResBlock, a, cfg) != block_signature(AnySRResBlock, a, cfg.replace(lam=2))
    assert block_signature(AnySRResBlock, a, cfg) != block_signature(AnySRResBlock, ResBlock(default_conv, 8, 5), cfg)
    a.register_forward_hook(lambda m, i, o: None)
    assert block_signature(AnySRResBlock, a, cfg) is None  # hooks: checked alone
    b.forward = lambda x: x
    assert block_signature(AnySRResBlock, b, cfg) is None  # an instance-level forward: checked alone


class ResBlockWithoutSkip(ResBlock):
    """Same structure as an EDSR ResBlock, another forward (no identity path)."""

    def forward(self, x):
        return self.body(x)


ResBlockWithoutSkip.__name__ = "ResBlock"


def test_a_block_with_other_code_among_identical_ones_is_refused():
    model = _edsr(6)
    model.body[4] = ResBlockWithoutSkip(default_conv, 16, 3)
    snapshot = copy.deepcopy(model)
    with pytest.raises(UnsupportedBlockError, match=r"body\.4 \(ResBlock\): has the structure of a 'edsr' block "
                                                     r"but its forward differs"):
        anysr.anysrify(model)
    _untouched(model, snapshot)
    # its traced forward already shows no identity path: refused without a numeric check
    assert anysr.inspect_targets(snapshot).validations == 1


def test_a_hook_that_changes_the_output_is_caught():
    model = _edsr(4)
    model.body[2].register_forward_hook(lambda m, i, o: o * 2)
    with pytest.raises(UnsupportedBlockError, match=r"body\.2 .*forward differs"):
        anysr.anysrify(model)


def test_an_instance_level_forward_is_caught():
    model = _edsr(4)
    block = model.body[3]
    block.forward = lambda x: block.body(x)
    with pytest.raises(UnsupportedBlockError, match=r"body\.3 .*forward differs"):
        anysr.anysrify(model)


def test_anysrify_runs_one_check_for_identical_blocks(monkeypatch):
    calls = []
    original = AnySRResBlock.full_width_difference.__func__
    monkeypatch.setattr(AnySRResBlock, "full_width_difference",
                        classmethod(lambda cls, m, c, seed=0: calls.append(m) or original(cls, m, c, seed)))
    model = anysr.anysrify(_edsr(6))
    assert len(calls) == 1 and calls[0].body is model.body[0].body  # the first block represents all six


# --------------------------------------------------------------------------- structure decides


class ResidualBlockNoBN(nn.Module):
    """A renamed EDSR block (BasicSR-style class name) with the body layout."""

    def __init__(self, c=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(True), nn.Conv2d(c, c, 3, padding=1))
        self.res_scale = 1

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class MyResBlock(ResidualBlockNoBN):
    pass


class PlainStack(nn.Module):
    """The structure of an EDSR block, but no residual: not an EDSR block."""

    def __init__(self, c=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(True), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x):
        return self.body(x)


class ScaleTaking(ResidualBlockNoBN):
    def forward(self, x, scale):
        return x + self.body(x) * scale


def _net(*blocks):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), *blocks, nn.Conv2d(16, 3, 3, padding=1)).eval()


def test_renamed_classes_with_the_structure_convert():
    model = _net(ResidualBlockNoBN(), MyResBlock())
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        before = model(x)
    report = anysr.inspect_targets(model)
    assert [(t.name, t.upstream_type, t.family) for t in report.targets] == [
        ("1", "ResidualBlockNoBN", "edsr"), ("2", "MyResBlock", "edsr")]
    anysr.anysrify(model)
    with torch.no_grad(), anysr.use_scale(model, 4.0):
        assert torch.equal(model(x), before)


def test_a_structure_only_match_that_computes_something_else_is_left_with_a_warning():
    model = _net(ResidualBlockNoBN(), PlainStack(), ScaleTaking())
    report = anysr.inspect_targets(model)
    assert [t.name for t in report.targets] == ["1"]
    assert [(s.name, s.fatal) for s in report.skipped] == [("2", False), ("3", False)]
    assert "forward differs" in report.skipped[0].reason and "does not run" in report.skipped[1].reason
    with pytest.warns(AnySRWarning, match=r"unconverted: 2 \(PlainStack\).*3 \(ScaleTaking\)"):
        anysr.anysrify(model)
    assert isinstance(model[1], AnySRResBlock) and type(model[2]) is PlainStack and type(model[3]) is ScaleTaking


def test_a_name_matched_block_that_computes_something_else_is_refused():
    named = ScaleTaking()
    ScaleTakingNamed = type("ResBlock", (ScaleTaking,), {})
    named.__class__ = ScaleTakingNamed
    model = _net(ResidualBlockNoBN(), named)
    snapshot = copy.deepcopy(model)
    with pytest.raises(UnsupportedBlockError, match=r"2 \(ResBlock\): .*does not run on a \(2, 16, 6, 6\) input"):
        anysr.anysrify(model)
    _untouched(model, snapshot)


def test_no_warning_when_everything_converts():
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnySRWarning)
        anysr.anysrify(_edsr(3))
