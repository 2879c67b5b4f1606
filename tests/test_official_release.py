"""Official AnySR release: key map, spec conversion both ways, and the opt-in compatibility mode,
checked against an independent implementation of the release's documented behaviour
(``lookalike_anysr_release.py``: its registry, spec handling, encoders and test loop)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import anysr_plugin as anysr
from anysr_plugin import official
from anysr_plugin.adapters import official_release
from anysr_plugin.cli import main as cli_main
from anysr_plugin.errors import CheckpointError
from anysr_plugin.reference import encoders as reference_encoders
from anysr_plugin.reference.encoders import EDSR, RDN
from anysr_plugin.reference.models import make as reference_make, make_coord

import lookalike_anysr_release as lookalike
from conftest import SRNOStub
from lookalike_anysr_release import ReleaseEDSR


def release_encoder(seed=0):
    torch.manual_seed(seed)
    enc = ReleaseEDSR(n_resblocks=2)
    for blk in enc.body[:-1]:
        for m in (blk.fc1, blk.fc2):
            nn.init.normal_(m.weight, std=0.2)
            nn.init.normal_(m.bias, std=0.2)
        for m in (blk.conv1, blk.conv2):
            m.weight.data *= 0.3
    return enc.eval()


def converted_encoder(release):
    ours = EDSR(n_resblocks=2, n_feats=64).eval()
    anysr.anysrify(ours, official.official_config(), adapter="generic")
    official_release.prepare_official_model(ours, "generic")
    ours.load_state_dict(official_release.official_to_ours(release.state_dict()))
    return ours


# ---------------------------------------------------------------------------


def test_documented_groups_and_signs():
    groups = {1.1: 0, 1.7: 0, 1.8: 1, 2.5: 1, 2.6: 2, 3.2: 2, 3.3: 3, 4.0: 3, 1.0: 3, 4.1: 3, 1.75: 3, 2.05: 3, 6.0: 3}
    for s, g in groups.items():
        assert official.official_group(s) == g, s
        assert official.official_group(float(torch.tensor(s))) == g, s  # float32 scales read from a cell
    for s in (1.1, 1.3, 1.5, 2.1, 3.9, 4.1):
        assert official.official_sign(s) == -1.0
    for s in (1.0, 1.2, 2.0, 3.0, 4.0, 2.05, 1.75):
        assert official.official_sign(s) == 1.0


def test_key_map_both_ways():
    rel = release_encoder()
    sd = {f"encoder.{k}": v for k, v in rel.state_dict().items()}
    sd["fc1.weight"] = torch.zeros(256, 256, 1, 1)  # SRNO's own decoder fc1 is not a gate
    ours = official_release.official_to_ours(sd)
    assert ours["encoder.body.1.anysr_gate.fc1.weight"].shape == (128, 72)
    assert ours["encoder.body.1.anysr_gate.fc2.weight"].shape == (64, 128)
    assert torch.equal(ours["encoder.body.0.body.0.weight"], sd["encoder.body.0.conv1.weight"])
    assert torch.equal(ours["encoder.body.0.body.2.bias"], sd["encoder.body.0.conv2.bias"])
    assert ours["fc1.weight"].shape == (256, 256, 1, 1) and "encoder.body.2.weight" in ours
    back = official_release.ours_to_official(ours)
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)


def test_compat_mode_reproduces_the_release():
    rel = release_encoder()
    ours = converted_encoder(rel)
    x = torch.rand(2, 3, 8, 8)
    # odd/even first decimals in every group, off-grid 1.75 / 2.05 (full width), x6 out of range
    for s in (1.1, 1.75, 2.0, 2.05, 2.3, 2.6, 3.1, 3.7, 6.0):
        rel.scale = rel.scale2 = torch.tensor(s)
        with torch.no_grad(), anysr.use_scale(ours, s):
            ref, out = rel(x), ours(x)
        assert torch.allclose(ref, out, atol=1e-5), (s, float((ref - out).abs().max()))


def test_default_mode_stays_paper_faithful():
    """Without compat: 1.75 runs width 0.5 (continuous bounds) where the release runs the full network,
    and no sign flip / sub_mean happens."""
    rel = release_encoder()
    ours = EDSR(n_resblocks=2, n_feats=64).eval()
    anysr.anysrify(ours, official.official_config(compat=None), adapter="generic")
    ours.load_state_dict(official_release.official_to_ours(rel.state_dict()))
    assert anysr.active_widths(ours, 1.75) == [0.5]
    x = torch.rand(1, 3, 8, 8)
    rel.scale = rel.scale2 = torch.tensor(1.75)
    with torch.no_grad(), anysr.use_scale(ours, 1.75):
        assert not torch.allclose(rel(x), ours(x), atol=1e-3)


def SRNOLike():
    return SRNOStub(EDSR(n_resblocks=2, n_feats=64))


def release_checkpoint(path, encoder="edsr-anysr-baseline"):
    rel = release_encoder()
    head = SRNOLike()
    sd = {f"encoder.{k}": v for k, v in rel.state_dict().items()}
    sd.update({k: v for k, v in head.state_dict().items() if not k.startswith("encoder.")})
    spec = {"name": "sronet", "path": "./srno_edsr_baseline_epoch_1000.pth",
            "args": {"encoder_spec": {"name": encoder, "args": {"no_upsampling": True}, "path": "x.pth"},
                     "width": 256, "blocks": 16}, "sd": sd}
    torch.save({"model": spec, "optimizer": {"name": "adam", "args": {"lr": 1e-5}}, "epoch": 500}, path)
    return rel


def test_convert_checkpoint_official_cli(tmp_path):
    rel = release_checkpoint(tmp_path / "anysr_edsr_500.pth")
    assert cli_main(["convert-checkpoint", "--official", str(tmp_path / "anysr_edsr_500.pth"),
                     "-o", str(tmp_path / "ours.pth")]) == 0
    ck = torch.load(tmp_path / "ours.pth", weights_only=True)
    spec = ck["model"]
    assert spec["name"] == "sronet" and "path" not in spec
    assert spec["args"]["encoder_spec"] == {"name": "edsr-baseline", "args": {"no_upsampling": True}}
    cfg = anysr.AnySRConfig.from_dict(spec["anysr"])
    assert cfg.compat == "official" and cfg.widths == official.OFFICIAL_EDSR_WIDTHS and cfg.gate == "paper"
    model = SRNOLike().eval()
    anysr.anysrify(model, cfg, adapter="srno")
    official_release.prepare_official_model(model)
    model.load_state_dict(spec["sd"])  # strict: every key maps
    x = torch.rand(1, 3, 9, 9)
    rel.scale = rel.scale2 = torch.tensor(3.1)
    with torch.no_grad(), anysr.use_scale(model, 3.1):
        model.gen_feat(x)
        assert torch.allclose(model.feat, rel(x), atol=1e-5)
    # safetensors + yaml output too
    assert cli_main(["convert-checkpoint", "--official", str(tmp_path / "anysr_edsr_500.pth"),
                     "-o", str(tmp_path / "ours.safetensors")]) == 0
    assert (tmp_path / "ours.yaml").is_file()


def test_unsupported_release_files_are_refused(tmp_path):
    release_checkpoint(tmp_path / "rdn.pth", encoder="rdn-anysr")
    assert cli_main(["convert-checkpoint", "--official", str(tmp_path / "rdn.pth"), "-o", str(tmp_path / "o.pth")]) == 2
    release_checkpoint(tmp_path / "edsr_big.pth", encoder="edsr-anysr")  # crashes at width 1.0 in the release
    with pytest.raises(CheckpointError, match="edsr-anysr"):
        official_release.convert_official_spec(torch.load(tmp_path / "edsr_big.pth", weights_only=True)["model"])
    torch.save({"model": {"name": "sronet", "args": {}, "sd": {"encoder.body.0.body.0.weight": torch.zeros(1)}}},
               tmp_path / "plain.pth")
    assert cli_main(["convert-checkpoint", "--official", str(tmp_path / "plain.pth"), "-o", str(tmp_path / "p.pth")]) == 2
    bad = {"encoder.body.0.fc1.weight": torch.zeros(128, 72, 3, 3)}
    with pytest.raises(CheckpointError, match="1x1"):
        official_release.official_to_ours(bad)


# ---------------------------------------------------------------------------
# the release's own checkpoints, both ways, through its registry and test loop

#: HR test image size (not square, not a multiple of the scales)
HR_IMAGE = (67, 59)
#: x1.5 .. x4 on and off the integer grid, x6 / x12 with the --mcell clip
SCALES = (1.5, 2, 2.3, 2.7, 3, 3.7, 4, 6, 12)
TOL = 1e-6


def write_release_checkpoint(tmp_path, kind):
    """A release checkpoint as its train.py saves one: its spec (``path`` keys, encoder
    ``edsr-anysr-baseline`` / ``rdn-anysr``), built through its registry, gates trained."""
    pretrain = tmp_path / f"srno_{kind}_epoch_1000.pth"  # the SRNO file its sronet constructor opens
    torch.save({"model": {"name": "sronet", "args": {}, "sd": {}}}, pretrain)
    enc_args = {"no_upsampling": True, "n_resblocks": 4} if kind == "edsr" else {"no_upsampling": True, "rgb_range": 1}
    spec = {"name": "sronet", "path": str(pretrain),
            "args": {"encoder_spec": {"name": "edsr-anysr-baseline" if kind == "edsr" else "rdn-anysr",
                                      "path": str(pretrain), "args": enc_args}, "width": 16, "blocks": 4}}
    torch.manual_seed(0)
    model = lookalike.make(spec, load_sd=True)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("encoder.") and (".fc1." in name or ".fc2." in name):
                p.normal_(0, 0.2)
            if name == "encoder.sub_mean.bias":
                p.add_(0.05)  # trained: must travel
    path = tmp_path / f"anysr_{kind}_500.pth"
    torch.save({"model": {**spec, "sd": model.state_dict()}, "optimizer": {"name": "adam"}, "epoch": 500}, path)
    return path


def ours_from(path):
    """Our model from an upstream-format checkpoint of ours (spec + anysr entry + sd), strictly."""
    spec = torch.load(path, weights_only=True)["model"]
    model = reference_make({"name": spec["name"], "args": spec["args"]})
    anysr.anysrify(model, anysr.AnySRConfig.from_dict(spec["anysr"]), adapter="srno")
    official_release.prepare_official_model(model)
    model.load_state_dict(spec["sd"])
    return model.eval()


def ours_eval_call(model, inp, hr_size, s, mcell=True):
    """The same call as the release's test loop, without the scale attributes."""
    coord = make_coord(hr_size, flatten=False).unsqueeze(0)
    cell = torch.tensor([[2 / hr_size[0], 2 / hr_size[1]]])
    with torch.no_grad():
        return model(inp, coord, cell * (max(s / 4, 1) if mcell else 1))


@pytest.fixture
def short_rdn(monkeypatch):
    """RDN config B with 2 RDBs instead of 16 in both our look-alike and the release's (the
    layout of each RDB is the release's; the depth only costs time)."""
    monkeypatch.setitem(reference_encoders.RDN_CONFIGS, "B", (2, 8, 64))
    monkeypatch.setitem(lookalike.RDN_CONFIGS, "B", (2, 8, 64))


@pytest.mark.parametrize("kind", ["edsr", "rdn"])
def test_release_round_trip_through_its_registry(tmp_path, kind, short_rdn):
    rel_path = write_release_checkpoint(tmp_path, kind)
    rel_sd = torch.load(rel_path, weights_only=True)["model"]["sd"]
    release_model = lookalike.test_make(torch.load(rel_path, weights_only=True)["model"], rel_path, load_sd=True).eval()

    # release -> ours
    assert cli_main(["convert-checkpoint", "--official", str(rel_path), "-o", str(tmp_path / "ours.pth")]) == 0
    ours = ours_from(tmp_path / "ours.pth")
    # ours -> release: the release's own spec, built by its registry and loaded strictly by its test_make
    back = tmp_path / "back.pth"
    assert cli_main(["convert-checkpoint", "--to-official", str(tmp_path / "ours.pth"), "-o", str(back)]) == 0
    spec = torch.load(back, weights_only=True)["model"]
    enc = spec["args"]["encoder_spec"]
    assert enc["name"] == ("edsr-anysr-baseline" if kind == "edsr" else "rdn-anysr")
    assert spec["path"] == enc["path"] == str(back.resolve()) and not any(k.startswith("anysr") for k in spec)
    assert set(spec["sd"]) == set(rel_sd) and all(torch.equal(spec["sd"][k], rel_sd[k]) for k in rel_sd)
    reloaded = lookalike.test_make(spec, back, load_sd=True).eval()

    worst = {}
    for s in SCALES:
        lr, hr = lookalike.test_sizes(HR_IMAGE, s)
        inp = torch.rand(1, 3, *lr, generator=torch.Generator().manual_seed(int(s * 10))) * 2 - 1
        out = ours_eval_call(ours, inp, hr, s)
        worst[s] = (float((lookalike.eval_call(release_model, inp, hr, s) - out).abs().max()),
                    float((lookalike.eval_call(reloaded, inp, hr, s) - out).abs().max()))
    lr, hr = lookalike.test_sizes(HR_IMAGE, 6)  # without --mcell the cell is not clipped
    inp = torch.rand(1, 3, *lr) * 2 - 1
    out = ours_eval_call(ours, inp, hr, 6, mcell=False)
    worst["6 no mcell"] = (float((lookalike.eval_call(release_model, inp, hr, 6, mcell=False) - out).abs().max()),
                            float((lookalike.eval_call(reloaded, inp, hr, 6, mcell=False) - out).abs().max()))
    print(f"\n{kind}: max |ours - release| per scale (release->ours, ours->release):",
          ", ".join(f"x{s}: {a:.1e} / {b:.1e}" for s, (a, b) in worst.items()))
    assert all(a <= TOL and b <= TOL for a, b in worst.values()), worst

    # ours -> release -> ours is the identity on tensors
    assert cli_main(["convert-checkpoint", "--official", str(back), "-o", str(tmp_path / "ours2.pth")]) == 0
    sd1 = torch.load(tmp_path / "ours.pth", weights_only=True)["model"]["sd"]
    sd2 = torch.load(tmp_path / "ours2.pth", weights_only=True)["model"]["sd"]
    assert set(sd1) == set(sd2) and all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_without_the_nominal_scale_the_gates_would_differ(tmp_path):
    """The same comparison with the cell-read scale (what compat mode did before): x2.3 runs
    another width, x6 feeds the gates 4 under --mcell; so the tolerance above is meaningful."""
    rel_path = write_release_checkpoint(tmp_path, "edsr")
    release_model = lookalike.test_make(torch.load(rel_path, weights_only=True)["model"], rel_path, load_sd=True).eval()
    assert cli_main(["convert-checkpoint", "--official", str(rel_path), "-o", str(tmp_path / "ours.pth")]) == 0
    ours = ours_from(tmp_path / "ours.pth")
    for s in (2.3, 6):
        lr, hr = lookalike.test_sizes(HR_IMAGE, s)
        inp = torch.rand(1, 3, *lr) * 2 - 1
        cell_scale = min(hr[0] / lr[0], 4.0), min(hr[1] / lr[1], 4.0)
        with anysr.use_scale(ours, cell_scale):
            out = ours_eval_call(ours, inp, hr, s)
        assert float((lookalike.eval_call(release_model, inp, hr, s) - out).abs().max()) > 1e-4, s


def test_nominal_scale_from_sizes():
    # the release's data: h_lr = floor(H / s), h_hr = round(h_lr * s)
    for s in (1.5, 2.3, 2.7, 3.7, 6, 12, 2.0, 3.1):
        for size in ((67, 59), (256, 256), (481, 321)):
            lr, hr = lookalike.test_sizes(size, s)
            assert official.nominal_scale(lr, hr) == (s, s), (s, size)
    assert official.nominal_scale((40, 40), (100, 90)) == (2.5, 2.25)  # 2.25 fits no grid scale
    assert official.nominal_scale((10, 20), (20, 60)) == (2.0, 3.0)   # anisotropic, both on the grid
    assert official.nominal_scale((20, 20), (45, 45)) == (2.25, 2.25)  # off the grid: kept (full network)


def call_scale_of(coord, cell, lr=(11, 9)):
    from anysr_plugin.adapters import get_adapter

    inp = torch.zeros(1, 3, *lr)
    return official.release_call_scale(get_adapter("srno"), (inp, coord, cell), {}, torch.zeros(1, 2)).tolist()


def test_release_call_scale_reads_the_hr_size_from_coord():
    lr, hr = lookalike.test_sizes(HR_IMAGE, 6)
    cell = torch.tensor([[2 / hr[0], 2 / hr[1]]])
    grid = make_coord(hr, flatten=False).unsqueeze(0)
    assert call_scale_of(grid, cell * 1.5, lr) == [[6.0, 6.0]]                  # --mcell: cell clipped to x4
    assert call_scale_of(grid.reshape(1, -1, 2), cell * 1.5, lr) == [[6.0, 6.0]]  # flattened (B, Q, 2) coord
    subset = grid[:, :lr[0], :lr[1]]                                         # training: an LR-size subset
    assert call_scale_of(subset, cell, lr) == [[6.0, 6.0]]
    lr, hr = lookalike.test_sizes(HR_IMAGE, 2.3)
    (got,) = call_scale_of(make_coord(hr, flatten=False).unsqueeze(0), torch.tensor([[2 / hr[0], 2 / hr[1]]]), lr)
    assert got == pytest.approx([2.3, 2.3]) and hr[0] / lr[0] != pytest.approx(2.3)


def test_default_mode_still_reads_the_cell(tmp_path):
    """compat mode is opt-in: the paper path's gates still see the (clipped) cell's scale."""
    model = reference_make({"name": "sronet", "args": {"encoder_spec": {"name": "edsr-baseline", "args": {
        "n_resblocks": 2, "no_upsampling": True}}, "width": 16, "blocks": 4}}).eval()
    anysr.anysrify(model, anysr.AnySRConfig(gate="paper"), adapter="srno")
    lr, hr = lookalike.test_sizes(HR_IMAGE, 6)
    inp = torch.rand(1, 3, *lr)
    with anysr.use_scale(model, (hr[0] / lr[0] / 1.5, hr[1] / lr[1] / 1.5)):
        expected = ours_eval_call(model, inp, hr, 6)
    assert torch.equal(ours_eval_call(model, inp, hr, 6), expected)
    with anysr.use_scale(model, 6.0):
        assert not torch.allclose(ours_eval_call(model, inp, hr, 6), expected, atol=1e-6)


# ---------------------------------------------------------------------------
# --to-official refuses what the release cannot run as trained, naming every difference


def our_checkpoint(path, cfg, encoder="edsr-baseline", enc_args=None, drop=(), anysr_entry=True):
    """An upstream-format checkpoint of ours (as `anysr launch` writes one) for an SRNO model."""
    enc_args = {"no_upsampling": True, **(enc_args or {})}
    if encoder == "rdn":
        enc = RDN(G0=64, RDNconfig="B", D=1)
    else:
        enc = EDSR(n_resblocks=2, n_feats=enc_args.get("n_feats", 64), res_scale=enc_args.get("res_scale", 1))
    model = SRNOStub(enc)
    anysr.anysrify(model, cfg, adapter="srno")
    if cfg.compat == "official":
        official_release.prepare_official_model(model)
    sd = {k: v for k, v in model.state_dict().items() if not any(d in k for d in drop)}
    spec = {"name": "sronet", "args": {"encoder_spec": {"name": encoder, "args": enc_args}, "width": 8, "blocks": 4},
            "sd": sd}
    if anysr_entry:
        spec["anysr"] = cfg.to_dict()
    torch.save({"model": spec, "optimizer": {"name": "adam"}, "epoch": 3}, path)
    return path


EDSR_OK = official.official_config("edsr-anysr-baseline")
REFUSED = {
    "paper defaults": (dict(cfg=anysr.AnySRConfig()), ["anysr.compat", "anysr.gate"]),
    "no compat": (dict(cfg=official.official_config(compat=None)), ["anysr.compat"]),
    "identity gate": (dict(cfg=official.official_config(gate="identity")), ["anysr.gate"]),
    "bounds": (dict(cfg=official.official_config(scale_bounds=(1.5, 2.5, 3.5))), ["anysr.scale_bounds"]),
    "widths": (dict(cfg=official.official_config(widths=(0.25, 0.5, 0.75, 1.0))), ["anysr.widths"]),
    "lam": (dict(cfg=official.official_config(lam=8)), ["anysr.lam", "gate of encoder.body.0"]),
    "interweave": (dict(cfg=official.official_config(interweave="concat")), ["anysr.interweave"]),
    "res_scale": (dict(cfg=EDSR_OK, enc_args={"res_scale": 0.1}), ["res_scale"]),
    "not all gated": (dict(cfg=EDSR_OK, drop=("body.1.anysr_gate",)), ["gated blocks: 1 of 2"]),
    "no anysr entry": (dict(cfg=EDSR_OK, anysr_entry=False), ["no `anysr:` entry"]),
    "rdn paper layout": (dict(cfg=official.official_config("rdn-anysr", compat=None), encoder="rdn"),
                         ["anysr.compat", "RDB layout of encoder.RDBs.0"]),
    "rdn widths": (dict(cfg=official.official_config("rdn-anysr", widths=(0.5, 0.7, 0.9, 1.0)),
                        encoder="rdn"), ["anysr.widths"]),
    "rdn depth": (dict(cfg=official.official_config("rdn-anysr"), encoder="rdn", enc_args={"D": 1}),
                  ["encoder arg D=1"]),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_to_official_refuses_checkpoints_not_trained_in_compat_mode(tmp_path, capsys, case):
    kwargs, named = REFUSED[case]
    src = our_checkpoint(tmp_path / "run.pth", **kwargs)
    before = src.read_bytes()
    out = tmp_path / "release.pth"
    assert cli_main(["convert-checkpoint", "--to-official", str(src), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anysr convert-checkpoint: error: ") and "\n" not in err
    for field in named:
        assert field in err, (field, err)
    assert not out.exists() and src.read_bytes() == before
    ck = torch.load(src, weights_only=True)["model"]
    with pytest.raises(official_release.OfficialCompatError) as info:
        official_release.to_release_checkpoint({k: v for k, v in ck.items() if k != "sd"}, ck["sd"], out)
    assert len(info.value.differences) >= len(named) and isinstance(info.value, CheckpointError)


def test_to_official_names_every_difference_at_once(tmp_path):
    cfg = official.official_config(compat=None, gate="identity", widths=(0.25, 0.5, 0.75, 1.0), lam=2)
    src = our_checkpoint(tmp_path / "run.pth", cfg, enc_args={"res_scale": 0.5})
    ck = torch.load(src, weights_only=True)["model"]
    diffs = official_release.release_differences(ck, ck["sd"])
    for field in ("anysr.compat", "anysr.gate", "anysr.widths", "anysr.lam", "res_scale", "gate of"):
        assert sum(field in d for d in diffs) == 1, (field, diffs)


def test_to_official_accepts_a_compat_model_of_ours_and_writes_the_release_spec(tmp_path):
    src = our_checkpoint(tmp_path / "run.pth", official.official_config("rdn-anysr", seed=3, reset_prob=0.6),
                         encoder="rdn", enc_args={"RDNconfig": "B"})
    assert cli_main(["convert-checkpoint", "--to-official", str(src), "-o", str(tmp_path / "r.pth")]) == 0
    spec = torch.load(tmp_path / "r.pth", weights_only=True)["model"]
    path = str((tmp_path / "r.pth").resolve())
    assert {k: v for k, v in spec.items() if k != "sd"} == {
        "name": "sronet", "path": path, "args": {"encoder_spec": {"name": "rdn-anysr", "path": path, "args": {
            "no_upsampling": True, "RDNconfig": "B"}}, "width": 8, "blocks": 4}}
    assert spec["sd"]["encoder.RDBs.0.fc1.weight"].shape == (256, 144, 1, 1) and "encoder.sub_mean.bias" in spec["sd"]
    # the release's test.py reads torch.save files only
    assert cli_main(["convert-checkpoint", "--to-official", str(src), "-o", str(tmp_path / "r.safetensors")]) == 2
    assert not (tmp_path / "r.safetensors").exists()
