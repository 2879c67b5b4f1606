"""Official AnySR release: key map, spec conversion, and the opt-in compatibility mode checked
against an independent implementation of the release's documented behaviour
(research/upstream-liif-family.md sections 7.2-7.5), written here from those facts."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anysr_plugin as anysr
from anysr_plugin import official
from anysr_plugin.cli import main as cli_main
from anysr_plugin.errors import CheckpointError
from anysr_plugin.reference.encoders import EDSR, MeanShift

from conftest import SRNOStub


# ---------------------------------------------------------------------------
# independent model of the release's EDSR-anysr encoder (documented semantics)


class USConv2d(nn.Conv2d):
    """Prefix-sliced conv: input channels adapt to the input if us[0]; output int(C*width_mult) if us[1]."""

    def __init__(self, cin, cout, k, us):
        super().__init__(cin, cout, k, padding=k // 2)
        self.us, self.width_mult = us, 1.0

    def forward(self, x):
        cin = x.shape[1] if self.us[0] else self.in_channels
        cout = int(self.out_channels * self.width_mult) if self.us[1] else self.out_channels
        return F.conv2d(x, self.weight[:cout, :cin], self.bias[:cout], self.stride, self.padding)


class ReleaseBlock(nn.Module):
    def __init__(self, nf=64):
        super().__init__()
        self.conv1 = USConv2d(nf, nf, 3, [False, True])
        self.conv2 = USConv2d(nf, nf, 3, [True, False])
        self.fc1 = USConv2d(nf + 8, 2 * nf, 1, [True, False])
        self.fc2 = USConv2d(2 * nf, nf, 1, [False, True])
        self.scale = self.scale2 = None

    def set_width(self, w):
        for m in (self.conv1, self.conv2, self.fc1, self.fc2):
            m.width_mult = w

    def attn(self, feature, r):
        b, c = feature.shape[:2]
        f = feature.mean(dim=(2, 3))
        max_scale = max(r[0], r[1])
        flag = -1 if max_scale * 10 % 2 == 1 else 1          # float32 tensor arithmetic, as released
        r0 = (r * flag).expand(b, -1)
        parts = []
        for i in range(0, c, 16):
            if i + 16 <= c:
                parts += [f[:, i:i + 16], r0]
            else:
                parts.append(f[:, -(c - i):])
        x = torch.cat(parts, 1).view(b, -1, 1, 1)
        return torch.sigmoid(self.fc2(F.relu(self.fc1(x))))

    def forward(self, x):
        out = self.conv1(x)
        out = out * self.attn(out, torch.stack([self.scale, self.scale2]).float())
        return x + self.conv2(F.relu(out))


class ReleaseEDSR(nn.Module):
    def __init__(self, n_resblocks=2, nf=64):
        super().__init__()
        self.sub_mean = MeanShift(1)
        self.add_mean = MeanShift(1, sign=1)
        self.head = nn.Sequential(nn.Conv2d(3, nf, 3, padding=1))
        self.body = nn.Sequential(*[ReleaseBlock(nf) for _ in range(n_resblocks)], nn.Conv2d(nf, nf, 3, padding=1))
        self.scale_list = [round(x * 0.1 + 1, 1) for x in range(1, 31)]
        self.scale = self.scale2 = None

    def forward(self, x):
        x = self.sub_mean(x)
        m = max(self.scale, self.scale2)
        if m in self.scale_list[:7]:
            width = 0.5
        elif m in self.scale_list[7:15]:
            width = 0.7
        elif m in self.scale_list[15:22]:
            width = 0.9
        else:
            width = 1.0
        x = self.head(x)
        res = x
        for blk in self.body[:-1]:
            blk.set_width(width)
            blk.scale, blk.scale2 = self.scale, self.scale2
            res = blk(res)
        res = self.body[-1](res)
        return res + x


def release_encoder(seed=0):
    torch.manual_seed(seed)
    enc = ReleaseEDSR()
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
    official.prepare_official_model(ours, "generic")
    ours.load_state_dict(official.official_to_ours(release.state_dict()))
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
    ours = official.official_to_ours(sd)
    assert ours["encoder.body.1.anysr_gate.fc1.weight"].shape == (128, 72)
    assert ours["encoder.body.1.anysr_gate.fc2.weight"].shape == (64, 128)
    assert torch.equal(ours["encoder.body.0.body.0.weight"], sd["encoder.body.0.conv1.weight"])
    assert torch.equal(ours["encoder.body.0.body.2.bias"], sd["encoder.body.0.conv2.bias"])
    assert ours["fc1.weight"].shape == (256, 256, 1, 1) and "encoder.body.2.weight" in ours
    back = official.ours_to_official(ours)
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
    ours.load_state_dict(official.official_to_ours(rel.state_dict()))
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
    official.prepare_official_model(model)
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
        official.convert_official_spec(torch.load(tmp_path / "edsr_big.pth", weights_only=True)["model"])
    torch.save({"model": {"name": "sronet", "args": {}, "sd": {"encoder.body.0.body.0.weight": torch.zeros(1)}}},
               tmp_path / "plain.pth")
    assert cli_main(["convert-checkpoint", "--official", str(tmp_path / "plain.pth"), "-o", str(tmp_path / "p.pth")]) == 2
    bad = {"encoder.body.0.fc1.weight": torch.zeros(128, 72, 3, 3)}
    with pytest.raises(CheckpointError, match="1x1"):
        official.official_to_ours(bad)
