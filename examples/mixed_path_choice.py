"""Grouped vs masked mixed-width path, measured per device and batch shape (what ``mixed_path="auto"`` rests on).

EDSR-baseline encoder (16 blocks x 64 channels), batches whose samples take Algorithm 1's
per-sample widths (a fixed, seeded draw per batch size), in inference (no grad) and in training
(forward + backward of a sum), both paths side by side in one process, interleaved, medians.
``"auto"`` picks grouped everywhere except under ``torch.compile``; this script shows where that
rule holds on a device (CPU figures are committed in examples/mixed_path_choice/).

    python examples/mixed_path_choice.py [--device cpu|cuda] [--sizes 16 48] [--batches 4 16] [--repeats 5]
        [--threads N] [--out examples/mixed_path_choice]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

import torch

import anysr_plugin as anysr
from anysr_plugin.bench import CLOCKS, _sync, peak_memory
from anysr_plugin.reference import make_edsr_baseline
from anysr_plugin.files import write_text  # atomic: a stopped run never leaves half a file


def widths_for(batch: int, seed: int = 0) -> list:
    """Per-sample widths as Algorithm 1 draws them (group uniform, reset p = 0.6): the first
    seeded draw that mixes widths (what the mixed path is for)."""
    g = torch.Generator().manual_seed(seed + batch)
    widths = (0.5, 0.7, 0.9, 1.0)
    while True:
        t = torch.randint(0, 4, (batch,), generator=g).tolist()
        reset = (torch.rand(batch, generator=g) < 0.6).tolist()
        ws = [1.0 if r else widths[i] for i, r in zip(t, reset)]
        if len(set(ws)) > 1:
            return ws


SCALE_OF = {0.5: 1.5, 0.7: 2.0, 0.9: 3.0, 1.0: 4.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--sizes", nargs="+", type=int, default=[16, 48])
    p.add_argument("--batches", nargs="+", type=int, default=[4, 16])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    base = make_edsr_baseline().to(dev)
    models = {path: anysr.anysrify(copy.deepcopy(base), anysr.AnySRConfig(mixed_path=path)).to(dev)
              for path in ("grouped", "masked")}
    rows = []
    for batch in args.batches:
        ws = widths_for(batch)
        scale = torch.tensor([[SCALE_OF[w]] * 2 for w in ws])
        for size in args.sizes:
            x = torch.rand(batch, 3, size, size, device=dev)
            for mode in ("inference", "training"):
                def run(path, mode=mode):
                    m = models[path]
                    with anysr.use_scale(m, scale):
                        if mode == "inference":
                            with torch.no_grad():
                                return m(x)
                        m.zero_grad(set_to_none=True)
                        m(x).sum().backward()
                times = {k: [] for k in models}
                for r in range(args.warmup + args.repeats):
                    for path in (list(models) if r % 2 == 0 else list(models)[::-1]):
                        _sync(dev)
                        t0 = CLOCKS["wall"]()
                        run(path)
                        _sync(dev)
                        if r >= args.warmup:
                            times[path].append((CLOCKS["wall"]() - t0) * 1e3)
                mem = {k: peak_memory(lambda k=k: run(k), dev) for k in models}
                g, m = statistics.median(times["grouped"]), statistics.median(times["masked"])
                rows.append({"batch": batch, "size": size, "mode": mode, "widths": ws, "grouped_ms": g,
                             "masked_ms": m, "grouped_over_masked": g / m,
                             "grouped_mem": mem["grouped"], "masked_mem": mem["masked"]})
                print(f"batch {batch} {size}x{size} {mode}: grouped {g:.1f} ms, masked {m:.1f} ms "
                      f"(ratio {g / m:.3f}); peak MiB {mem['grouped'] / 2**20:.1f} vs {mem['masked'] / 2**20:.1f}",
                      flush=True)
    lines = [f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
             f"{args.warmup} warm-up + {args.repeats} interleaved runs, medians",
             "", "| batch | LR | mode | widths | grouped ms | masked ms | grouped / masked | peak MiB grouped / masked |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} | {r['size']}x{r['size']} | {r['mode']} | "
                     f"{' '.join(f'{w:g}' for w in r['widths'])} | {r['grouped_ms']:.1f} | {r['masked_ms']:.1f} | "
                     f"{r['grouped_over_masked']:.3f} | {r['grouped_mem'] / 2**20:.1f} / {r['masked_mem'] / 2**20:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        cmd = "python examples/mixed_path_choice.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_text(out / "results.md", f"`{cmd.strip()}`\n\n{text}\n")
        write_text(out / "results.json", json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
