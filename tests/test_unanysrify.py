"""unanysrify: original -> anysrify -> unanysrify is the original again (outputs and state_dict exactly,
the very module and Parameter objects, nothing of AnySR left), and anysrify works again afterwards."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import anysr_plugin as anysr
from anysr_plugin.errors import AnySRError, NotAnySRError
from anysr_plugin.reference.models import build_reference, cell_for, make_coord

from conftest import ENCODERS, randomize_gates, tiny_edsr


def snapshot(model):
    """What must come back: module objects by path, parameter objects, the state dict's values."""
    return ({n: m for n, m in model.named_modules()}, {n: p for n, p in model.named_parameters()},
            {k: v.clone() for k, v in model.state_dict().items()})


def assert_restored(model, before, out_before, call):
    modules, params, sd = before
    assert {n: m for n, m in model.named_modules()} == modules  # the same objects at the same paths
    assert all(p is params[n] for n, p in model.named_parameters()) and set(params) == {
        n for n, _ in model.named_parameters()}
    now = model.state_dict()
    assert list(now) == list(sd) and all(torch.equal(now[k], sd[k]) for k in sd)
    for m in model.modules():
        assert not [k for k in m.__dict__ if k.startswith("_anysr_")], type(m).__name__
        for table in ("_forward_pre_hooks", "_forward_hooks"):
            assert not getattr(m, table), (type(m).__name__, table)
    with torch.no_grad():
        assert torch.equal(call(model), out_before)


@pytest.mark.parametrize("kind", sorted(ENCODERS))
def test_round_trip_encoders(kind):
    model = ENCODERS[kind]().eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        out = model(x)
    before = snapshot(model)
    anysr.anysrify(model, anysr.AnySRConfig(gate="paper", seed=0))
    randomize_gates(model)
    with torch.no_grad(), anysr.use_scale(model, 2.0):
        assert not torch.equal(model(x), out)  # converted: another function at x2
    assert anysr.unanysrify(model) is model
    assert_restored(model, before, out, lambda m: m(x))
    anysr.anysrify(model, anysr.AnySRConfig(seed=0))  # converts again, identity gates: same function
    with torch.no_grad(), anysr.use_width(model, 1.0):
        torch.testing.assert_close(model(x), out)


def test_round_trip_liif_with_slim_decoder_keeps_fine_tuned_weights():
    model = build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16, hidden_list=[20, 12]).train()
    inp = torch.randn(2, 3, 6, 6)
    coord = make_coord((9, 9)).unsqueeze(0).expand(2, 81, 2).contiguous()
    cell = cell_for((9, 9), 2, 81)
    before = snapshot(model)
    anysr.anysrify(model, anysr.AnySRConfig(decoder="slim", seed=0))
    assert type(model.imnet).__name__ == "SlimMLP"
    with torch.no_grad():  # a fine-tuning step changed weights: they stay in the restored model
        model.encoder.body[0].body[0].weight.add_(0.01)
        model.imnet.layers[0].bias.add_(0.02)
    model.eval()  # the mode set after conversion is the mode of the restored modules
    sd = {k: v.clone() for k, v in model.state_dict().items() if "anysr_" not in k}
    anysr.unanysrify(model)
    assert type(model.imnet).__name__ == "MLP" and not model.training and not model.encoder.body[0].training
    plain = build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16, hidden_list=[20, 12]).eval()
    plain.load_state_dict(sd)
    with torch.no_grad():
        out = plain(inp, coord, cell)
    assert_restored(model, (before[0], before[1], sd), out, lambda m: m(inp, coord, cell))


def test_round_trip_after_a_dtype_change_and_with_set_scale():
    """A .double() after conversion replaces tensors on the converted modules: the restored modules
    hold them; the set_scale recorder (an instance patch) is removed."""

    class IndexNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.scales, self.scale, self.enc = [2.0, 4.0], 2.0, tiny_edsr()

        def set_scale(self, idx):
            self.scale = self.scales[idx]

        def forward(self, x):
            return self.enc(x)

    net = IndexNet().eval()
    reference = copy.deepcopy(net).double()
    anysr.anysrify(net, anysr.AnySRConfig(seed=0))
    assert "set_scale" in net.__dict__
    net.double()
    anysr.unanysrify(net)
    assert "set_scale" not in net.__dict__ and net.enc.body[0].body[0].weight.dtype == torch.float64
    x = torch.randn(1, 3, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(net(x), reference(x))
    assert list(net.state_dict()) == list(reference.state_dict())
    net.set_scale(1)  # the class's own method again
    assert net.scale == 4.0


def test_official_compat_additions_are_removed():
    from anysr_plugin import official
    from anysr_plugin.adapters import official_release
    from conftest import tiny_rdn

    model = tiny_rdn(D=1, C=8).eval()  # the release's RDB layout: 8 dense layers
    keys = list(model.state_dict())
    anysr.anysrify(model, anysr.AnySRConfig(compat="official", widths=official.OFFICIAL_RDN_WIDTHS, seed=0))
    official_release.prepare_official_model(model, "generic")
    assert any("anysr_sub_mean" in k for k in model.state_dict())
    anysr.unanysrify(model)
    assert list(model.state_dict()) == keys and not model._forward_pre_hooks


def test_refusals():
    with pytest.raises(NotAnySRError, match="^EDSR was not converted by anysrify: there is nothing to undo$"):
        anysr.unanysrify(tiny_edsr())
    model = anysr.anysrify(tiny_edsr())
    del model.body[0].__dict__["_anysr_upstream"]  # as a block from an older anysr_plugin
    before = dict(model.named_modules())
    with pytest.raises(AnySRError, match=r"^cannot restore body\.0: no upstream module kept .*the model was not "
                                         r"changed"):
        anysr.unanysrify(model)
    assert dict(model.named_modules()) == before and anysr.is_anysr(model)
