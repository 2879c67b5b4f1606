"""The ``anysr`` command line (also ``python -m anysr_plugin``).

Each sub-command lives in its own module under ``anysr_plugin/commands/`` and
exposes ``add_parser(subparsers)``; the parser it returns carries a ``run(args)``
default.  Commands are discovered, so adding one never edits this file.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from . import __version__
from . import commands
from .glue.checkout import missing_dependency
from .runtime.errors import AnySRError, cap_message


class Parser(argparse.ArgumentParser):
    """argparse with the error format of every other user error: one line, exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(text: str) -> str:
    """A multi-line message (e.g. a list of unconvertible blocks) as one line, of bounded length."""
    line = "; ".join(line.strip() for line in str(text).splitlines() if line.strip()).replace(":; ", ": ")
    return cap_message(line)


def out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: ``MemoryError``, torch's ``OutOfMemoryError`` or the CPU allocator's
    "can't allocate memory" RuntimeError."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in str(exc) or "out of memory" in str(exc))


def _missing_requirement(exc: Exception):
    return missing_dependency(exc) if isinstance(exc, ModuleNotFoundError) else None


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="anysr",
        description="AnySR as a plugin: convert, fine-tune, measure and export any-scale, "
                    "any-resource super-resolution models.")
    parser.add_argument("--version", action="version", version=f"anysr_plugin {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of an error (accepted anywhere before a `--`)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        module.add_parser(sub)
    return parser


def main(argv: list | None = None) -> int:
    """Run one command.  A user error (AnySRError, a file the OS refuses) prints one line
    ``anysr COMMAND: error: ...`` and returns 2; anything else is a bug: one line and 1.
    ``--debug`` (anywhere before a ``--``) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `anysr launch ... -- SCRIPT ARGS`: everything after `--` belongs to the upstream script
    ours = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:ours]
    if debug:
        argv = [a for a in argv[:ours] if a != "--debug"] + argv[ours:]
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "accepts_remainder", False):
        sub = f"anysr {args.command}" if getattr(args, "command", None) else "anysr"
        print(f"{sub}: error: {one_line('unrecognized arguments: ' + ' '.join(rest))} (see {sub} --help)",
              file=sys.stderr)
        return 2
    if rest:
        args.remainder = rest
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if not argv else 2
    where = f"anysr {args.command}"
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"{where}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `anysr flops | head`: the reader left; nothing to report
        try:
            sys.stdout = open(os.devnull, "w")  # no second error when Python flushes stdout at exit
        except OSError:
            pass
        return 141
    except AnySRError as exc:
        if debug:
            raise
        print(f"{where}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a missing folder, no permission, a full disk: the user can act on it
        if debug:
            raise
        what = f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else one_line(exc)
        print(f"{where}: error: {what} (rerun with --debug for the traceback)", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug or getattr(args, "accepts_remainder", False):  # `launch`: the upstream script's own errors
            raise
        missing = _missing_requirement(exc)
        if missing is not None:  # a requirement of ours that is not installed: the user can act on it
            print(f"{where}: error: {one_line(missing)}", file=sys.stderr)
            return 2
        if out_of_memory(exc):  # a size the machine cannot hold: the user can ask for less
            print(f"{where}: error: not enough memory ({one_line(exc)[:200]}); use smaller sizes (--batch, "
                  "--lr-size, --chunk, --patch) or a smaller model (rerun with --debug for the traceback)",
                  file=sys.stderr)
            return 2
        print(f"{where}: error: internal error {type(exc).__name__}: {one_line(exc)} "
              "(rerun with --debug for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
