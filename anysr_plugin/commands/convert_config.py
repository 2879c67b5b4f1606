"""``anysr convert-config --method METHOD [UPSTREAM.yaml] -o OUT.yaml [options]``

Writes an upstream training config that carries the AnySR settings (LIIF family and
SRNO: an ``anysr:`` entry inside the model spec; Meta-SR / ArbSR: their adapter's
format).  Dispatches to ``get_adapter(method).convert_config(upstream, out, cfg, **options)``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..adapters import get_adapter
from ..glue.launch import import_user_modules
from ..runtime.config import AnySRConfig
from ..runtime.errors import AnySRError
from ..runtime.files import refuse_existing
from ._args import floats, output_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert-config", help="write an upstream training config with the AnySR settings",
        description="Write an upstream training config carrying the AnySR settings (validated; errors name the "
                    "offending key).",
        epilog="example:\n  anysr convert-config --method liif configs/train-div2k/train_edsr-baseline-liif.yaml "
               "-o anysr-liif.yaml --init-from edsr-baseline-liif.pth --paper-schedule",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("upstream", nargs="?", type=Path, default=None, help="the upstream training YAML")
    p.add_argument("--method", required=True, help="liif, lte, srno, metasr, arbsr")
    p.add_argument("-o", "--out", required=True, type=output_path, help="output YAML")
    p.add_argument("--force", action="store_true", help="overwrite an existing output YAML (never an input)")
    p.add_argument("--init-from", type=Path, default=None, metavar="PTH",
                   help="vanilla pretrained checkpoint to fine-tune from (recorded in the config)")
    p.add_argument("--repo", type=Path, default=None, metavar="DIR",
                   help="the upstream repository: build the model with its registry (on the meta device, else on "
                        "the CPU) and list what will be converted (needed for model or encoder names AnySR does not "
                        "know); also the checkout whose training script the header names (default: found above the "
                        "config)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import this module (a .py file or a dotted name) first, e.g. one that registers your own "
                        "block types with anysr_plugin.register_block_type (use with --repo); repeatable")
    p.add_argument("--paper-schedule", action="store_true",
                   help="the paper's fine-tune schedule: Adam lr 1e-5 halved every 200 epochs, 500 epochs")
    g = p.add_argument_group("AnySR options (default: the paper's)")
    g.add_argument("--anysr-config", type=Path, default=None, metavar="FILE",
                   help="start from this AnySR config YAML; the options below override it")
    g.add_argument("--widths", type=floats, default=None, help="e.g. 0.5,0.7,0.9,1.0")
    g.add_argument("--scale-bounds", type=floats, default=None, help="e.g. 1.75,2.55,3.25")
    g.add_argument("--lam", type=int, default=None, help="lambda (default: 4 EDSR/RCAN, 8 RDN)")
    g.add_argument("--scale-from", default=None, metavar="MODULE:FUNCTION",
                   help="where each call's scale comes from when the model's forward carries none it can read: "
                        "'context' or MODULE:FUNCTION, an fn(module, args, kwargs) -> (B, 2) scale or None "
                        "importable from the repository root (or an --import file); checked with --repo")
    g.add_argument("--reset-prob", type=float, default=None, help="Algorithm 1 reset probability p (0.6)")
    g.add_argument("--gate", choices=("identity", "paper"), default=None)
    g.add_argument("--interweave", choices=("interleave", "concat", "none"), default=None)
    g.add_argument("--rdb-gate", choices=("first", "last"), default=None)
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--compat", choices=("official",), default=None,
                   help="reproduce the official AnySR release's behaviour (see anysr_plugin/glue/official.py)")
    g.add_argument("--decoder", choices=("off", "slim"), default=None,
                   help="beyond the paper: 'slim' also slims the implicit decoder by scale group (opt-in)")
    g.add_argument("--decoder-widths", type=floats, default=None, help="decoder width per scale group, e.g. "
                   "0.6,0.75,0.9,1.0 (default: --widths)")
    p.set_defaults(run=run)
    return p


def anysr_config_from_args(args):
    cfg = AnySRConfig.from_yaml(args.anysr_config) if args.anysr_config is not None else AnySRConfig()
    changes = {k: getattr(args, k) for k in ("widths", "scale_bounds", "lam", "reset_prob", "gate", "interweave",
                                             "rdb_gate", "seed", "compat", "decoder", "decoder_widths", "scale_from")
               if getattr(args, k) is not None}
    return AnySRConfig.from_dict({**cfg.to_dict(), **changes}) if changes else cfg


def run(args) -> int:
    if args.anysr_config is not None and not args.anysr_config.is_file():
        raise AnySRError(f"--anysr-config {args.anysr_config}: file does not exist")
    for given in (args.upstream, args.anysr_config, args.init_from):  # never write over an input
        if given is not None and given.exists() and args.out.exists() and args.out.samefile(given):
            raise AnySRError(f"-o {args.out} is the input file {given}; writing it would destroy the input: "
                             "choose another -o")

    refuse_existing([args.out], args.force, "-o")

    import_user_modules(args.imports)
    cfg = anysr_config_from_args(args)
    if cfg.scale_from not in (None, "context") and args.repo is None:
        print(f"convert-config: scale_from {cfg.scale_from!r} is imported when the launcher builds the model (from "
              "the repository root or an --import file); pass --repo DIR to check it now")
    options = {}
    if args.init_from is not None:
        options["init_from"] = args.init_from
    if args.paper_schedule:
        options["paper_schedule"] = True
    if args.repo is not None:
        if not args.repo.is_dir():
            raise AnySRError(f"--repo {args.repo}: not a folder")
        options["repo"] = args.repo
    out = get_adapter(args.method).convert_config(
        str(args.upstream) if args.upstream is not None else None, str(args.out), cfg, **options)
    print(f"wrote {out}")
    return 0
