"""What the per-call path costs: the converted LIIF-EDSR-baseline against the unconverted one.

Cases (batch 1, eval, no grad, one intra-op thread by default):

* ``encoder full width, LR 16x16`` and ``LR 32x32``: the converted encoder forced to width 1.0
  (its gates run, at scale x4) against the original encoder.  Targets: <= 1.10x and <= 1.05x.
* ``LIIF x2, LR 32x32``: the whole model at x2 (its encoder runs the x2 sub-network, width 0.7)
  against the original LIIF on the same query grid.  Target: no slower (<= 1.00x).
* ``... without gates``: the encoder converted with ``interweave="none"`` (the paper's "w/o ASE"
  ablation), for reading the table: what the call path costs apart from the gates' own arithmetic.
* ``... gates as PyTorch ops``: the converted encoder with the native gate switched off
  (``native_gate.switched_off()``; a tree without it has no such row), for reading: what the one
  native call per gate saves.  The table's first line says whether each tree ran it.

Each case alternates the two models call by call (``--repeats`` calls each, after warm-up)
and compares the medians of the process CPU clock, which a busy machine disturbs less than
the wall clock.  With ``--baseline DIR`` (a checkout of another anysr_plugin, e.g.
``git worktree add /tmp/anysr-before <commit>``) the same cases run on that tree too, in
alternating worker processes of this one run, so the figures before and after a change sit
side by side:

    python examples/call_path_bench.py [--baseline DIR] [--rounds 3] [--repeats 40] [--threads 1]
                                       [--device cpu|cuda] [--out examples/call_path/results.md]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TARGETS = {"encoder full width, LR 16x16": 1.10, "encoder full width, LR 32x32": 1.05, "LIIF x2, LR 32x32": 1.00,
           "encoder full width without gates, LR 16x16": None, "encoder full width without gates, LR 32x32": None,
           "encoder full width, gates as PyTorch ops, LR 16x16": None,
           "encoder full width, gates as PyTorch ops, LR 32x32": None}


def _import_tree(tree: Path) -> None:
    """Import anysr_plugin (and its adapters, which live in the top-level folder adapters/)
    from `tree` rather than from the installed copy."""
    import importlib.abc
    import importlib.util

    class _Adapters(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "anysr_plugin.adapters":
                return importlib.util.spec_from_file_location(
                    name, tree / "adapters" / "__init__.py", submodule_search_locations=[str(tree / "adapters")])
            return None

    sys.meta_path.insert(0, _Adapters())
    sys.path.insert(0, str(tree))


def _measure(args) -> dict:
    import torch

    import anysr_plugin as anysr
    from anysr_plugin.reference import build_reference, make_coord

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    clock = time.process_time if device.type == "cpu" else time.perf_counter
    torch.manual_seed(0)
    liif = build_reference("liif-edsr-baseline").eval().to(device)
    converted = anysr.anysrify(copy.deepcopy(liif)).eval()
    gateless = anysr.anysrify(copy.deepcopy(liif), anysr.AnySRConfig(interweave="none")).eval()

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = clock()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return clock() - start

    def pair(original, other, warmup=5):
        for _ in range(warmup):
            original()
            other()
        a, b = [], []
        for _ in range(args.repeats):
            a.append(timed(original))
            b.append(timed(other))
        return statistics.median(a), statistics.median(b)

    native_gate = None
    if (Path(args.tree or ROOT) / "anysr_plugin" / "runtime" / "native_gate.py").is_file():
        from anysr_plugin.runtime import native_gate  # a tree from before it has none
    status = native_gate.status() if native_gate else "native gate: not in this tree"
    rows = {"native gate": "native gate on" if status.startswith("native gate on") else status}
    with torch.no_grad():
        for size in (16, 32):
            x = torch.rand(1, 3, size, size, device=device)
            with anysr.use_width(converted, 1.0), anysr.use_scale(converted, 4.0):
                a, b = pair(lambda: liif.encoder(x), lambda: converted.encoder(x))
            rows[f"encoder full width, LR {size}x{size}"] = (a, b)
            with anysr.use_width(gateless, 1.0), anysr.use_scale(gateless, 4.0):
                a, b = pair(lambda: liif.encoder(x), lambda: gateless.encoder(x))
            rows[f"encoder full width without gates, LR {size}x{size}"] = (a, b)
            if native_gate is not None:
                with native_gate.switched_off(), anysr.use_width(converted, 1.0), anysr.use_scale(converted, 4.0):
                    a, b = pair(lambda: liif.encoder(x), lambda: converted.encoder(x))
                rows[f"encoder full width, gates as PyTorch ops, LR {size}x{size}"] = (a, b)
        x = torch.rand(1, 3, 32, 32, device=device)
        coord = make_coord((64, 64)).to(device).unsqueeze(0)
        cell = torch.full_like(coord, 2 / 64)
        a, b = pair(lambda: liif(x, coord, cell), lambda: converted(x, coord, cell))
        rows["LIIF x2, LR 32x32"] = (a, b)
    return rows


def _worker(args) -> int:
    if args.tree:
        _import_tree(Path(args.tree))
    print(json.dumps(_measure(args)))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--baseline", default=None, help="another anysr_plugin checkout to measure in the same run")
    p.add_argument("--rounds", type=int, default=3, help="alternating worker runs per tree (default 3)")
    p.add_argument("--repeats", type=int, default=40, help="timed calls per model, case and round (default 40)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tree", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)
    trees = [("this tree", str(ROOT))] + ([("baseline", str(Path(args.baseline).resolve()))] if args.baseline else [])
    runs: dict = {label: [] for label, _ in trees}
    for r in range(args.rounds):
        for label, tree in trees:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--tree", tree, "--repeats",
                   str(args.repeats), "--threads", str(args.threads), "--device", args.device]
            out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            runs[label].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1}/{args.rounds}: {label} done", file=sys.stderr)
    head = "| case | target | " + " | ".join(f"{label}: original ms | converted ms | ratio" for label, _ in trees) + " |"
    lines = [f"Per-call cost, {args.device}, {args.threads} thread(s), batch 1, median of {args.rounds} rounds x "
             f"{args.repeats} calls (process CPU clock on CPU).",
             "", *(f"- {label}: {runs[label][0]['native gate']}" for label, _ in trees), "", head,
             "|" + "---|" * (2 + 3 * len(trees))]
    for case, target in TARGETS.items():
        cells = []
        for label, _ in trees:
            if case not in runs[label][0]:
                cells.append("- | - | -")
                continue
            a = statistics.median(run[case][0] for run in runs[label]) * 1e3
            b = statistics.median(run[case][1] for run in runs[label]) * 1e3
            cells.append(f"{a:.2f} | {b:.2f} | {b / a:.3f}")
        goal = f"<= {target:.2f}x" if target is not None else "(for reading)"
        lines.append(f"| {case} | {goal} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        from anysr_plugin.files import write_text

        write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
