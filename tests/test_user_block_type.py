"""A block type defined and registered from outside the package, with the public API only
(what docs/block-types.md shows), for a computation the dataflow patterns cannot express: a
gated bottleneck ``x + conv(act(a) * sigmoid(b))`` whose 1x1 ``reduce`` writes both halves
``a, b = reduce(x).chunk(2, 1)`` (a GLU).  Also the registry's rules: unique names, the
contract check, lookup order, unregistering."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import anysr_plugin as anysr
from anysr_plugin import AnySRBlock, AnySRConfig, register_block_type, registered_block_type, unregister_block_type
from anysr_plugin.blocks import (StaticBlock, activate, add_residual, channel_mask, check_activation, check_conv,
                                 sliced_conv, static_activation, static_conv)
from anysr_plugin.errors import BlockTypeError, NoBlocksError

from conftest import assert_mixed_batch_equals_each_sample, randomize_gates, tiny_edsr
from reference_eq import floor_width, gate_values

WIDTHS = (0.5, 0.7, 0.9, 1.0)


# --------------------------------------------------------------------------- the user's upstream code


class Bottleneck(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.reduce = nn.Conv2d(c, 2 * c, 1)
        self.act = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        a, b = self.reduce(x).chunk(2, dim=1)
        return x + self.conv(self.act(a) * torch.sigmoid(b))


class BottleneckNet(nn.Module):
    def __init__(self, c=16, n=3):
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.Sequential(*[Bottleneck(c) for _ in range(n)])
        self.tail = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        return self.tail(self.blocks(self.head(x)))


# --------------------------------------------------------------------------- the user's block type


def halves(c: int, n: int) -> torch.Tensor:
    """Rows of ``reduce`` a width keeps: the first n of each half (a and b stay paired)."""
    return torch.cat([torch.arange(n), c + torch.arange(n)])


class SlimBottleneck(AnySRBlock):
    """Keep the first ``n`` channels of both halves of ``reduce`` (and ``conv``'s first ``n``
    inputs); gate the ``a`` half."""

    family = "user-bottleneck"
    default_lam = 2
    name_pattern = r"^Bottleneck$"

    @classmethod
    def structure_problem(cls, module):
        reduce = getattr(module, "reduce", None)
        c = getattr(getattr(module, "conv", None), "in_channels", None)
        return (check_conv(reduce, "reduce", out_ch=None if c is None else 2 * c)
                or check_activation(getattr(module, "act", None), "act", c)
                or check_conv(getattr(module, "conv", None), "conv", in_ch=c, out_ch=c))

    @classmethod
    def gated_channels(cls, module):
        return module.conv.in_channels

    @classmethod
    def input_channels(cls, module):
        return module.reduce.in_channels

    def _adopt(self, block):
        self.reduce, self.act, self.conv = block.reduce, block.act, block.conv

    def forward_sliced(self, x, n, scale):
        rows = halves(self.channels, n).to(x.device)
        h = torch.nn.functional.conv2d(x, self.reduce.weight.index_select(0, rows),
                                       self.reduce.bias.index_select(0, rows))
        a, b = h.chunk(2, dim=1)
        h = activate(self.act, self.apply_gate(a, scale, n)) * torch.sigmoid(b)
        return add_residual(sliced_conv(self.conv, h, in_index=n), x)

    def forward_masked(self, x, ns, scale):
        mask = channel_mask(ns, self.channels, x)
        a, b = self.reduce(x).chunk(2, dim=1)
        h = self.act(self.apply_gate_masked(a * mask, scale, ns, mask)) * torch.sigmoid(b) * mask
        return add_residual(self.conv(h), x)

    def export_static(self, n, scale=None):
        return StaticBottleneck(self, n, scale)

    def conv_macs_per_pixel(self, width):
        n, c = self.width_channels(width), self.channels
        return c * 2 * n * 1 + n * c * 9


class StaticBottleneck(StaticBlock):
    def __init__(self, block, n, scale=None):
        super().__init__()
        rows = halves(block.channels, n)
        self.reduce = nn.Conv2d(block.channels, 2 * n, 1)
        with torch.no_grad():
            self.reduce.weight.copy_(block.reduce.weight[rows])
            self.reduce.bias.copy_(block.reduce.bias[rows])
        self.act = static_activation(block.act, n)
        self.conv = static_conv(block.conv, in_index=n)
        self.gate = block.static_gate(n, scale)

    def forward(self, x):
        a, b = self.reduce(x).chunk(2, dim=1)
        if self.gate is not None:
            a = self.gate(a)
        return x + self.conv(self.act(a) * torch.sigmoid(b))


def plain_bottleneck(block, x, scale, width, kind):
    """Independent reference: one sample at a time, weights sliced by hand."""
    c = block.conv.in_channels
    n = floor_width(c, width)
    outs = []
    for b in range(x.shape[0]):
        xb = x[b:b + 1]
        w, bias = block.reduce.weight, block.reduce.bias
        a = torch.nn.functional.conv2d(xb, w[:n], bias[:n])
        g = torch.nn.functional.conv2d(xb, w[c:c + n], bias[c:c + n])
        if block.anysr_gate is not None:
            a = a * gate_values(block.anysr_gate, a[0], scale[b], n, kind)[None, :, None, None]
        h = torch.relu(a) * torch.sigmoid(g)
        outs.append(xb + torch.nn.functional.conv2d(h, block.conv.weight[:, :n], block.conv.bias, padding=1))
    return torch.cat(outs)


@pytest.fixture
def user_type():
    with registered_block_type(SlimBottleneck) as cls:
        yield cls
    assert SlimBottleneck not in anysr.block_types()


# --------------------------------------------------------------------------- the user's workflow


def _net(seed=0):
    torch.manual_seed(seed)
    return BottleneckNet().eval()


def test_full_width_equals_the_original(user_type):
    net = _net()
    x = torch.randn(2, 3, 8, 7)
    with torch.no_grad():
        before = net(x)
    report = anysr.inspect_targets(net)
    assert [(t.name, t.family, t.lam) for t in report.targets] == [
        (f"blocks.{i}", "user-bottleneck", 2) for i in range(3)]
    assert report.validations == 1  # three identical blocks: one full-width check
    assert anysr.anysrify(net) is net
    assert all(isinstance(b, SlimBottleneck) for b in net.blocks)
    with torch.no_grad(), anysr.use_scale(net, 4.0):
        assert torch.equal(net(x), before)


@pytest.mark.parametrize("gate", ["identity", "paper"])
def test_every_width_follows_the_independent_reference(user_type, gate):
    net = anysr.anysrify(_net(), AnySRConfig(gate=gate))
    randomize_gates(net)
    scale = torch.tensor([[1.5, 2.0], [3.0, 4.0]])
    h = torch.randn(2, 16, 6, 5)
    for w in WIDTHS:
        for block in net.blocks:
            with torch.no_grad(), anysr.use_width(net, w), anysr.use_scale(net, scale):
                torch.testing.assert_close(block(h), plain_bottleneck(block, h, scale, w, gate),
                                           atol=2e-5, rtol=1e-4)


def test_sliced_equals_masked(user_type):
    net = anysr.anysrify(_net(), AnySRConfig(gate="paper"))
    randomize_gates(net)
    x = torch.randn(4, 3, 7, 6)
    assert_mixed_batch_equals_each_sample(net, x)


def test_export_and_cost(user_type):
    net = anysr.anysrify(_net(), AnySRConfig(gate="paper"))
    randomize_gates(net)
    x = torch.rand(1, 3, 6, 6)
    for w in WIDTHS:
        with torch.no_grad(), anysr.use_width(net, w), anysr.use_scale(net, 2.0):
            ref = net(x)
        exported = anysr.export_subnet(net, w, scale=2.0)
        assert not any(isinstance(m, AnySRBlock) for m in exported.modules())
        assert [type(m) for m in exported.blocks] == [StaticBottleneck] * 3
        assert exported.blocks[0].reduce.out_channels == 2 * floor_width(16, w)
        with torch.no_grad():
            torch.testing.assert_close(exported(x), ref, atol=1e-5, rtol=1e-4)
        block = net.blocks[0]
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            block.forward_sliced(torch.rand(1, 16, 5, 4), block.width_channels(w), torch.ones(1, 2))
        assert counter.get_total_flops() // 2 == block.conv_macs_per_pixel(w) * 20 + block.gate_macs(w)


def test_unregistered_type_converts_nothing():
    with registered_block_type(SlimBottleneck):
        assert len(anysr.inspect_targets(_net()).targets) == 3
    assert not anysr.inspect_targets(_net()).targets
    with pytest.raises(NoBlocksError, match=r"Bottleneck x3.*Closest: blocks\.0 \(Bottleneck\) .*register_block_type"):
        anysr.anysrify(_net())


def test_a_name_matched_module_of_another_structure_is_skipped_with_the_reason(user_type):
    net = _net()
    net.blocks[1].reduce = nn.Conv2d(16, 32, 1, groups=4)
    report = anysr.inspect_targets(net)
    assert [t.name for t in report.targets] == ["blocks.0", "blocks.2"]
    assert [(s.name, s.reason) for s in report.skipped] == [
        ("blocks.1", "reduce has groups=4; only groups=1 can be sliced")]


# --------------------------------------------------------------------------- registry rules


def test_a_name_is_registered_once():
    with registered_block_type(SlimBottleneck):
        with pytest.raises(BlockTypeError, match="'user-bottleneck' is already registered"):
            register_block_type(SlimBottleneck)

        class Other(SlimBottleneck):
            pass

        with pytest.raises(BlockTypeError, match="already registered"):
            register_block_type(Other)
    with pytest.raises(BlockTypeError, match="'edsr' is already registered"):
        register_block_type(anysr.blocks.AnySRResBlock)


def test_the_contract_is_checked_at_registration():
    class Half(AnySRBlock):
        family = "half"

        @classmethod
        def structure_problem(cls, module):
            return None

    with pytest.raises(BlockTypeError, match="Half does not implement gated_channels, input_channels, _adopt, "
                                             "forward_sliced, forward_masked, export_static, conv_macs_per_pixel"):
        register_block_type(Half)
    with pytest.raises(BlockTypeError, match="subclass of anysr_plugin.AnySRBlock"):
        register_block_type(Bottleneck)

    class Nameless(SlimBottleneck):
        family = ""

    with pytest.raises(BlockTypeError, match="family must be a non-empty string"):
        register_block_type(Nameless)

    class BadLam(SlimBottleneck):
        family, default_lam = "bad-lam", 0

    with pytest.raises(BlockTypeError, match="default_lam must be a positive integer"):
        register_block_type(BadLam)
    with pytest.raises(BlockTypeError, match="not registered"):
        unregister_block_type("no-such-type")
    assert "half" not in {t.family for t in anysr.block_types()}


def test_lookup_order_priority_then_latest_first():
    class Late(SlimBottleneck):
        family = "late"

    class Low(SlimBottleneck):
        family = "low"

    builtins = anysr.block_types()
    with registered_block_type(SlimBottleneck), registered_block_type(Late), \
            registered_block_type(Low, priority=-1):
        order = anysr.block_types()
        assert order[:2] == (Late, SlimBottleneck) and order[-1] is Low
        assert order[2:-1] == builtins
        # the first type whose structure and full-width check pass converts the block
        assert {t.family for t in anysr.inspect_targets(_net()).targets} == {"late"}
        assert AnySRConfig().lam_for("late") == 2
    assert anysr.block_types() == builtins


def test_a_user_type_can_take_over_a_builtin_structure():
    class CountedResBlock(anysr.blocks.AnySRResBlock):
        """An EDSR block type of the user's own (e.g. with other defaults)."""
        family = "my-edsr"
        default_lam = 2

    with registered_block_type(CountedResBlock):
        model = anysr.anysrify(tiny_edsr())
        assert {type(b) for b in model.body[:2]} == {CountedResBlock}
        assert model.body[0].lam == 2
    assert type(anysr.anysrify(tiny_edsr()).body[0]) is anysr.blocks.AnySRResBlock


def test_the_documented_example_runs():
    """docs/block-types.md's example, executed as written on a model with Bottleneck blocks."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "block-types.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    scope = {"model": _net()}
    try:
        exec(compile(code, "docs/block-types.md", "exec"), scope)
        model = scope["model"]
        assert [type(b).__name__ for b in model.blocks] == ["SlimBottleneck"] * 3
        x = torch.rand(1, 3, 6, 6)
        with torch.no_grad(), anysr.use_width(model, 0.5), anysr.use_scale(model, 1.5):
            ref = model(x)
        torch.testing.assert_close(anysr.export_subnet(model, 0.5, scale=1.5)(x), ref, atol=1e-5, rtol=1e-4)
    finally:
        unregister_block_type("my-bottleneck")
