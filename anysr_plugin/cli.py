"""The ``anysr`` command line (also ``python -m anysr_plugin``).

Each sub-command lives in its own module under ``anysr_plugin/commands/`` and
exposes ``add_parser(subparsers)``; the parser it returns carries a ``run(args)``
default.  Commands are discovered, so adding one never edits this file.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__
from .errors import AnySRError


def build_parser() -> argparse.ArgumentParser:
    from . import commands

    parser = argparse.ArgumentParser(
        prog="anysr",
        description="AnySR as a plugin: convert, fine-tune, measure and export any-scale, "
                    "any-resource super-resolution models.")
    parser.add_argument("--version", action="version", version=f"anysr_plugin {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.add_parser(sub)
    return parser


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # `anysr launch ... -- SCRIPT ARGS`: everything after `--` belongs to the upstream script
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "accepts_remainder", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.remainder = rest
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if not argv else 2
    try:
        return int(args.run(args) or 0)
    except AnySRError as exc:
        print(f"anysr {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"anysr {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
