"""Cost of one AnySR fine-tune step (Algorithm 1) against the vanilla training step.

LIIF with the EDSR-baseline encoder (16 blocks, 64 channels, imnet 4 x 256), batch 16, LR
patch 48, 2304 queries per sample; the vanilla step draws the scale U[1, 4] per sample, the
AnySR steps draw Algorithm 1's groups (1.1-4.0) and resets (p = 0.6).  Candidates, one process,
interleaved rounds, medians (anysr_plugin.bench.finetune_step_report):

* ``vanilla``                the unconverted model's training step;
* ``anysr (grouped)``        default config: reset per sample, mixed batches on the grouped path;
* ``anysr (masked)``         reset per sample, mixed batches on the masked path (for comparison);
* ``anysr (reset=batch)``    Algorithm 1 as written: one group and one reset per batch.

Targets (issue 11): the default fine-tune step at <= 0.93x the vanilla step's encoder MACs and
<= 1.05x its peak memory; CPU wall time reported next to the vanilla step's.

    python examples/finetune_step_cost.py [--batch 16] [--patch 48] [--repeats 4] [--threads 1]
        [--device cpu|cuda] [--out examples/finetune_step_cost]
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch

import anysr_plugin as anysr
from anysr_plugin.bench import finetune_step_report, format_finetune_markdown
from anysr_plugin.reference import build_reference
from anysr_plugin.files import write_text  # atomic: a stopped run never leaves half a file

TARGETS = {"encoder_mac_ratio": 0.93, "mem_ratio": 1.05}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--sample-q", type=int, default=2304)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--memory-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument("--device", default="cpu")
    p.add_argument("--model-arg", action="append", default=[], metavar="K=V",
                   help="reference model argument (tiny runs: n_resblocks=2), parsed as an int when it is one")
    p.add_argument("--out", default=None, help="folder for results.md / results.json")
    args = p.parse_args(argv)

    kwargs = {k: (int(v) if v.lstrip("-").isdigit() else v) for k, v in (a.split("=", 1) for a in args.model_arg)}
    original = build_reference("liif-edsr-baseline", seed=0, **kwargs)
    variants = {
        "anysr (grouped)": anysr.anysrify(copy.deepcopy(original), anysr.AnySRConfig(seed=0)),
        "anysr (masked)": anysr.anysrify(copy.deepcopy(original), anysr.AnySRConfig(seed=0, mixed_path="masked")),
        "anysr (reset=batch)": anysr.anysrify(copy.deepcopy(original), anysr.AnySRConfig(seed=0, reset="batch")),
    }
    report = finetune_step_report(original, variants, batch=args.batch, patch=args.patch, sample_q=args.sample_q,
                                  device=args.device, warmup=args.warmup, repeats=args.repeats,
                                  memory_steps=args.memory_steps, threads=args.threads, clock=args.clock,
                                  progress=True)
    report["command"] = "python examples/finetune_step_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [format_finetune_markdown(report), "", "| target (default step: anysr (grouped)) | figure | met |",
             "|---|---|---|"]
    row = next(r for r in report["results"] if r["name"] == "anysr (grouped)")
    for key, label, value in (("encoder_mac_ratio", "encoder MACs (expected over the width mix)",
                               row["encoder_mac_ratio_expected"]),
                              ("encoder_mac_ratio", "encoder MACs (the timed steps' widths)",
                               row["encoder_mac_ratio_timed_steps"]),
                              ("encoder_mac_ratio", "encoder MACs (counted, memory steps)",
                               row["encoder_mac_ratio_counted"]),
                              ("mem_ratio", "peak memory (median)", row["mem_ratio"])):
        lines.append(f"| {label} <= {TARGETS[key]:.2f}x | {value:.3f}x | {'yes' if value <= TARGETS[key] else 'NO'} |")
    clock = "CPU wall time" if args.clock == "wall" else "process CPU time"
    lines.append(f"| {clock} (no target) | {row['time_ratio']:.3f}x | - |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / "results.md", f"`{report['command']}`\n\n{text}\n")
        write_text(out / "results.json", json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
