"""Where AnySR pays off: encoder share and whole-model saving by method, encoder and scale.

AnySR slims only the encoder's blocks; the implicit decoder (LIIF's imnet, SRNO's Galerkin
layers and pointwise decoder, a Meta-SR weight-prediction head) runs at full cost on every HR
pixel.  So the whole-model saving at a scale is (encoder share) x (encoder saving), and the
encoder share falls with the scale (the encoder runs on LR pixels, the decoder on HR pixels).

Each row counts one whole super-resolution call of the original and of its anysrified copy at
the width the scale selects (AnySR-dagger), at the paper's consistent pixel size (HR 400x600,
LR = HR / s), with ``anysr_plugin.cost.cost_split`` (the call's inputs come from the model's
method adapter, the encoder is the adapter's block root).  Models: the package's reference
look-alikes at their upstream default sizes (LIIF ``imnet`` 4 x 256 with feature unfolding;
SRNO width 256, 16 Galerkin heads; EDSR-baseline 16 x 64, RDN config B 16 x 8 x 64 on 64,
RCAN 10 x 20 x 64) and, for Meta-SR, the head LIIF's repository ships as ``metasr``, written here
from its documented structure (``imnet`` 3 -> 256 -> C*9*3 per HR pixel, applied to the 3x3
unfolded feature at the nearest LR pixel).  SRNO is defined upstream for EDSR-baseline and RDN
only.

    python examples/where_anysr_pays_off.py [--hr-size 400x600] [--scales 2 3 4] [--out examples/where_anysr_pays_off]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import anysr_plugin as anysr
from anysr_plugin.coords import make_coord
from anysr_plugin.cost import build_model, cost_split, parse_size
from anysr_plugin.reference.liif import MLP
from anysr_plugin.files import write_text  # atomic: a stopped run never leaves half a file

MODELS = [("LIIF", "liif-edsr-baseline"), ("LIIF", "liif-rdn"), ("LIIF", "liif-rcan"),
          ("SRNO", "srno-edsr-baseline"), ("SRNO", "srno-rdn"),
          ("Meta-SR head", "edsr-baseline"), ("Meta-SR head", "rdn"), ("Meta-SR head", "rcan")]


class MetaSR(nn.Module):
    """Meta-SR upscaling head over an LR encoder, ``forward(inp, coord, cell)`` as LIIF's
    repository calls its ``metasr`` model: per HR query, ``imnet`` (3 -> 256 -> C*9*3) maps
    (offset to the nearest LR pixel, 1/s) to the weights of a 3x3 conv from C channels to RGB,
    applied to that pixel's unfolded feature."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.imnet = MLP(3, encoder.out_dim * 9 * 3, [256])

    def gen_feat(self, inp):
        self.feat = self.encoder(inp)
        return self.feat

    def query_rgb(self, coord, cell):
        feat = self.feat
        B, C, H, W = feat.shape
        feat = F.unfold(feat, 3, padding=1).view(B, C * 9, H, W)
        q = coord - cell / 2  # the query's top-left corner picks the LR pixel
        grid = q.flip(-1).unsqueeze(1)
        q_feat = F.grid_sample(feat, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        centres = make_coord((H, W), flatten=False).to(feat).permute(2, 0, 1).unsqueeze(0).expand(B, 2, H, W)
        q_centre = F.grid_sample(centres, grid, mode="nearest", align_corners=False)[:, :, 0, :].permute(0, 2, 1)
        rel = (q - q_centre) * torch.tensor([H / 2, W / 2]).to(feat)
        r_rev = cell[:, :, :1] * (H / 2)  # = 1 / s_h
        weights = self.imnet(torch.cat([rel, r_rev], -1).view(-1, 3)).view(-1, C * 9, 3)
        Q = coord.shape[1]
        return torch.bmm(q_feat.contiguous().view(B * Q, 1, C * 9), weights).view(B, Q, 3)

    def forward(self, inp, coord, cell):
        self.gen_feat(inp)
        return self.query_rgb(coord, cell)


def _pct(x: float) -> str:
    """A saving in percent; at x4 (full width) the gates' few MACs round to 0.0 %."""
    return f"{100 * x:.1f}%" if abs(100 * x) >= 0.05 else "0.0%"


def build(method: str, name: str) -> nn.Module:
    if method == "Meta-SR head":
        torch.manual_seed(0)
        return MetaSR(build_model(name)).eval()
    return build_model(name).eval()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hr-size", default="400x600")
    p.add_argument("--scales", nargs="+", type=float, default=[2.0, 3.0, 4.0])
    p.add_argument("--out", default=None, help="folder for results.md / results.json")
    args = p.parse_args(argv)
    hr = parse_size(args.hr_size)
    rows, lines = [], []
    lines.append(f"HR {hr[0]}x{hr[1]}, LR = HR / s; AnySR-dagger (width by scale: x2 0.7, x3 0.9, x4 1.0); "
                 "GMACs of one whole call.\n")
    lines.append("| method | encoder | scale | width | original GMACs (whole / encoder) | encoder share | "
                 "encoder saving | whole-model saving |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for method, name in MODELS:
        original = build(method, name)
        model = anysr.anysrify(copy.deepcopy(original), anysr.AnySRConfig()).eval()
        encoder = name.split("-", 1)[1] if method != "Meta-SR head" else name
        for r in cost_split(model, original, args.scales, widths="policy", hr_size=hr):
            rows.append({"method": method, "encoder": encoder, **asdict(r)})
            lines.append(f"| {method} | {encoder} | x{r.scale[0]:g} | {r.width:g} | "
                         f"{r.original_macs / 1e9:.1f} / {r.original_encoder_macs / 1e9:.1f} | "
                         f"{100 * r.encoder_share:.1f}% | {_pct(1 - r.encoder_ratio)} | {_pct(1 - r.model_ratio)} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cmd = "python examples/where_anysr_pays_off.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_text(out / "results.md", f"`{cmd.strip()}`\n\n{text}\n")
        write_text(out / "results.json", json.dumps({"hr_size": hr, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
