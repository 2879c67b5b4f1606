"""Export AnySR sub-networks as plain models and check them against the slimmable model.

    python examples/export_subnet.py [--out-dir exported]

For the EDSR-baseline encoder (anysrified, gates randomised to stand in for a
fine-tuned model): every width, with the x2 scale folded into the gates, is exported,
compared with ``use_width`` + ``use_scale`` on the slimmable model, traced with
``torch.jit.trace`` and saved; parameters and MACs shrink with the width.
"""
from __future__ import annotations

import argparse
import io
import os

import torch

import anysr_plugin as anysr
from anysr_plugin.cost import count_flops, count_params
from anysr_plugin.files import write_bytes
from anysr_plugin.reference import make_edsr_baseline


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out-dir", default="exported")
    p.add_argument("--scale", type=float, default=2.0)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = anysr.anysrify(make_edsr_baseline(n_resblocks=16)).eval()
    with torch.no_grad():  # stand-in for fine-tuned gates (the identity init makes fc2 zero)
        for name, prm in model.named_parameters():
            if "anysr_gate" in name:
                prm.normal_(0, 0.05)
    os.makedirs(args.out_dir, exist_ok=True)
    x = torch.rand(1, 3, 48, 48)
    print("| width | params | MACs (G) | max abs diff | file |")
    print("|---|---|---|---|---|")
    for w in (0.5, 0.7, 0.9, 1.0):
        sub = anysr.export_subnet(model, w, scale=args.scale)
        with torch.no_grad(), anysr.use_width(model, w), anysr.use_scale(model, args.scale):
            ref = model(x)
        with torch.no_grad():
            traced = torch.jit.trace(sub, (x,))
            diff = float((traced(x) - ref).abs().max())
        path = os.path.join(args.out_dir, f"edsr_baseline_w{w:g}_x{args.scale:g}.pt")
        buf = io.BytesIO()  # serialized in memory: torch.jit.save to a path aborts the process on a full disk
        torch.jit.save(traced, buf)
        write_bytes(path, buf.getvalue())
        print(f"| {w:g} | {count_params(sub):,} | {count_flops(sub, x) / 1e9:.3f} | {diff:.2e} | {path} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
