"""AnySR in your own code, in ten lines (here on the reference LIIF; use your upstream model instead)."""
import torch
import anysr_plugin as anysr
from anysr_plugin.reference import build_reference, make_coord, cell_for

model = build_reference("liif-edsr-baseline", n_resblocks=4, n_feats=32, seed=0)  # your pretrained LIIF
model = anysr.anysrify(model, anysr.AnySRConfig())        # in place: same object, upstream keys + anysr_* gates
inp, coord, cell = torch.rand(1, 3, 32, 32), make_coord((64, 64))[None], cell_for((64, 64), 1, 64 * 64)
with torch.no_grad(), anysr.use_scale(model, 2.0):        # x2 -> the 0.7-wide sub-network (AnySR†)
    out = model(inp, coord, cell)
with torch.no_grad(), anysr.use_width(model, 0.5), anysr.use_scale(model, 2.0):  # any-resource: pick the width
    small = model(inp, coord, cell)
print(out.shape, anysr.count_flops(model.encoder, inp, width=0.5, scale=2.0) / anysr.count_flops(model.encoder, inp, width=1.0, scale=2.0))
