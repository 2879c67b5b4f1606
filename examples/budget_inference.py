"""Budget-driven inference: the largest sub-network whose FLOPs fit, per input size and scale.

    python examples/budget_inference.py [--gflops 3.0]

An anysrified EDSR-baseline encoder runs on inputs of growing size at x2 and x4 under
``use_budget(model, gflops=...)``; the width chosen for each call is printed.  At x2
the width never exceeds the scale policy's 0.7 (pass allow_above_scale=True to lift
that); when nothing fits, BudgetError names the cheapest sub-network's cost.
"""
from __future__ import annotations

import argparse

import torch

import anysr_plugin as anysr
from anysr_plugin.errors import BudgetError
from anysr_plugin.reference import make_edsr_baseline


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gflops", type=float, default=3.0, help="budget per call (2 x MACs, G)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = anysr.anysrify(make_edsr_baseline()).eval()
    print(f"budget {args.gflops:g} GFLOPs per call\n")
    print("| input | scale | width | GFLOPs |")
    print("|---|---|---|---|")
    for scale in (2.0, 4.0):
        for side in (24, 32, 40, 48, 56):
            x = torch.rand(1, 3, side, side)
            try:
                with anysr.use_budget(model, gflops=args.gflops) as budget, anysr.use_scale(model, scale), \
                        torch.no_grad():
                    model(x)
                _, _, width, cost = budget.decisions[-1]
                print(f"| {side}x{side} | x{scale:g} | {width:g} | {cost:.3f} |")
            except BudgetError as exc:
                print(f"| {side}x{side} | x{scale:g} | none fits | {exc} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
