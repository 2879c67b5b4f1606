"""``anysr demo [--out DIR] [--quick]``: the whole idea end to end on a laptop CPU.

Builds the reference LIIF-EDSR-baseline, pretrains it briefly on scikit-image photographs
(standing in for your pretrained model), anysrifies it, fine-tunes it with Algorithm 1 and
evaluates every width at x1.5-x6 on held-apart photographs; writes report.md,
psnr_vs_gflops.png and results.json into --out.
"""
from __future__ import annotations

import argparse

from ..tools.demo import DemoConfig, run_demo
from ._args import device, nonnegative_int, positive_float, positive_int, probability, upscales


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "demo", help="pretrain, anysrify, fine-tune and evaluate a small LIIF on CPU (minutes)",
        description="Run AnySR end to end on a small reference LIIF-EDSR-baseline: pretrain it briefly on "
                    "photographs shipped with scikit-image (a stand-in for your pretrained model), anysrify it, "
                    "fine-tune it with Algorithm 1, and evaluate every sub-network at x1.5, x2, x3, x4 and x6 on "
                    "held-apart photographs (PSNR, GFLOPs, latency relative to the original). "
                    "Default: under 10 minutes on 2 CPU cores; --quick: under 2 minutes.",
        epilog="outputs in --out: report.md, psnr_vs_gflops.png (needs matplotlib), results.json, original.pt, "
               "anysr.pt\nexamples:\n  anysr demo\n  anysr demo --quick --out /tmp/anysr_quick\n"
               "  anysr demo --finetune-steps 1000 --n-feats 64 --n-resblocks 16",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="anysr_demo", help="output folder (default ./anysr_demo); a non-empty folder "
                   "not written by anysr is refused unless --force")
    p.add_argument("--force", action="store_true", help="write into --out even if it holds other files")
    p.add_argument("--quick", action="store_true", help="tiny model and few steps: a smoke test under 2 minutes")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of initialisation, data and Algorithm 1 (default 0)")
    p.add_argument("--device", type=device, default="cpu", help="cpu or cuda[:N] (default cpu)")
    g = p.add_argument_group("size and schedule (defaults: the small CPU demo; --quick shrinks them)")
    g.add_argument("--n-resblocks", type=positive_int, default=None, help="EDSR residual blocks (default 4; paper 16)")
    g.add_argument("--n-feats", type=positive_int, default=None, help="EDSR channels (default 32; paper 64)")
    g.add_argument("--pretrain-steps", type=nonnegative_int, default=None, help="pretraining steps (default 1500)")
    g.add_argument("--finetune-steps", type=nonnegative_int, default=None, help="Algorithm-1 fine-tune steps (default 400)")
    g.add_argument("--finetune-lr", type=positive_float, default=None, help="fine-tune lr (default 1e-4; paper 1e-5 for "
                   "500 epochs)")
    g.add_argument("--reset-prob", type=probability, default=None, help="Algorithm 1 reset probability p (default 0.6)")
    g.add_argument("--gate", choices=("identity", "paper"), default=None, help="gate kind (default identity)")
    g.add_argument("--scales", type=upscales, default=None, help="evaluation scales (default 1.5,2,3,4,6)")
    g.add_argument("--eval-size", type=positive_int, default=None, help="centre crop of the test photographs (default 144)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    over = {k: v for k, v in dict(
        n_resblocks=args.n_resblocks, n_feats=args.n_feats, pretrain_steps=args.pretrain_steps,
        finetune_steps=args.finetune_steps, finetune_lr=args.finetune_lr, reset_prob=args.reset_prob,
        gate=args.gate, scales=args.scales, eval_size=args.eval_size).items() if v is not None}
    over.update(out=args.out, force=args.force, seed=args.seed, device=args.device, progress=not args.no_progress)
    cfg = DemoConfig.quick_config(**over) if args.quick else DemoConfig(**over)
    results = run_demo(cfg)
    for h in results["headline"]:
        print(f"  x{h['scale']:g}: width {h['width']:g}, PSNR {h['psnr_delta']:+.2f} dB vs original, "
              f"encoder cost {h['encoder_cost_ratio']:.3f}, latency {h['latency_ratio'] or float('nan'):.2f}")
    return 0
