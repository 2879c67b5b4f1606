"""``anysr launch METHOD [--cpu] [--repo DIR] [--anysr-config FILE] [--init-from PTH] [--scale-from M:F] [--lam N]
-- SCRIPT ARGS...``

Runs an upstream repository's own script (``train_liif.py``, ``train.py``, ``test.py``,
``demo.py``, Meta-SR/ArbSR ``main.py``) with AnySR installed, without editing the repo.
See ``anysr_plugin/glue/launch.py`` (the launcher) and the method adapters' ``install``
(``adapters/registry_hooks.py``, ``adapters/metasr.py``) for what is hooked.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..adapters import get_adapter
from ..glue.launch import LaunchContext, run as launch_run
from ..runtime.config import AnySRConfig
from ..runtime.errors import AnySRError
from ._args import positive_int, width

METHODS_HELP = "liif, lte, srno (LIIF family), metasr, arbsr"


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "launch", help="run an upstream train/test/demo script with AnySR installed",
        description="Run an upstream repository's own script with AnySR installed (its model builder is hooked "
                    "so specs carrying `anysr:` are built anysrified, and the scale reaches the encoder). "
                    "Everything after `--` is the script and its own arguments.",
        epilog="examples:\n"
               "  anysr launch liif --cpu -- train_liif.py --config anysr-liif.yaml\n"
               "  anysr launch liif -- test.py --config configs/test/test-div2k-2.yaml --model save/x/epoch-last.pth\n"
               "  anysr launch srno -- train.py --config anysr-srno.yaml --gpu 0\n"
               "  anysr launch metasr --width 0.5 -- main.py --model metardn ... --test_only --resume 1\n"
               "  anysr launch liif --scale-from my_scale:from_call -- train_liif.py --config anysr-fork.yaml\n"
               "--cpu makes the upstream's .cuda() calls no-ops, loads checkpoints onto the CPU and runs data "
               "loading in-process: a smoke-test aid for machines without CUDA, not a way to train. Meta-SR and "
               "ArbSR pick their device from their own flag: pass it to main.py too (--cpu / --cpu True).\n"
               "Every model the launcher builds is reported (blocks converted, where the scale comes from); "
               "evaluation calls print the width and the AnySR blocks' MACs of each test scale.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", help=f"upstream method ({METHODS_HELP})")
    p.add_argument("--cpu", action="store_true", help="smoke-test on a machine without CUDA (see below)")
    p.add_argument("--repo", type=Path, default=None, help="upstream repository root (default: current folder)")
    p.add_argument("--anysr-config", type=Path, default=None, metavar="FILE",
                   help="AnySR config YAML applied to every top-level model spec (whatever its name) that carries "
                        "no `anysr:` entry; nothing convertible in it is an error")
    p.add_argument("--init-from", type=Path, default=None, metavar="PTH",
                   help="vanilla upstream checkpoint loaded into every AnySR model the launcher builds (only the "
                        "new anysr_* gate tensors may be missing); overrides the config's model.anysr_init_from; "
                        "all five methods")
    p.add_argument("--width", type=width, default=None, metavar="W",
                   help="fix the sub-network width of every call (1.0 = the full network at every scale, the "
                        "paper's AnySR-double-dagger evaluation); the gates still see each call's scale. The one "
                        "way to fix the width, for all five methods; default: the width of each call's scale")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import this module (a .py file or a dotted name) before the script runs, e.g. one that "
                        "registers your own block types with anysr_plugin.register_block_type, or that holds "
                        "your --scale-from function; repeatable")
    p.add_argument("--scale-from", default=None, metavar="MODULE:FUNCTION",
                   help="where each call's scale comes from, for every AnySR model the launcher builds, when the "
                        "model's forward carries none it can read: 'context' (use_scale only) or MODULE:FUNCTION, "
                        "an importable fn(module, args, kwargs) -> (B, 2) scale or None (the repo root and --import "
                        "files are importable); written into the AnySR section of the checkpoints the trainer saves")
    p.add_argument("--lam", type=positive_int, default=None, metavar="N",
                   help="feature-interweaving lambda of every AnySR model the launcher builds (default: the AnySR "
                        "config's; 4 EDSR/RCAN, 8 RDN); a checkpoint's gates keep the lambda they were trained with")
    p.set_defaults(run=run, accepts_remainder=True)
    return p


def split_remainder(rest: list) -> list:
    """The script and its arguments from what followed the launch options."""
    rest = list(rest or [])
    if "--" in rest:
        i = rest.index("--")
        before, rest = rest[:i], rest[i + 1:]
        if before:
            raise AnySRError(f"unknown launch option(s) {' '.join(before)}; put the script and its arguments "
                             "after `--`")
    elif rest and rest[0].startswith("-"):
        raise AnySRError(f"unknown launch option {rest[0]!r}; usage: anysr launch METHOD [options] -- SCRIPT ARGS")
    if not rest:
        raise AnySRError("no script given; usage: anysr launch METHOD [--cpu] [--repo DIR] -- SCRIPT ARGS...")
    return rest


def run(args) -> int:
    get_adapter(args.method)  # unknown method: a clear error before anything runs
    script, *argv = split_remainder(getattr(args, "remainder", []))
    repo = (args.repo or Path.cwd()).resolve()
    if not repo.is_dir():
        raise AnySRError(f"--repo {repo}: not a folder")
    overrides = {k: v for k, v in (("scale_from", args.scale_from), ("lam", args.lam)) if v is not None}
    AnySRConfig(**overrides)  # a bad --scale-from / --lam: a one-line error before anything runs
    cfg = None
    if args.anysr_config is not None:
        if not args.anysr_config.is_file():
            raise AnySRError(f"--anysr-config {args.anysr_config}: file does not exist")
        cfg = AnySRConfig.from_yaml(args.anysr_config.resolve()).replace(**overrides)
    init = args.init_from.resolve() if args.init_from is not None else None
    if init is not None and not init.is_file():
        raise AnySRError(f"--init-from {init}: file does not exist")
    script_path = Path(script)
    if not script_path.is_absolute():
        script_path = (repo / script_path) if (repo / script_path).is_file() else script_path.resolve()
    ctx = LaunchContext(method=args.method, repo=repo, script=script_path, argv=list(argv), cpu=args.cpu,
                        anysr_config=cfg, init_from=init, width=args.width,
                        imports=list(args.imports), overrides=overrides)
    return launch_run(ctx)
