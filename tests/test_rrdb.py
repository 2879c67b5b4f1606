"""ESRGAN's RRDB block type: found by structure in both attribute layouts, exact at full
width, every width against the plain reference, masked == sliced, export, cost, refusals."""
import copy

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig
from anysr_plugin.blocks import AnySRRRDB, StaticRRDB
from anysr_plugin.control import anysr_blocks
from anysr_plugin.errors import UnsupportedBlockError
from anysr_plugin.export import export_subnet, static_blocks
from anysr_plugin.reference.liif import LIIF
from anysr_plugin.reference.models import make_coord

from conftest import assert_mixed_batch_equals_each_sample, randomize_gates
from lookalike_rrdb import ENCODERS, RRDB, RRDBNet, ResidualDenseBlock_5C
from reference_eq import rrdb_block

WIDTHS = (0.5, 0.7, 0.9, 1.0)
TRUNK = {"esrgan": "RRDB_trunk", "basicsr": "body"}


@pytest.fixture(params=sorted(ENCODERS))
def layout(request):
    return request.param


def _converted(layout, **cfg):
    torch.manual_seed(0)
    return anysr.anysrify(ENCODERS[layout]().eval(), AnySRConfig(**cfg))


def test_found_by_structure_with_keys_and_parameters_kept(layout):
    enc = ENCODERS[layout]()
    keys = list(enc.state_dict())
    params = dict(enc.named_parameters())
    report = anysr.inspect_targets(enc)
    assert report.adapter == "generic"  # the default adapter path (no method adapter claims a bare encoder)
    assert [t.name for t in report.targets] == [f"{TRUNK[layout]}.0", f"{TRUNK[layout]}.1"]
    assert {t.family for t in report.targets} == {"rrdb"} and not report.skipped
    assert report.targets[0].width_channels == {0.5: 4, 0.7: 5, 0.9: 7, 1.0: 8} and report.targets[0].lam == 4
    anysr.anysrify(enc)
    assert [k for k in enc.state_dict() if "anysr_" not in k] == keys
    assert all(dict(enc.named_parameters())[k] is p for k, p in params.items())
    blocks = anysr_blocks(enc)
    assert len(blocks) == 2 and all(isinstance(b, AnySRRRDB) for b in blocks)
    first = "RDB1" if layout == "esrgan" else "rdb1"
    assert f"{TRUNK[layout]}.0.{first}.conv1.weight" in enc.state_dict()
    assert f"{TRUNK[layout]}.0.anysr_gate.fc1.weight" in enc.state_dict()


def test_full_width_equals_the_original_exactly(layout):
    torch.manual_seed(0)
    enc = ENCODERS[layout]().eval()
    x = torch.randn(2, 3, 9, 7)
    with torch.no_grad():
        before = enc(x)
    anysr.anysrify(enc)
    with torch.no_grad():
        with anysr.use_scale(enc, 4.0):
            after = enc(x)
        with anysr.use_width(enc, 1.0), anysr.use_scale(enc, 1.5):
            forced = enc(x)
    assert torch.equal(after, before) and torch.equal(forced, before)
    # with gradients recorded too (the out-of-place residual path)
    with anysr.use_scale(enc, 4.0):
        assert torch.equal(enc(x), before)


@pytest.mark.parametrize("gate", ["identity", "paper"])
@pytest.mark.parametrize("interweave", ["interleave", "concat", "none"])
def test_every_width_matches_the_plain_reference(layout, gate, interweave):
    enc = _converted(layout, gate=gate, interweave=interweave)
    randomize_gates(enc)
    x = torch.randn(2, 16, 7, 6)
    scale = torch.tensor([[1.6, 2.4], [3.0, 3.0]])
    for width in WIDTHS:
        for block in anysr_blocks(enc):
            with anysr.use_width(enc, width), anysr.use_scale(enc, scale), torch.no_grad():
                got = block(x)
                want = rrdb_block(block, x, scale, width, gate)
            torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("gate", ["identity", "paper"])
def test_masked_mixed_batch_equals_each_sample_alone(layout, gate):
    enc = _converted(layout, gate=gate)
    randomize_gates(enc)
    x = torch.randn(4, 3, 9, 8)
    assert_mixed_batch_equals_each_sample(enc, x)


def test_export_every_width(layout):
    enc = _converted(layout, gate="paper")
    randomize_gates(enc)
    x = torch.rand(2, 3, 7, 9)
    for w in WIDTHS:
        with torch.no_grad(), anysr.use_width(enc, w), anysr.use_scale(enc, (2.0, 3.0)):
            ref = enc(x)
        folded = export_subnet(enc, w, scale=(2.0, 3.0))
        opened = export_subnet(enc, w)
        with torch.no_grad():
            torch.testing.assert_close(folded(x), ref, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(opened(x, scale=(2.0, 3.0)), ref, atol=1e-5, rtol=1e-4)
        blocks = static_blocks(folded)
        assert len(blocks) == 2 and all(isinstance(b, StaticRRDB) for b in blocks)
        g = anysr_blocks(enc)[0].width_channels(w)
        rdb = getattr(blocks[0], blocks[0].rdb_names[0])
        assert rdb.conv1.out_channels == g and rdb.conv4.in_channels == 16 + 3 * g
        assert rdb.conv5.in_channels == 16 + 4 * g and rdb.conv5.out_channels == 16
        assert not any(isinstance(m, AnySRRRDB) for m in folded.modules())
    keys = set(export_subnet(enc, 0.5, scale=2.0).state_dict())
    first = "RDB1" if layout == "esrgan" else "rdb1"
    assert f"{TRUNK[layout]}.0.{first}.conv5.weight" in keys and f"{TRUNK[layout]}.0.gate.fc1.weight" in keys


def _flops(fn):
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn()
    return counter.get_total_flops() // 2


def test_cost_counts_what_runs():
    enc = _converted("esrgan")
    block = anysr_blocks(enc)[0]
    x = torch.randn(1, 16, 5, 4)
    bare = _converted("esrgan", interweave="none")
    bare_block = anysr_blocks(bare)[0]
    for w in WIDTHS:
        n = block.width_channels(w)
        conv = _flops(lambda: bare_block.forward_sliced(x, n, torch.ones(1, 2)))
        assert conv == bare_block.conv_macs_per_pixel(w) * 20
        total = _flops(lambda: block.forward_sliced(x, n, torch.ones(1, 2)))
        assert total - conv == block.gate_macs(w) > 0
        assert block.activations_per_pixel(w) == 3 * 4 * n


def test_esrgan_size_cost_ratios_stated_in_the_docstring():
    with torch.device("meta"):
        rrdb = RRDB(nf=64, gc=32)
    block = AnySRRRDB(rrdb, AnySRConfig())
    full = block.conv_macs_per_pixel(1.0)
    ratios = [round(block.conv_macs_per_pixel(w) / full, 2) for w in (0.5, 0.7, 0.9)]
    assert ratios == [0.52, 0.69, 0.87]
    assert sum(p.numel() for p in block.anysr_gate.parameters()) == 4704


def test_liif_with_an_rrdb_encoder_follows_the_scale(monkeypatch):
    torch.manual_seed(0)
    model = LIIF(encoder=RRDBNet(), imnet_spec={"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16]}}).eval()
    ref = copy.deepcopy(model)
    anysr.anysrify(model)
    assert anysr.inspect_targets(model).adapter == "liif" and len(anysr_blocks(model)) == 2
    ran = []
    original = AnySRRRDB.forward_sliced
    monkeypatch.setattr(AnySRRRDB, "forward_sliced", lambda self, x, n, s: ran.append(n) or original(self, x, n, s))
    inp = torch.rand(1, 3, 8, 8)
    coord = make_coord((16, 16)).unsqueeze(0)  # x2: cell = 2 / 16
    cell = torch.full_like(coord, 2 / 16)
    with torch.no_grad():
        out = model(inp, coord, cell)
        assert ran == [5, 5]  # scale 2 -> width 0.7 -> floor(8 * 0.7) growth channels
        with anysr.use_width(model, 0.7):
            torch.testing.assert_close(model(inp, coord, cell), out)
        with anysr.use_width(model, 1.0):
            assert torch.equal(model(inp, coord, cell), ref(inp, coord, cell))


def _refused(model, match):
    snapshot = copy.deepcopy(model)
    with pytest.raises(UnsupportedBlockError, match=match):
        anysr.anysrify(model)
    for (k, v), (k2, v2) in zip(model.state_dict().items(), snapshot.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert not anysr.is_anysr(model)


def test_an_rrdb_with_another_structure_is_skipped_with_the_reason():
    enc = RRDBNet()
    enc.RRDB_trunk[1].RDB2.conv3 = nn.Conv2d(32, 8, 3, padding=1, groups=2)
    report = anysr.inspect_targets(enc)
    assert [t.name for t in report.targets] == ["RRDB_trunk.0"]
    assert [(s.name, s.upstream_type) for s in report.skipped] == [("RRDB_trunk.1", "RRDB")]
    assert "RDB2.conv3 has groups=2" in report.skipped[0].reason
    _refused(enc, "RDB2.conv3 has groups=2")


class RDBScaledByTenth(ResidualDenseBlock_5C):
    """Same layers as ESRGAN's dense block, residual scale 0.1 instead of 0.2."""

    def forward(self, x):
        return (super().forward(x) - x) / 0.2 * 0.1 + x


def test_an_rrdb_with_other_residual_scales_is_refused():
    enc = RRDBNet()
    enc.RRDB_trunk[0].RDB2 = RDBScaledByTenth(16, 8)
    _refused(enc, "RRDB_trunk.0 \\(RRDB\\): has the structure of a 'rrdb' block but its forward differs")
