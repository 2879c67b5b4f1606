"""Inference by scale, by compute budget, and export of a static sub-network.

Run after `anysr demo` (it loads ./anysr_demo/anysr.pt if present, else uses fresh weights).
"""
import os

import torch

import anysr_plugin as anysr
from anysr_plugin.budget import use_budget
from anysr_plugin.export import export_subnet
from anysr_plugin.reference import build_reference, cell_for, make_coord

model = anysr.anysrify(build_reference("liif-edsr-baseline", n_resblocks=4, n_feats=32, hidden_list=[64, 64], seed=0),
                       anysr.AnySRConfig(seed=0))
if os.path.exists("anysr_demo/anysr.pt"):  # the demo's default size
    model.load_state_dict(torch.load("anysr_demo/anysr.pt", weights_only=True))
model.eval()
inp = torch.rand(1, 3, 48, 48)
for scale in (1.5, 2.0, 3.0, 4.0, 6.0):                       # any-scale: the width follows the scale
    H = round(48 * scale)
    coord, cell = make_coord((H, H))[None], cell_for((H, H), 1, H * H)
    with torch.no_grad(), anysr.use_scale(model, scale):
        out = model(inp, coord, cell)
    print(f"x{scale:g}: width {anysr.active_widths(model, scale)[0]:g}, output {tuple(out.shape)}")

coord, cell = make_coord((96, 96))[None], cell_for((96, 96), 1, 96 * 96)
g = {w: anysr.count_flops(model, inp, coord, cell, width=w, scale=2.0) * 2 / 1e9 for w in (0.5, 0.7)}  # GFLOPs
limit = (g[0.5] + g[0.7]) / 2                                 # between the two: only the 0.5-wide one fits
with torch.no_grad(), anysr.use_scale(model, 2.0), use_budget(model, gflops=limit) as budget:
    model(inp, coord, cell)                                   # any-resource: the largest width that fits
print(f"budget {limit:.3f} GFLOPs ->", budget.decisions[-1] if budget.decisions else None)

static = export_subnet(model, 0.7, scale=2.0)                 # plain nn.Module, physically smaller weights
with torch.no_grad(), anysr.use_width(model, 0.7), anysr.use_scale(model, 2.0):
    ref = model(inp, coord, cell)
with torch.no_grad():
    print("export max |diff|:", float((static(inp, coord, cell) - ref).abs().max()))
