"""``anysr eval``: PSNR / LPIPS / GFLOPs per scale and width on an image folder.

Examples::

    anysr eval --model liif-edsr-baseline --checkpoint ft.pth --hr Set5/HR --scales 2 3 4
    anysr eval --repo ~/SRNO --checkpoint save/anysr/epoch-last.pth --hr Set5/HR --scales 2 3 4
    anysr eval --hr Set5/HR --baseline bicubic --baseline-only --scales 2 3 4
    anysr eval --model liif-edsr-baseline --hr B100 --scales 2.5 1.5x3 6 12 30 --modes subnet full 0.5
    anysr eval --lr Set5/LR_bicubic/X2 --hr Set5/HR --scales 2 --protocol benchmark --json res.json
    anysr eval ... --modes budget --budget-gflops 50
    anysr eval ... --lpips --lpips-weights alexnet-owt-7be5be79.pth

``--repo DIR`` runs the upstream model itself (built by the checkout's own registry from the
checkpoint's spec); ``--model`` runs a reference look-alike.  Each row gives the width that
ran and the encoder's multiply-adds at that width next to the PSNR.

Data: ``--hr`` (LR made by bicubic downsampling, ``--bicubic pil`` as LIIF / SRNO or
``matlab`` as Meta-SR / ArbSR) or ``--lr`` + ``--hr`` paired folders; without ``--hr``
the scikit-image photographs are used.  Protocols: ``benchmark`` (Y, shave = scale),
``div2k`` (RGB, shave = scale + 6).  Modes: ``subnet`` (AnySR dagger: the scale group's
width), ``full`` (AnySR double dagger), a width, or ``budget``.  ``--json PATH`` writes
``{"results": [{"scale", "width", "psnr", "lpips", "gflops", "encoder_gmacs", "mode"}, ...]}``; a markdown table
is printed (and written next to the JSON as .md, with a PSNR-vs-GFLOPs PNG when
matplotlib is installed).
"""
from __future__ import annotations

import argparse

from ..runtime.checkpoint import atomic_write_text
from ..runtime.files import refuse_existing
from ..tools.evaluate import evaluate, load_dataset, results_to_json, results_to_markdown
from ..tools.plots import PlotError, plot_psnr_vs_gflops
from ._args import device, eval_mode, output_file, positive_float, positive_int
from ._model import add_model_arguments, load_cli_model


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="PSNR / LPIPS / GFLOPs per scale and width (benchmark / div2k protocol)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, default="liif-edsr-baseline")
    p.add_argument("--hr", default=None, help="folder of HR images (default: the scikit-image photographs)")
    p.add_argument("--lr", default=None, help="folder of LR images paired with --hr (by sorted order)")
    p.add_argument("--first-k", type=positive_int, default=None, help="only the first K images")
    p.add_argument("--scales", nargs="+", default=["2", "3", "4"], help="2, 2.5, 1.5x3 (s_h x s_w), 6 ... 30")
    p.add_argument("--modes", nargs="+", type=eval_mode, default=["subnet", "full"], help="subnet, full, budget, or widths")
    p.add_argument("--budget-gflops", type=positive_float, default=None, help="budget of mode 'budget' (GFLOPs per image)")
    p.add_argument("--protocol", choices=("benchmark", "div2k"), default="benchmark")
    p.add_argument("--bicubic", choices=("pil", "matlab"), default="pil", help="how LR images are made")
    p.add_argument("--baseline", choices=("bicubic",), default=None, help="also evaluate bicubic upscaling")
    p.add_argument("--baseline-only", action="store_true", help="evaluate only the baseline (no model)")
    p.add_argument("--lpips", action="store_true", help="also compute LPIPS (AlexNet)")
    p.add_argument("--lpips-weights", default=None, metavar="PATH", help="local LPIPS / AlexNet weights file")
    p.add_argument("--chunk", type=positive_int, default=30000, help="HR pixels per query chunk (memory bound)")
    p.add_argument("--device", type=device, default="cpu")
    p.add_argument("--json", type=output_file, default=None, metavar="PATH", help="write {'results': [...]} here")
    p.add_argument("--plot", type=output_file, default=None, metavar="PNG", help="PSNR-vs-GFLOPs plot (default: next to --json)")
    p.add_argument("--force", action="store_true", help="overwrite existing --json / --plot files (and the .md and "
                   ".png written beside --json)")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import os


    stem = os.path.splitext(args.json)[0] if args.json else None
    png = args.plot or (stem + ".png" if stem and not args.baseline_only else None)  # no GFLOPs, no plot
    refuse_existing([args.json, stem and stem + ".md", png], args.force, "--json" if args.json else "--plot",
                    inputs=[args.checkpoint, args.config, args.lpips_weights])
    model = None
    if not args.baseline_only:
        _, model = load_cli_model(args)
        model = model.to(args.device)
    baseline = "bicubic" if (args.baseline or args.baseline_only) else None
    data = load_dataset(args.hr, args.lr, args.first_k)
    modes = [m if m in ("subnet", "full", "budget") else float(m) for m in args.modes]
    results = evaluate(model, data, args.scales, modes=modes, protocol=args.protocol, baseline=baseline,
                       bicubic=args.bicubic, lpips=args.lpips, lpips_weights=args.lpips_weights,
                       budget_gflops=args.budget_gflops, chunk=args.chunk, progress=True)
    md = results_to_markdown(results)
    if model is not None:
        print(f"model: {args.model}" + (f", checkpoint {args.checkpoint}" if args.checkpoint else "") + "\n")
    print(md)
    if args.json:
        results_to_json(results, args.json)
        atomic_write_text(stem + ".md", md + "\n")
    if png and any(r.gflops is not None for r in results):
        try:
            plot_psnr_vs_gflops(results, png)
            print(f"plot: {png}")
        except PlotError as exc:
            if args.plot:
                raise
            print(f"(no plot: {exc})")
    return 0
