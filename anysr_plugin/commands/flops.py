"""``anysr flops``: parameters and multiply-accumulates per width and scale (Tables IV / V).

Examples::

    anysr flops                                   # EDSR-baseline encoder, x2/x3/x4, HR 400x600
    anysr flops --model liif-edsr-baseline --part encoder      # Table IV's measure
    anysr flops --model liif-edsr-baseline --scales 2 3 4 --widths all --json cost.json
    anysr flops --lr-size 48x48 --scales 2.5 1.5x3

Every run also prints where AnySR pays off: the whole call's MACs (the inputs the model's
method adapter builds) split into the encoder's part (the adapter's block root) and the
blocks' part, the encoder's share of the original and the whole-model saving.  AnySR slims
only the encoder's blocks, so the whole-model saving is the encoder share times the encoder
saving: large for a bare encoder or an RDN encoder, a few percent for LIIF at x2.

"Consistent pixel size" (the paper's): a fixed HR size (``--hr-size``, default 400x600,
the size Table V's counts imply) and LR = floor(HR / s).  ``--lr-size`` fixes the LR
instead.  MACs count every convolution / linear multiply-add that runs; FLOPs = 2 x MACs.
"""
from __future__ import annotations

import argparse

from ..runtime.checkpoint import atomic_write_text
from ..runtime.files import refuse_existing
from ..tools.cost import (PAPER_HR_SIZE, block_costs, blocks_to_markdown, cost_split, cost_table, parse_size,
                          rows_to_markdown, sizes_for, split_to_markdown, to_json)
from ..tools.evaluate import parse_scales
from ._args import output_file, width_list
from ._model import add_model_arguments, load_cli_model


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("flops", help="params and MACs per width / scale / block (Tables IV and V)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--scales", nargs="+", default=["2", "3", "4"], help="scales (2, 2.5, 1.5x3 = s_h x s_w)")
    p.add_argument("--widths", type=width_list("policy", "all"), default="policy",
                   help="'policy' (the scale group's width, Table IV's dagger rows), 'all', or e.g. 0.5,1.0")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--hr-size", default=None, help="fixed HR size HxW (default 400x600: consistent pixel size)")
    g.add_argument("--lr-size", default=None, help="fixed LR size HxW instead")
    p.add_argument("--part", choices=("model", "encoder"), default="model",
                   help="count the whole call or only the encoder (Table IV counts the encoder)")
    p.add_argument("--no-blocks", action="store_true", help="omit the per-block table")
    p.add_argument("--json", type=output_file, default=None, metavar="PATH", help="write the tables as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown", help="stdout format")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    refuse_existing([args.json], args.force, "--json", inputs=[args.checkpoint, args.config])
    original, model = load_cli_model(args)
    scales = parse_scales(args.scales)
    widths = args.widths if args.widths in ("policy", "all") else [float(w) for w in args.widths.split(",")]
    hr = parse_size(args.hr_size) if args.hr_size else None
    lr = parse_size(args.lr_size) if args.lr_size else None
    if hr is None and lr is None:
        hr = PAPER_HR_SIZE
    rows = cost_table(model, scales, widths=widths, hr_size=hr, lr_size=lr, original=original, part=args.part)
    blocks = []
    if not args.no_blocks:
        for s in scales:
            lr_s, _ = sizes_for(s, hr, lr)
            blocks += block_costs(model, lr_s)
    split = cost_split(model, original, scales, widths=widths, hr_size=hr, lr_size=lr)
    text = to_json(rows, blocks, split)
    if args.json:
        atomic_write_text(args.json, text)
    if args.format == "json":
        print(text)
        return 0
    where = f"HR {hr[0]}x{hr[1]} (LR = HR / s)" if hr else f"LR {lr[0]}x{lr[1]}"
    print(f"## {args.model} ({args.part}), {where}\n")
    print(rows_to_markdown(rows))
    print(f"\n## where AnySR pays off: whole model vs encoder ({args.model}, {where})\n")
    print(split_to_markdown(split))
    if blocks:
        print(f"\n## first AnySR block per width (LR of the first scale, {scales[0]})\n")
        print(blocks_to_markdown([b for b in blocks if b.pixels == blocks[0].pixels]))
    return 0
