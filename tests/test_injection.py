"""anysrify surgery: in place, keys and Parameter objects kept, typed errors, nothing changed on failure."""
import copy

import pytest
import torch
from torch import nn

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig
from anysr_plugin.blocks import AnySRRCAB, AnySRRDB, AnySRResBlock
from anysr_plugin.errors import AlreadyAnySRError, AnySRError, NoBlocksError, UnsupportedBlockError
from anysr_plugin.reference.encoders import ResBlock, default_conv

from conftest import ENCODERS, tiny_edsr, tiny_rcan, tiny_rdn


def test_returns_the_same_object_keeps_keys_and_parameter_objects(encoder_kind):
    model = ENCODERS[encoder_kind]()
    keys_before = list(model.state_dict().keys())
    params_before = dict(model.named_parameters())
    out = anysr.anysrify(model)
    assert out is model
    keys_after = list(model.state_dict().keys())
    assert [k for k in keys_after if "anysr_" not in k] == keys_before  # byte-identical, same order
    new = [k for k in keys_after if k not in keys_before]
    assert new and all(".anysr_gate.fc" in k for k in new)
    params_after = dict(model.named_parameters())
    for name, p in params_before.items():
        assert params_after[name] is p


def test_edsr_keys_look_like_upstream():
    model = anysr.anysrify(tiny_edsr())
    keys = set(model.state_dict())
    assert {"body.0.body.0.weight", "body.0.body.2.bias", "body.0.anysr_gate.fc1.weight",
            "body.1.anysr_gate.fc2.bias", "body.2.weight", "head.0.weight", "sub_mean.weight"} <= keys


def test_block_types_per_family():
    assert all(isinstance(anysr.anysrify(tiny_edsr()).body[i], AnySRResBlock) for i in range(2))
    rdn = anysr.anysrify(tiny_rdn())
    assert all(isinstance(b, AnySRRDB) for b in rdn.RDBs)
    rcan = anysr.anysrify(tiny_rcan())
    assert all(isinstance(rcan.body[g].body[b], AnySRRCAB) for g in range(2) for b in range(2))
    assert rcan.body[0].body[0].upstream_type == "RCAB"


def test_shared_activation_instance_is_kept():
    model = tiny_edsr(shared_act=True)
    act = model.body[0].body[1]
    anysr.anysrify(model)
    assert model.body[0].body[1] is act and model.body[1].body[1] is act


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_device_dtype_training_and_requires_grad_preserved(dtype):
    model = tiny_edsr().to(dtype).eval()
    model.body[0].body[0].weight.requires_grad_(False)
    anysr.anysrify(model)
    assert not model.training and not model.body[0].training and not model.body[0].anysr_gate.training
    assert model.body[0].anysr_gate.fc1.weight.dtype == dtype
    assert model.body[0].body[0].weight.requires_grad is False
    assert model.sub_mean.weight.requires_grad is False  # the frozen MeanShift stays frozen
    x = torch.randn(1, 3, 6, 6, dtype=dtype)
    with anysr.use_scale(model, 2.0), torch.no_grad():
        assert model(x).dtype == dtype


def test_training_mode_preserved():
    model = anysr.anysrify(tiny_rdn().train())
    assert model.training and model.RDBs[0].training and model.RDBs[0].anysr_gate.training


def test_no_blocks_lists_the_module_types_seen():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    with pytest.raises(NoBlocksError, match=r"Conv2d x2.*ReLU x1|ReLU x1.*Conv2d x2"):
        anysr.anysrify(model)


def test_second_anysrify_raises():
    model = anysr.anysrify(tiny_edsr())
    with pytest.raises(AlreadyAnySRError):
        anysr.anysrify(model)


class BatchNormResBlock(nn.Module):
    def __init__(self, c=16):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(),
                                  nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.body(x)


class ResBlockWithoutSkip(ResBlock):
    """Same structure as an EDSR ResBlock, different forward (no identity path)."""

    def forward(self, x):
        return self.body(x)


ResBlockWithoutSkip.__name__ = "ResBlock"


def _assert_untouched(model, snapshot):
    assert [type(m) for m in model.modules()] == [type(m) for m in snapshot.modules()]
    for (k, v), (k2, v2) in zip(model.state_dict().items(), snapshot.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    assert not anysr.is_anysr(model)


def test_unsupported_structure_raises_and_leaves_the_model_untouched():
    model = tiny_edsr()
    model.body[1] = BatchNormResBlock()
    model.body[1].__class__.__name__ = "ResBlock"
    snapshot = copy.deepcopy(model)
    with pytest.raises(UnsupportedBlockError, match=r"body\.1 .*batch norm"):
        anysr.anysrify(model)
    _assert_untouched(model, snapshot)


def test_different_forward_semantics_are_refused():
    model = tiny_edsr()
    model.body[1] = ResBlockWithoutSkip(default_conv, 16, 3)
    snapshot = copy.deepcopy(model)
    with pytest.raises(UnsupportedBlockError, match="forward differs from that type.s x \\+ body"):
        anysr.anysrify(model)
    _assert_untouched(model, snapshot)


def test_channels_lambda_does_not_divide_convert_with_the_papers_chunks():
    """18 channels, lambda 4: the pairs follow features floor(18 i / 4) = 4, 9, 13, 18 (Eq. 7)."""
    report = anysr.inspect_targets(tiny_edsr(n_feats=18))
    assert {t.chunking for t in report.targets} == {"lambda=4 (pairs after features 4, 9, 13, 18 of 18)"}
    model = anysr.anysrify(tiny_edsr(n_feats=18))
    assert model.body[0].anysr_gate.fc1.weight.shape == (36, 18 + 8)
    anysr.anysrify(tiny_edsr(n_feats=18), AnySRConfig(lam=3))  # an explicit lambda that divides: equal chunks


def test_inspect_targets_before_and_after():
    model = tiny_rcan()
    model.body[0].body[1].body[0] = nn.Conv2d(16, 16, 3, padding=1, groups=2)
    report = anysr.inspect_targets(model)
    assert not report.converted
    assert [t.name for t in report.targets] == ["body.0.body.0", "body.1.body.0", "body.1.body.1"]
    assert [(s.name, s.upstream_type) for s in report.skipped] == [("body.0.body.1", "RCAB")]
    assert "groups=2" in report.skipped[0].reason and "groups=2" in str(report)
    model = tiny_edsr()
    anysr.anysrify(model)
    report = anysr.inspect_targets(model)
    assert report.converted and [t.name for t in report.targets] == ["body.0", "body.1"]
    assert report.targets[0].width_channels == {0.5: 8, 0.7: 11, 0.9: 14, 1.0: 16}


def test_errors_share_one_base():
    for cls in (NoBlocksError, UnsupportedBlockError, AlreadyAnySRError):
        assert issubclass(cls, AnySRError)


def test_unknown_adapter_lists_the_available_ones():
    with pytest.raises(AnySRError, match="unknown adapter 'no-such-method'; registered: arbrcan, arbsr, generic, liif"):
        anysr.anysrify(tiny_edsr(), adapter="no-such-method")


def test_ddp_wrapped_model_is_refused_with_advice():
    class FakeDDP(nn.parallel.DistributedDataParallel):
        def __init__(self, module):
            nn.Module.__init__(self)
            self.module = module

    with pytest.raises(AnySRError, match="before wrapping"):
        anysr.anysrify(FakeDDP(tiny_edsr()))


def test_dataparallel_wrapper_is_converted_inside():
    inner = tiny_edsr()
    wrapped = nn.DataParallel(inner)
    assert anysr.anysrify(wrapped) is wrapped
    assert anysr.is_anysr(inner) and isinstance(inner.body[0], AnySRResBlock)
