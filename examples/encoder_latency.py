"""CPU latency of the EDSR-baseline encoder's AnySR sub-networks vs the unconverted encoder.

EDSR-baseline encoder (16 ResBlocks, 64 channels) on a 1x3x96x96 input, eval mode, no
grad; widths 0.5 / 0.7 / 0.9 / 1.0 of the anysrified copy and the original encoder are
timed side by side in ONE process, interleaved, after warm-up; medians are compared.

Targets: full width <= 1.05x the original, width 0.7 (the x2
sub-network) <= 0.80x (its FLOPs ratio is 0.697).

    python examples/encoder_latency.py [--repeats 30] [--warmup 5] [--size 96] [--threads N] [--clock wall|cpu] [--json out.json]
"""
from __future__ import annotations

import argparse
import copy
import json

import torch

import anysr_plugin as anysr
from anysr_plugin.bench import bench_widths, format_markdown
from anysr_plugin.cost import count_flops
from anysr_plugin.files import write_text
from anysr_plugin.reference import make_edsr_baseline

TARGETS = {1.0: 1.05, 0.7: 0.80}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall-clock, or process CPU time (robust on a busy machine; use with --threads 1)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    original = make_edsr_baseline().eval()
    model = anysr.anysrify(copy.deepcopy(original)).eval()
    x = torch.rand(1, 3, args.size, args.size)
    report = bench_widths(model, (x,), widths=(0.5, 0.7, 0.9, 1.0), scales=(2.0,), original=original,
                          warmup=args.warmup, repeats=args.repeats, threads=args.threads, memory=True, clock=args.clock)
    print(format_markdown(report))
    full = count_flops(original, x)
    print()
    print("| width | latency ratio (median) | FLOPs ratio | target |")
    print("|---|---|---|---|")
    ok = True
    for r in report["results"]:
        if r["model"] != "anysr":
            continue
        fr = count_flops(model, x, width=r["width"], scale=2.0) / full
        target = TARGETS.get(r["width"])
        status = "-" if target is None else (f"<= {target:.2f} " + ("met" if r["ratio"] <= target else "MISSED"))
        ok &= target is None or r["ratio"] <= target
        print(f"| {r['width']:g} | {r['ratio']:.3f} | {fr:.3f} | {status} |")
    if args.json:
        write_text(args.json, json.dumps(report, indent=2))
    print("\nall targets met" if ok else "\nsome target missed (see the table)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
