"""The official release's RDB layout (compat="official") against an independent plain model of the
release's ``RDN_anysr`` / ``RDB_any`` forward (``lookalike_anysr_release.py``, written from the
documented facts): loops, prefix slices and concatenations."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import anysr_plugin as anysr
from anysr_plugin import official
from anysr_plugin.adapters import official_release
from anysr_plugin.blocks import AnySRRDB, OfficialRDB
from anysr_plugin.blocks import official_rdb as official_rdb_module
from anysr_plugin.cli import main as cli_main
from anysr_plugin.errors import AnySRError, CheckpointError, UnsupportedBlockError
from anysr_plugin.reference.encoders import RDN

from conftest import SRNOStub
from lookalike_anysr_release import ReleaseRDN

WIDTHS = (0.7, 0.8, 0.9, 1.0)
#: documented per-width sizes (section 7.11): fc1 input, fc2 output, LFF input
SIZE_TABLE = {0.7: (98, 88, 536), 0.8: (114, 102, 550), 0.9: (128, 114, 562), 1.0: (144, 128, 576)}
#: a scale of each release group -> the RDN width it selects (section 7.5)
SCALE_OF_WIDTH = {0.7: 1.2, 0.8: 2.0, 0.9: 2.6, 1.0: 4.0}


def release_rdn(seed=0):
    torch.manual_seed(seed)
    rel = ReleaseRDN(D=1)  # one RDB keeps the tests fast on a busy CPU
    with torch.no_grad():
        for rdb in rel.RDBs:
            for m in (rdb.fc1, rdb.fc2):
                nn.init.normal_(m.weight, std=0.2)
                nn.init.normal_(m.bias, std=0.2)
        rel.sub_mean.bias.add_(0.05)  # trained values differ from the init: they must be carried over
    return rel.eval()


def ours_rdn():
    return RDN(G0=64, RDNconfig="B", D=1, C=8, G=64).eval()  # one RDB keeps the tests fast on a busy CPU


def converted(release, adapter="generic"):
    ours = ours_rdn()
    anysr.anysrify(ours, official.official_config("rdn-anysr"), adapter=adapter)
    official_release.prepare_official_model(ours, adapter)
    ours.load_state_dict(official_release.official_to_ours(release.state_dict()))  # strict
    return ours


def run_release(rel, x, s):
    rel.scale = rel.scale2 = torch.tensor(s)
    with torch.no_grad():
        return rel(x)


# ---------------------------------------------------------------------------


def test_release_model_follows_the_documented_size_table():
    rel = release_rdn()
    x = torch.rand(1, 3, 3, 3)
    for w, sizes in SIZE_TABLE.items():
        run_release(rel, x, SCALE_OF_WIDTH[w])
        assert rel.width() == w and tuple(rel.RDBs[0].sizes) == sizes


def test_conversion_builds_official_blocks_with_release_shapes():
    ours = converted(release_rdn())
    blocks = anysr.inspect_targets(ours)
    assert [m for m in ours.modules() if isinstance(m, AnySRRDB)]
    assert all(type(m) is OfficialRDB for m in ours.modules() if isinstance(m, AnySRRDB))
    assert len(blocks.targets) == 1
    sd = ours.state_dict()
    assert sd["RDBs.0.anysr_gate.fc1.weight"].shape == (256, 144)
    assert sd["RDBs.0.anysr_gate.fc2.weight"].shape == (128, 256)
    assert "RDBs.0.convs.7.conv.0.weight" in sd and "RDBs.0.LFF.weight" in sd
    assert "anysr_sub_mean.weight" in sd and "anysr_add_mean.bias" in sd
    assert not ours.anysr_add_mean.weight.requires_grad and ours.anysr_sub_mean.weight.requires_grad


def test_size_table_on_our_code_path(monkeypatch):
    rel = release_rdn()
    ours = converted(rel)
    block = ours.RDBs[0]
    seen = {}
    real_gate_input = block.anysr_gate.gate_input
    block.anysr_gate.gate_input = lambda *a: seen.setdefault("fc1_in", real_gate_input(*a))
    block.anysr_gate.register_forward_hook(lambda m, a, out: seen.update(fc2_out=out.shape[1]))  # returns None
    real_sliced = official_rdb_module.sliced_conv

    def spy(conv, x, out_channels=None, in_index=None):
        if conv is block.LFF:
            seen["lff_in"] = x.shape[1]
        return real_sliced(conv, x, out_channels, in_index)

    monkeypatch.setattr(official_rdb_module, "sliced_conv", spy)
    x = torch.rand(1, 3, 3, 3)
    for width, (fc1_in, fc2_out, lff_in) in SIZE_TABLE.items():
        seen.clear()
        s = SCALE_OF_WIDTH[width]
        with anysr.use_scale(ours, s):  # with gradients: the path that builds the interleaved vector
            out = ours(x)
        assert seen["fc1_in"].shape[1] == fc1_in and seen["fc2_out"] == fc2_out, width
        assert seen.get("lff_in", 576) == lff_in, width  # full width runs the unsliced LFF (576)
        assert torch.allclose(out, run_release(rel, x, s), atol=1e-5), width


@pytest.fixture(scope="module")
def pair():
    rel = release_rdn()
    return rel, converted(rel)


def test_compat_mode_reproduces_the_release_rdn(pair):
    rel, ours = pair
    x = torch.rand(2, 3, 4, 4)
    outs = {}
    # every width, odd/even first decimals (sign flip), off-grid 1.75 / 2.05 (full width), x6
    for s in (1.1, 1.2, 1.75, 2.0, 2.05, 2.3, 2.6, 3.1, 3.7, 4.0, 6.0):
        ref = run_release(rel, x, s)
        with torch.no_grad(), anysr.use_scale(ours, s):
            out = ours(x)
        assert torch.allclose(ref, out, atol=1e-5), (s, float((ref - out).abs().max()))
        outs[s] = out
    assert not torch.allclose(outs[1.2], outs[4.0], atol=1e-3)  # the widths really differ
    assert not torch.allclose(outs[2.3], outs[2.0], atol=1e-4)  # and the sign flip matters


def test_mixed_widths_in_one_batch_equal_per_sample_runs(pair):
    rel, ours = pair
    x = torch.rand(3, 3, 4, 4)
    scales = (1.1, 3.1, 2.0)
    with torch.no_grad(), anysr.use_scale(ours, torch.tensor([[s, s] for s in scales])):
        out = ours(x)
    for b, s in enumerate(scales):
        assert torch.allclose(out[b:b + 1], run_release(rel, x[b:b + 1], s), atol=1e-5), s


def test_fixed_width_and_gradients():
    rel = release_rdn()
    ours = converted(rel)
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad(), anysr.use_width(ours, 0.8), anysr.use_scale(ours, 4.0):
        out = ours(x)
    rel.RDBs[0].set_width(0.8)
    rel.scale = rel.scale2 = torch.tensor(4.0)
    with torch.no_grad():
        y = rel.sub_mean(x)
        f1 = rel.SFENet1(y)
        h = rel.SFENet2(f1)
        outs = []
        for rdb in rel.RDBs:
            rdb.set_width(0.8)
            rdb.scale = rdb.scale2 = torch.tensor(4.0)
            h = rdb(h)
            outs.append(h)
        ref = rel.GFF(torch.cat(outs, 1)) + f1
    assert torch.allclose(out, ref, atol=1e-5)
    ours.train()
    with anysr.use_scale(ours, 2.0):
        ours(x).abs().mean().backward()
    g = ours.RDBs[0].convs[4].conv[0].weight.grad
    assert g[:51].abs().sum() > 0 and g[51:].abs().sum() == 0  # only the first g = 51 filters ran


def test_macs_and_export(pair):
    ours = pair[1]
    block = ours.RDBs[0]
    full = block.conv_macs_per_pixel(1.0)
    assert full == sum((64 + 64 * k) * 64 * 9 for k in range(8)) + 576 * 64
    g = 44
    assert block.conv_macs_per_pixel(0.7) == (
        sum((64 + 64 * k) * 64 * 9 for k in range(4)) + 320 * g * 9 + (320 + g) * 64 * 9
        + (384 + g) * g * 9 + (384 + 2 * g) * 64 * 9 + 536 * 64)
    from anysr_plugin.cost import gate_macs

    # the gate weighs the last 2g channels: fc1 98 -> 256, fc2 256 -> 88 at width 0.7 (size table)
    assert gate_macs(block, 0.7) == 98 * 256 + 256 * 88 and gate_macs(block, 1.0) == 144 * 256 + 256 * 128
    with pytest.raises(AnySRError, match="export_subnet"):
        anysr.export_subnet(ours, 0.7)


def test_default_path_is_unaffected():
    rel = release_rdn()
    for cfg in (None, official.official_config("rdn-anysr", compat=None)):
        ours = ours_rdn()
        anysr.anysrify(ours, cfg, adapter="generic")
        assert {type(m) for m in ours.modules() if isinstance(m, AnySRRDB)} == {AnySRRDB}
        assert ours.RDBs[0].anysr_gate.fc1.weight.shape == (128, 80)  # gate on one dense layer (G=64, lambda 8)
    with pytest.raises(Exception):  # release gate shapes do not fit the paper-faithful layout
        ours.load_state_dict(official_release.official_to_ours(rel.state_dict()))
    # compat mode needs the release's 8 dense layers
    with pytest.raises(UnsupportedBlockError, match="8"):
        anysr.anysrify(RDN(G0=16, D=2, C=3, G=16), official.official_config("rdn-anysr"), adapter="generic")


# ---------------------------------------------------------------------------
# key map and checkpoint conversion


def SRNOLike():
    return SRNOStub(ours_rdn())


def release_sd(rel):
    sd = {f"encoder.{k}": v for k, v in rel.state_dict().items()}
    head = SRNOLike()
    sd.update({k: v for k, v in head.state_dict().items() if not k.startswith("encoder.")})
    return sd


def test_key_map_round_trip():
    rel = release_rdn()
    sd = release_sd(rel)
    assert sd["encoder.RDBs.0.fc1.weight"].shape == (256, 144, 1, 1)
    assert official_release.official_state_dict_kind(sd) == "rdn"
    ours = official_release.official_to_ours(sd)
    assert ours["encoder.RDBs.0.anysr_gate.fc1.weight"].shape == (256, 144)
    assert ours["encoder.RDBs.0.anysr_gate.fc2.weight"].shape == (128, 256)
    assert torch.equal(ours["encoder.anysr_sub_mean.bias"], sd["encoder.sub_mean.bias"])
    assert "encoder.sub_mean.weight" not in ours and "encoder.RDBs.0.fc1.bias" not in ours
    assert ours["fc1.weight"].shape == (8, 8, 1, 1)  # SRNO's own fc1 is not a gate
    assert torch.equal(ours["encoder.RDBs.0.convs.5.conv.0.weight"], sd["encoder.RDBs.0.convs.5.conv.0.weight"])
    back = official_release.ours_to_official(ours)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    # the model's own state dict maps to the release's key set
    model = SRNOLike()
    anysr.anysrify(model, official.official_config("rdn-anysr"), adapter="srno")
    official_release.prepare_official_model(model)
    assert set(official_release.ours_to_official(model.state_dict())) == set(sd)


def write_release_checkpoint(path, rel, encoder="rdn-anysr"):
    spec = {"name": "sronet", "path": "./srno_rdn_baseline_epoch_1000.pth",
            "args": {"encoder_spec": {"name": encoder, "args": {"no_upsampling": True, "rgb_range": 1},
                                      "path": "x.pth"}, "width": 256, "blocks": 16},
            "sd": release_sd(rel)}
    torch.save({"model": spec, "optimizer": {"name": "adam", "args": {"lr": 1e-5}}, "epoch": 500}, path)
    return spec["sd"]


def test_convert_checkpoint_cli_rdn(tmp_path):
    rel = release_rdn()
    orig = write_release_checkpoint(tmp_path / "anysr_rdn.pth", rel)
    assert cli_main(["convert-checkpoint", "--official", str(tmp_path / "anysr_rdn.pth"),
                     "-o", str(tmp_path / "ours.pth")]) == 0
    spec = torch.load(tmp_path / "ours.pth", weights_only=True)["model"]
    assert spec["args"]["encoder_spec"] == {"name": "rdn", "args": {"no_upsampling": True}}
    cfg = anysr.AnySRConfig.from_dict(spec["anysr"])
    assert cfg.compat == "official" and cfg.widths == WIDTHS and cfg.lam == 8 and cfg.gate == "paper"
    model = SRNOLike().eval()
    anysr.anysrify(model, cfg, adapter="srno")
    official_release.prepare_official_model(model)
    model.load_state_dict(spec["sd"])  # strict: every key maps
    x = torch.rand(1, 3, 4, 4)
    with torch.no_grad(), anysr.use_scale(model, 2.3):
        model.gen_feat(x)
    assert torch.allclose(model.feat, run_release(rel, x, 2.3), atol=1e-5)
    # and back to the release's key names
    assert cli_main(["convert-checkpoint", "--to-official", str(tmp_path / "ours.pth"),
                     "-o", str(tmp_path / "back.pth")]) == 0
    back = torch.load(tmp_path / "back.pth", weights_only=True)["model"]["sd"]
    assert set(back) == set(orig) and all(torch.equal(back[k], orig[k]) for k in orig)


def test_mismatched_release_files_are_refused(tmp_path):
    rel = release_rdn()
    write_release_checkpoint(tmp_path / "edsr_named.pth", rel, encoder="edsr-anysr-baseline")
    assert cli_main(["convert-checkpoint", "--official", str(tmp_path / "edsr_named.pth"),
                     "-o", str(tmp_path / "o.pth")]) == 2
    spec = {"name": "sronet", "args": {"encoder_spec": {"name": "rdn-anysr", "args": {"RDNconfig": "A"}}}}
    with pytest.raises(CheckpointError, match="RDNconfig"):
        official_release.convert_official_spec(spec)
