"""LIIF-family adapter: detection, scale recovery from `cell`, gen_feat-first paths, config mapping."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import anysr_plugin as anysr
from anysr_plugin.adapters import detect_adapter, get_adapter
from anysr_plugin.adapters.liif import PAPER_SCHEDULE, defer_features, scale_from_cell
from anysr_plugin.adapters.structure import DeferredFeatures
from anysr_plugin.errors import AnySRError, ConfigError, ScaleError
from anysr_plugin.reference.encoders import EDSR, RDN


def make_coord(h, w):
    ys = -1 + 1 / h + 2 / h * torch.arange(h).float()
    xs = -1 + 1 / w + 2 / w * torch.arange(w).float()
    return torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)


class LIIF(nn.Module):
    """Minimal LIIF look-alike: coord/cell (B, Q, 2) -> (B, Q, 3)."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder
        self.imnet = nn.Sequential(nn.Linear(encoder.out_dim + 4, 16), nn.ReLU(), nn.Linear(16, 3))

    def gen_feat(self, inp):
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, coord, cell=None):
        q = F.grid_sample(self.feat, coord.flip(-1).unsqueeze(1), mode="nearest", align_corners=False)
        q = q[:, :, 0, :].permute(0, 2, 1)
        rel = cell * torch.tensor([self.feat.shape[-2], self.feat.shape[-1]], dtype=cell.dtype)
        return self.imnet(torch.cat([q, coord, rel], -1))

    def forward(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)


class MetaSR(LIIF):
    pass


def liif_model(seed=0, encoder="edsr"):
    torch.manual_seed(seed)
    enc = EDSR(n_resblocks=2, n_feats=16) if encoder == "edsr" else RDN(G0=16, D=2, C=2, G=16)
    return LIIF(enc).eval()


def queries(b, h_lr, scales):
    """coord/cell (B, Q, 2) for per-sample scales (same HR size per sample: the largest)."""
    coords, cells = [], []
    for s in scales:
        h_hr = round(h_lr * s)
        c = make_coord(h_hr, h_hr).view(-1, 2)[: 64]
        coords.append(c)
        cells.append(torch.full_like(c, 2 / h_hr))
    return torch.stack(coords), torch.stack(cells)


def test_scale_from_cell_all_shapes():
    inp = torch.zeros(3, 3, 10, 20)
    cell_q = torch.stack([torch.full((5, 2), 1.0) * torch.tensor([2 / 20, 2 / 60]),
                          torch.full((5, 2), 1.0) * torch.tensor([2 / 25, 2 / 50]),
                          torch.full((5, 2), 1.0) * torch.tensor([2 / 40, 2 / 80])])
    expected = torch.tensor([[2.0, 3.0], [2.5, 2.5], [4.0, 4.0]])
    assert torch.allclose(scale_from_cell(inp, cell_q), expected)
    assert torch.allclose(scale_from_cell(inp, cell_q[:, 0, :]), expected)           # (B, 2)
    assert torch.allclose(scale_from_cell(inp, cell_q[:, :4].view(3, 2, 2, 2)), expected)  # (B, H, W, 2)


@pytest.mark.parametrize("bad, match", [
    (torch.zeros(2, 5, 2), "positive"),
    (torch.ones(2, 5, 3), r"\(B, 2\)"),
    (torch.ones(3, 2), "batch"),
])
def test_scale_from_cell_errors_name_the_problem(bad, match):
    with pytest.raises(ScaleError, match=match):
        scale_from_cell(torch.zeros(2, 3, 8, 8), bad)


def test_cell_clipping_gives_min_s_4_and_full_width():
    """LTE/SRNO test-time clipping multiplies the cell by max(s/4, 1): the recovered scale
    is min(s, 4); with the paper's groups every s > 3.25 runs the full network anyway."""
    inp = torch.zeros(1, 3, 10, 10)
    for s in (2.0, 4.0, 6.0, 12.0):
        cell = torch.full((1, 2), 2 / (10 * s)) * max(s / 4, 1)
        got = float(scale_from_cell(inp, cell)[0, 0])
        assert got == pytest.approx(min(s, 4.0), rel=1e-5)
    model = anysr.anysrify(liif_model())
    assert anysr.active_widths(model, 4.0) == [1.0]


def test_detection_by_name_and_structure():
    assert detect_adapter(liif_model()).name == "liif"
    assert detect_adapter(MetaSR(EDSR(n_resblocks=1, n_feats=16))).name == "liif"
    assert detect_adapter(EDSR(n_resblocks=1, n_feats=16)).name not in ("liif", "lte", "srno")
    model = anysr.anysrify(liif_model())
    state = anysr.control.get_state(model)
    assert state.adapter_name == "liif" and state.block_root == "encoder"
    assert [n for n, _ in model.named_parameters() if "anysr_gate" in n][0].startswith("encoder.body.0.anysr_gate")


def test_detection_on_reference_lookalikes():
    ref = pytest.importorskip("anysr_plugin.reference.liif")
    enc = EDSR(n_resblocks=1, n_feats=16)
    try:
        model = ref.LIIF(encoder=enc)
    except TypeError:
        pytest.skip("reference LIIF has another constructor")
    assert get_adapter("liif").detect(model) and not get_adapter("srno").detect(model)


def test_forward_reads_cell_per_sample_and_matches_fixed_widths():
    model = anysr.anysrify(liif_model(), anysr.AnySRConfig(gate="paper"))
    inp = torch.randn(1, 3, 8, 8)
    for s, w in ((1.5, 0.5), (2.0, 0.7), (3.0, 0.9), (4.0, 1.0)):
        coord, cell = queries(1, 8, [s])
        out = model(inp, coord, cell)
        with anysr.use_width(model, w), anysr.use_scale(model, s):
            ref = model(inp, coord, cell)
        assert torch.allclose(out, ref, atol=1e-6), (s, w)
    # a batch mixing scales equals each sample run alone
    inp2 = torch.randn(3, 3, 8, 8)
    coord, cell = queries(3, 8, [1.5, 2.0, 3.5])
    mixed = model(inp2, coord, cell)
    for b in range(3):
        alone = model(inp2[b:b + 1], coord[b:b + 1], cell[b:b + 1])
        assert torch.allclose(mixed[b:b + 1], alone, atol=1e-5)


def test_full_width_equals_original_model():
    base = liif_model(seed=3)
    import copy

    conv = anysr.anysrify(copy.deepcopy(base))
    inp = torch.randn(2, 3, 8, 8)
    coord, cell = queries(2, 8, [4.0, 4.0])
    assert torch.allclose(conv(inp, coord, cell), base(inp, coord, cell), atol=1e-5)


def test_gen_feat_first_path_gets_the_scale():
    model = anysr.anysrify(liif_model(), anysr.AnySRConfig(gate="paper"))
    inp = torch.randn(1, 3, 8, 8)
    coord, cell = queries(1, 8, [2.0])
    ref = model(inp, coord, cell)
    # without help the encoder runs before the cell exists: full network, one warning
    with pytest.warns(anysr.errors.AnySRWarning, match="no scale"):
        model.gen_feat(inp)
    assert not torch.allclose(model.query_rgb(coord, cell), ref, atol=1e-6)
    # use_scale around the gen_feat-first path (what the launcher does to test.batched_predict)
    with anysr.use_scale(model, scale_from_cell(inp, cell)):
        model.gen_feat(inp)
    assert torch.allclose(model.query_rgb(coord, cell), ref, atol=1e-6)
    # defer_features: gen_feat waits for the first query's cell (test.py / demo.py as __main__)
    cls_dict = dict(type(model).__dict__)
    other = liif_model(seed=1)
    with defer_features(model):
        assert isinstance(model.gen_feat(inp), DeferredFeatures)
        out = torch.cat([model.query_rgb(coord[:, :30], cell[:, :30]),
                         model.query_rgb(coord[:, 30:], cell[:, 30:])], 1)
        assert torch.allclose(out, ref, atol=1e-6)
        # a fixed width is not a scale: still deferred, so the gates see the query's scale
        with anysr.use_width(model, 1.0):
            assert isinstance(model.gen_feat(inp), DeferredFeatures)
            full = model.query_rgb(coord, cell)
        with anysr.use_width(model, 1.0):
            assert torch.allclose(full, model(inp, coord, cell), atol=1e-6)
        # inside forward / under use_scale gen_feat runs at once, as upstream
        with anysr.use_scale(model, 2.0):
            assert isinstance(model.gen_feat(inp), torch.Tensor)
        assert torch.allclose(model(inp, coord, cell), ref, atol=1e-6)
        # other instances of the class are untouched
        assert isinstance(other.gen_feat(inp), torch.Tensor)
    assert dict(type(model).__dict__) == cls_dict  # no patch left on the class
    assert isinstance(model.gen_feat(inp), torch.Tensor)


def test_rdn_encoder_blocks_are_found():
    model = anysr.anysrify(liif_model(encoder="rdn"))
    report = anysr.inspect_targets(model)
    assert [t.family for t in report.targets] == ["rdb", "rdb"]


# ---------------------------------------------------------------------------
# convert-config

UPSTREAM = {
    "train_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": "x", "repeat": 20}},
                      "wrapper": {"name": "sr-implicit-downsampled", "args": {"inp_size": 48}}, "batch_size": 16},
    "model": {"name": "liif", "args": {
        "encoder_spec": {"name": "edsr-baseline", "args": {"no_upsampling": True}},
        "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [256, 256, 256, 256]}}}},
    "optimizer": {"name": "adam", "args": {"lr": 1.0e-4}},
    "epoch_max": 1000, "multi_step_lr": {"milestones": [200, 400, 600, 800], "gamma": 0.5}, "epoch_save": 100,
}


def write_yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_convert_config_writes_anysr_entry_and_paper_schedule(tmp_path):
    up = write_yaml(tmp_path / "up.yaml", UPSTREAM)
    init = tmp_path / "pre.pth"
    torch.save({"model": {"name": "liif", "args": UPSTREAM["model"]["args"], "sd": {"w": torch.zeros(1)}},
                "optimizer": {}, "epoch": 1000}, init)
    cfg = anysr.AnySRConfig(reset_prob=0.4, seed=3)
    out = get_adapter("liif").convert_config(str(up), str(tmp_path / "out.yaml"), cfg, init_from=str(init),
                                             paper_schedule=True)
    data = yaml.safe_load(open(out))
    assert anysr.AnySRConfig.from_dict(data["model"]["anysr"]) == cfg
    assert data["model"]["anysr_init_from"] == str(init.resolve())
    assert "anysr" not in data["model"]["args"]
    assert data["optimizer"]["args"]["lr"] == PAPER_SCHEDULE["lr"] and data["epoch_max"] == 500
    assert data["multi_step_lr"] == {"milestones": [200, 400], "gamma": 0.5}
    assert data["train_dataset"] == UPSTREAM["train_dataset"]
    # AnySRConfig.from_yaml reads the `anysr:` entry of a spec file back (passed as a path:
    # core from_yaml raises OSError ENAMETOOLONG on YAML *text* with a line > 255 chars)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(data["model"]))
    assert anysr.AnySRConfig.from_yaml(spec_file) == cfg


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d["model"].update(name="sronet"), "model.name.*--method srno"),
    (lambda d: d["model"]["args"]["encoder_spec"].update(name="swinir"), "encoder_spec.name"),
    (lambda d: d["model"]["args"]["encoder_spec"]["args"].update(no_upsampling=False), "no_upsampling"),
    (lambda d: d["model"]["args"].update(anysr={}), "model.args.anysr"),
    (lambda d: d.pop("model"), "`model`"),
])
def test_convert_config_errors_name_the_key(tmp_path, mutate, match):
    import copy

    data = copy.deepcopy(UPSTREAM)
    mutate(data)
    up = write_yaml(tmp_path / "up.yaml", data)
    with pytest.raises(ConfigError, match=match):
        get_adapter("liif").convert_config(str(up), str(tmp_path / "o.yaml"), None)
    assert not (tmp_path / "o.yaml").exists()


def test_convert_config_checks_init_from_and_lambda(tmp_path, capsys):
    up = write_yaml(tmp_path / "up.yaml", UPSTREAM)
    with pytest.raises(ConfigError, match="--init-from"):
        get_adapter("liif").convert_config(str(up), str(tmp_path / "o.yaml"), None, init_from=str(tmp_path / "no.pth"))
    wrong = tmp_path / "wrong.pth"
    torch.save({"model": {"name": "metasr", "args": {}, "sd": {"w": torch.zeros(1)}}}, wrong)
    with pytest.raises(ConfigError, match="metasr"):
        get_adapter("liif").convert_config(str(up), str(tmp_path / "o.yaml"), None, init_from=str(wrong))
    # a lambda that does not divide the channels converts with the paper's uneven chunks, named
    get_adapter("liif").convert_config(str(up), str(tmp_path / "o.yaml"), anysr.AnySRConfig(lam=5))
    assert "lambda=5 (pairs after features" in capsys.readouterr().out
    with pytest.raises(AnySRError, match="unknown option"):
        get_adapter("liif").convert_config(str(up), str(tmp_path / "o.yaml"), None, epochs=3)


def test_convert_config_cli(tmp_path, capsys):
    from anysr_plugin.cli import main

    up = write_yaml(tmp_path / "up.yaml", UPSTREAM)
    rc = main(["convert-config", "--method", "lte", str(up), "-o", str(tmp_path / "o.yaml"), "--widths", "0.6,1.0",
               "--scale-bounds", "2.5", "--gate", "paper"])
    assert rc == 0
    cfg = anysr.AnySRConfig.from_dict(yaml.safe_load(open(tmp_path / "o.yaml"))["model"]["anysr"])
    assert cfg.widths == (0.6, 1.0) and cfg.gate == "paper"
    assert ("# run it from your checkout's root with its training script (no checkout found next to the config; "
            "--repo DIR names it; the upstream lte repository's is train.py): anysr launch lte -- <training script> "
            "--config <this file>\n") in (tmp_path / "o.yaml").read_text()
    rc = main(["convert-config", "--method", "liif", str(up), "-o", str(tmp_path / "p.yaml"), "--widths", "0.6,1.0"])
    assert rc == 2 and "scale_bounds" in capsys.readouterr().err
