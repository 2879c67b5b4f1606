"""``anysr bench``: latency and peak memory per width and scale, next to the unconverted model.

Both models run in one process on the same inputs, interleaved (each repeat runs every
candidate once, in a rotated order), after warm-up; medians and quartiles are reported
and the ratio to the original model's median is the headline figure.

Examples::

    anysr bench                                   # EDSR-baseline encoder, 1x3x96x96, CPU
    anysr bench --threads 1 --clock cpu           # robust ratios on a busy machine
    anysr bench --model liif-edsr-baseline --lr-size 48x48 --scales 2 4 --json bench.json
    anysr bench --device cuda --repeats 50
    anysr bench --device cuda --model liif-edsr-baseline --lr-size 48x48 --batch 16 --finetune-step

``--finetune-step`` (SR models the trainer drives: LIIF family, SRNO) adds one training step
(forward, L1, backward, Adam) of the original model and of AnySR with the config's reset
(grouped mixed path), with the masked path, and with ``reset="batch"``: time, peak memory and
encoder MACs against the original's step (anysr_plugin.bench.finetune_step_report).

The JSON (``--json``) is what ``use_budget(model, latency_table=...)`` reads; with
``--finetune-step`` it also holds the step report under ``finetune_step``.
"""
from __future__ import annotations

import argparse

from ..adapters import adapter_for
from ..runtime.checkpoint import atomic_write_text
from ..runtime.control import get_state, unwrap
from ..runtime.errors import ConfigError
from ..runtime.files import refuse_existing
from ..runtime.injection import anysrify
from ..tools.bench import bench_widths, dumps, finetune_step_report, format_finetune_markdown, format_markdown
from ..tools.cost import call_inputs, parse_size, safe_deepcopy, sizes_for
from ..tools.evaluate import parse_scales
from ._args import device, nonnegative_int, output_file, positive_int, width_list
from ._model import add_model_arguments, load_cli_model


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="latency and peak memory per width/scale vs the original model",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--lr-size", default="96x96", help="LR input size HxW (default 96x96)")
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--scales", nargs="+", default=["2"], help="scales (whole SR models upsample to LR x s)")
    p.add_argument("--widths", type=width_list("all"), default="all", help="'all' or e.g. 0.5,0.7,1.0")
    p.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1 ...")
    p.add_argument("--warmup", type=nonnegative_int, default=3)
    p.add_argument("--repeats", type=positive_int, default=10)
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall-clock, or process CPU time (robust to other load; use with --threads 1)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory run")
    p.add_argument("--json", type=output_file, default=None, metavar="PATH", help="write the results as JSON")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    s = p.add_argument_group("fine-tune step (--finetune-step)")
    s.add_argument("--finetune-step", action="store_true",
                   help="also time one Algorithm-1 training step against the original's training step")
    s.add_argument("--step-batch", type=positive_int, default=16, help="training batch (default 16)")
    s.add_argument("--step-patch", type=positive_int, default=48, help="LR training patch (default 48)")
    s.add_argument("--step-sample-q", type=positive_int, default=2304, help="queries per sample (default 2304)")
    s.add_argument("--step-warmup", type=nonnegative_int, default=1)
    s.add_argument("--step-repeats", type=positive_int, default=5)
    s.add_argument("--step-memory-steps", type=positive_int, default=2)
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import torch

    refuse_existing([args.json], args.force, "--json", inputs=[args.checkpoint, args.config])
    original, model = load_cli_model(args)
    if args.finetune_step:
        if adapter_for(model).query_layout(unwrap(model)) is None:
            raise ConfigError(f"--finetune-step trains an SR model (liif-*, srno-*); {args.model} is run by "
                              f"adapter {adapter_for(model).name!r}, which the trainer cannot drive")
    h, w = parse_size(args.lr_size)
    scales = parse_scales(args.scales)
    widths = None if args.widths == "all" else [float(v) for v in args.widths.split(",")]
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(args.batch, 3, h, w, generator=g)

    def make_inputs(scale):
        return call_inputs(model, (h, w), sizes_for(scale, lr_size=(h, w))[1], lr=lr)

    report = bench_widths(model, (), widths=widths, scales=scales, original=original, make_inputs=make_inputs,
                          device=args.device, warmup=args.warmup, repeats=args.repeats,
                          memory=not args.no_memory, progress=True, threads=args.threads, clock=args.clock)
    report["model"] = args.model
    print(format_markdown(report))
    if args.finetune_step:
        report["finetune_step"] = _finetune_step(args, original, model)
    if args.json:
        atomic_write_text(args.json, dumps(report))
    return 0


def _finetune_step(args, original, model) -> dict:
    import copy


    cfg = get_state(model).config
    base = cfg.replace(mixed_path="auto") if cfg.mixed_path == "masked" else cfg
    variants = {"anysr": model}
    for name, change in (("anysr (masked)", {"mixed_path": "masked"}),
                         ("anysr (reset=batch)", {"reset": "batch", "mixed_path": base.mixed_path})):
        if cfg.replace(**change) != cfg:
            twin = anysrify(safe_deepcopy(original), base.replace(**change))
            twin.load_state_dict(model.state_dict())
            variants[name] = twin
    rep = finetune_step_report(copy.deepcopy(original).train(), variants, batch=args.step_batch,
                               patch=args.step_patch, sample_q=args.step_sample_q, device=args.device,
                               warmup=args.step_warmup, repeats=args.step_repeats,
                               memory_steps=args.step_memory_steps, threads=args.threads,
                               clock=args.clock, progress=True)
    print()
    print(format_finetune_markdown(rep))
    return rep
