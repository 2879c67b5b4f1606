"""A scale source is checked before it is trusted: a call it cannot read (wrong shape, extra
columns, rows that do not match the batch, a scale below 1, queries of one sample that disagree) is
refused with a typed error naming the remedy (scale_from=fn, or 'context' with use_scale) and the
way back (unanysrify); anysrify(..., example_inputs=...) finds it before the model changes."""
from __future__ import annotations

import logging
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anysr_plugin as anysr
from anysr_plugin.blocks import AnySRBlock
from anysr_plugin.errors import ConfigError, NoScaleSourceError, ScaleError, ScaleSourceError

from conftest import ChannelRecorder, tiny_edsr

FIX = ("Fix: anysrify(model, cfg, scale_from=fn) with fn(module, args, kwargs) returning the call's (B, 2) scale "
       "(s_h, s_w), each >= 1, or None; or scale_from='context' and run the calls under "
       "anysr_plugin.use_scale(model, s)")
BACK = "anysr_plugin.unanysrify(model) gives the unconverted model back"


class QueryScaleNet(nn.Module):
    """forward(inp, coord, scale) whose `scale` holds 1 / HR size per query, (B, Q, 2): a scale
    argument by name, but no scale by value."""

    def __init__(self, extra=2):
        super().__init__()
        self.encoder = tiny_edsr()
        self.out = nn.Linear(16 + extra, 3)

    def forward(self, inp, coord, scale):
        feat = self.encoder(inp)
        q = F.grid_sample(feat, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)[:, :, 0]
        return self.out(torch.cat([q.permute(0, 2, 1), scale * 100], dim=-1))


class WarpNet(QueryScaleNet):
    """forward(inp, coord, cell) with a (B, Q, 10) `cell` (a warping model's per-query Jacobian)."""

    def __init__(self):
        super().__init__(extra=10)

    def forward(self, inp, coord, cell):
        return super().forward(inp, coord, cell)


def inverse_size(module, args, kwargs):
    """The remedy for QueryScaleNet: s = 1 / (scale * LR size), from the first query."""
    inp, per_query = args[0], args[2] if len(args) > 2 else kwargs["scale"]
    return 1.0 / (per_query[:, 0, :] * torch.tensor([float(inp.shape[-2]), float(inp.shape[-1])]))


def call(batch=1, lr=12, hr=24, columns=2, values=None):
    coord = torch.rand(batch, hr * hr, 2) * 2 - 1
    per_query = torch.full((batch, hr * hr, columns), 1.0 / hr) if values is None else values
    return torch.randn(batch, 3, lr, lr), coord, per_query


def test_scale_argument_holding_per_query_values_is_refused_with_the_remedy():
    model = anysr.anysrify(QueryScaleNet()).eval()
    assert anysr.inspect_targets(model).scale_source == "scale from forward argument `scale`"
    with pytest.raises(ScaleSourceError) as info, torch.no_grad():
        model(*call())
    assert str(info.value) == ("scale from forward argument `scale`: cannot take the scale from this call: a scale "
                               f"tensor must be 0-d, (2,) or (B, 2); got shape (1, 576, 2). {FIX}. {BACK}")
    # the way back, then the remedy: the width follows the scale read by the function
    anysr.unanysrify(model)
    assert not any(isinstance(m, AnySRBlock) for m in model.modules())
    anysr.anysrify(model, scale_from=inverse_size)
    seen = ChannelRecorder(model)
    with torch.no_grad():
        model(*call(hr=24))   # x2 -> width 0.7
        model(*call(hr=48))   # x4 -> the full network
    assert seen.calls == [[11], [11], [16], [16]]


def test_example_inputs_find_it_before_anything_changes(caplog):
    model = QueryScaleNet()
    keys = list(model.state_dict())
    with pytest.raises(ScaleSourceError) as info:
        anysr.anysrify(model, example_inputs=call())
    assert str(info.value) == ("scale from forward argument `scale`: cannot take the scale from the example call: a "
                               "scale tensor must be 0-d, (2,) or (B, 2); got shape (1, 576, 2); the model was not "
                               f"changed. {FIX}")
    assert list(model.state_dict()) == keys and not anysr.is_anysr(model)
    # (args, kwargs) form; the conversion line says what the dry run read
    inp, coord, per_query = call(batch=2)
    per_query[1] = 1.0 / 48
    with caplog.at_level(logging.INFO, logger="anysr_plugin"):
        anysr.anysrify(model, scale_from=inverse_size, example_inputs=((inp,), {"coord": coord, "scale": per_query}))
    line = [r.getMessage() for r in caplog.records if r.name == "anysr_plugin"][-1]
    assert line.endswith("scale from scale_from=inverse_size(module, args, kwargs); checked on the example call: "
                         "2 scale(s), x2 to x4")


def test_example_inputs_without_a_scale_and_bad_forms():
    from anysr_plugin.reference.models import build_reference

    liif = build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=16, hidden_list=[8])
    with pytest.raises(ScaleSourceError, match=r"^scale from forward argument `cell`: the example call carries no "
                                               r"scale it can read; the model was not changed\. Give the call your "
                                               r"trainer makes \(with the scale argument filled in\)\. Fix: "):
        anysr.anysrify(liif, example_inputs=(torch.randn(1, 3, 6, 6), torch.zeros(1, 4, 2), None))
    with pytest.raises(ScaleSourceError, match=r"^example_inputs must be the positional arguments of one call of "
                                               r"the model \(a tuple, or one tensor\) or \(args, kwargs\), got dict"):
        anysr.anysrify(liif, example_inputs={"inp": torch.randn(1, 3, 6, 6)})
    assert not anysr.is_anysr(liif)
    encoder = anysr.anysrify(tiny_edsr(), example_inputs=torch.randn(1, 3, 6, 6))  # context: nothing to read
    assert anysr.is_anysr(encoder)


def test_extra_cell_columns_name_the_context_remedy_which_works():
    model = anysr.anysrify(WarpNet()).eval()
    with pytest.raises(ScaleSourceError) as info, torch.no_grad():
        model(*call(columns=10))
    assert str(info.value) == (
        "scale from forward argument `cell`: cannot take the scale from this call: expected `cell` of shape (B, 2), "
        "(B, Q, 2) or (B, H, W, 2) (cell = 2 / HR size per axis), got (1, 576, 10). " + FIX + ". " + BACK)
    anysr.unanysrify(model)
    anysr.anysrify(model, scale_from="context")
    seen = ChannelRecorder(model)
    with torch.no_grad(), anysr.use_scale(model, 3.0):
        model(*call(columns=10))
    assert seen.calls == [[14], [14]]


@pytest.mark.parametrize("value, shown", [(0.02, "[[0.02, 0.02]]"), (0.5, "[[0.5, 0.5]]")])
def test_scales_below_one_are_refused_never_clamped(value, shown):
    class ScaleNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = tiny_edsr()

        def forward(self, x, scale):
            return self.encoder(x)

    model = anysr.anysrify(ScaleNet()).eval()
    seen = ChannelRecorder(model)
    with pytest.raises(ScaleSourceError) as info, torch.no_grad():
        model(torch.randn(1, 3, 6, 6), torch.tensor([[value, value]]))
    assert str(info.value) == (f"scale from forward argument `scale`: cannot take the scale from this call: it reads a "
                               f"scale below 1 for sample(s) [0]: {shown} (a super-resolution scale is >= 1 on both "
                               f"axes; 1 / scale, 1 / HR size or a cell is not one). {FIX}. {BACK}")
    assert seen.calls == []  # refused before any block ran
    with pytest.raises(ScaleSourceError, match=r"it gives 3 per-sample scales for a batch of 2\. Fix: "):
        model(torch.randn(2, 3, 6, 6), torch.full((3, 2), 2.0))
    with torch.no_grad():
        model(torch.randn(1, 3, 6, 6), 1.0)  # exactly 1 is a scale (the smallest group)
        with anysr.use_scale(model, value):  # use_scale keeps its own rules: positive and finite
            model(torch.randn(1, 3, 6, 6), None)
    assert seen.calls == [[8], [8], [8], [8]]


def test_a_cell_implying_downscaling_and_a_callable_below_one_are_refused():
    from anysr_plugin.reference.models import build_reference, cell_for, make_coord

    liif = anysr.anysrify(build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=16,
                                          hidden_list=[8])).eval()
    coord = make_coord((6, 6)).unsqueeze(0)
    with pytest.raises(ScaleSourceError, match=r"it reads a scale below 1 for sample\(s\) \[0\]: \[\[0\.75, 0\.75\]\]"):
        liif(torch.randn(1, 3, 8, 8), coord, cell_for((6, 6), 1, 36))
    net = anysr.anysrify(QueryScaleNet(), scale_from=lambda m, a, k: torch.tensor([[2.0, 0.9]]))
    with pytest.raises(ScaleSourceError, match=r"^scale from scale_from=.*<lambda>\(module, args, kwargs\): cannot "
                                               r"take the scale from this call: it reads a scale below 1"):
        net(*call())


@pytest.mark.parametrize("order", ["x2 first", "x4 first"])
def test_queries_of_one_sample_that_disagree_are_refused_whatever_their_order(order):
    from anysr_plugin.reference.models import build_reference, make_coord

    liif = anysr.anysrify(build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=16,
                                          hidden_list=[8])).eval()
    coord = make_coord((16, 16)).unsqueeze(0).expand(2, 256, 2)
    cell = torch.full((2, 256, 2), 2 / 16)  # LR 8: x2 everywhere ...
    half = slice(0, 128) if order == "x4 first" else slice(128, 256)
    cell[1, half] = 2 / 32  # ... but sample 1 asks x4 for half of its queries
    with pytest.raises(ScaleSourceError) as info, torch.no_grad():
        liif(torch.randn(2, 3, 8, 8), coord, cell)
    assert str(info.value) == ("scale from forward argument `cell`: cannot take the scale from this call: the queries "
                               "of sample 1 imply different scales, from x2/2 to x4/4 (`cell` is not constant over a "
                               "sample's queries); the encoder runs once per image, at one width, so one scale per "
                               f"image is needed. {FIX}. {BACK}")


def test_deferred_feature_call_checks_its_query_cell_too():
    from anysr_plugin.adapters.structure import defer_features
    from test_deferral_replay import OpIIF

    model = anysr.anysrify(OpIIF()).eval()
    inp = torch.randn(1, 3, 8, 8)
    with defer_features(model), torch.no_grad():
        feat = model("gen_feat", inp=inp)
        with pytest.raises(ScaleSourceError, match=r"^scale from forward argument `cell` of the op-dispatched "
                                                   r"forward\(op, inp, feat, coord, cell\); feature-first calls wait "
                                                   r"for it: cannot take the scale from this call: it reads a scale "
                                                   r"below 1 for sample\(s\) \[0\]: \[\[0\.5, 0\.5\]\]"):
            model("query_rgb", feat=feat, coord=torch.zeros(1, 4, 2), cell=torch.full((1, 4, 2), 2 / 4))


def test_scale_from_names_an_importable_function(tmp_path, monkeypatch):
    (tmp_path / "my_scales.py").write_text(
        "import torch\n\n\ndef inverse_size(module, args, kwargs):\n"
        "    inp, q = args[0], args[2]\n"
        "    return 1.0 / (q[:, 0, :] * torch.tensor([float(inp.shape[-2]), float(inp.shape[-1])]))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = anysr.AnySRConfig(scale_from="my_scales:inverse_size")
    assert anysr.AnySRConfig.from_yaml(cfg.to_yaml()) == cfg
    model = anysr.anysrify(QueryScaleNet(), cfg).eval()
    assert anysr.inspect_targets(model).scale_source == \
        "scale from scale_from=my_scales:inverse_size(module, args, kwargs)"
    seen = ChannelRecorder(model)
    with torch.no_grad():
        model(*call(hr=36))  # x3
    assert seen.calls == [[14], [14]]
    with pytest.raises(NoScaleSourceError, match=r"^scale_from='my_scales:nothing': module 'my_scales' has no "
                                                 r"'nothing'$"):
        anysr.anysrify(QueryScaleNet(), anysr.AnySRConfig(scale_from="my_scales:nothing"))
    with pytest.raises(NoScaleSourceError, match=r"^scale_from='no_such_module_x:f': cannot import module "
                                                 r"'no_such_module_x' \(ModuleNotFoundError: No module named "
                                                 r"'no_such_module_x'\); make it importable"):
        anysr.anysrify(QueryScaleNet(), anysr.AnySRConfig(scale_from="no_such_module_x:f"))
    with pytest.raises(ConfigError, match=r"^AnySRConfig\.scale_from='cell': must be None"):
        anysr.AnySRConfig(scale_from="cell")
    assert issubclass(ScaleSourceError, ScaleError) and "my_scales" in sys.modules


def test_a_scale_pair_in_two_arguments_and_a_scale_column():
    """forward(x, scale, scale2) (ArbSR's convention, s_h and s_w) by structure; a (B, 1) scale is
    one isotropic scale per sample."""

    class PairArgs(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = tiny_edsr()

        def forward(self, x, scale, scale2=None):
            return self.encoder(x)

    model = anysr.anysrify(PairArgs()).eval()
    assert anysr.inspect_targets(model).scale_source == "scale from forward arguments `scale`, `scale2` as (s_h, s_w)"
    seen = ChannelRecorder(model)
    with torch.no_grad():
        model(torch.randn(1, 3, 6, 6), 1.5, 3.0)                                        # max 3 -> 0.9
        model(torch.randn(2, 3, 6, 6), torch.tensor([1.5, 2.0]), scale2=torch.tensor([1.2, 4.0]))
        model(torch.randn(1, 3, 6, 6), 2.0)                                              # isotropic
        model(torch.randn(2, 3, 6, 6), torch.tensor([[1.5], [3.0]]))                     # (B, 1)
    assert seen.calls == [[14], [14], [8, 16], [8, 16], [11], [11], [8, 14], [8, 14]]
    with pytest.raises(ScaleSourceError, match=r"`scale`, `scale2` as \(s_h, s_w\): cannot take the scale from this "
                                               r"call: it reads a scale below 1 for sample\(s\) \[0\]: \[\[2\.0, 0\.5\]\]"):
        model(torch.randn(1, 3, 6, 6), 2.0, 0.5)
