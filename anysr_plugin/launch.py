"""Run an upstream repository's own script with AnySR installed, without editing the repo.

``anysr launch <method> [--cpu] [--repo DIR] [--anysr-config FILE] -- SCRIPT ARGS...``

1. the upstream repo root goes first on ``sys.path`` and modules whose names clash with
   it (the stdlib ``test``, HF ``datasets``, another repo's ``models`` / ``model`` /
   ``data`` ...) are purged from ``sys.modules``, so ``import models`` finds the repo's;
2. with ``--cpu`` the upstream's unconditional ``.cuda()`` calls become no-ops and
   ``torch.load`` maps to the CPU: **a smoke-test aid** for machines without CUDA, not
   a way to train for real;
3. the method adapter's ``install(ctx)`` hooks the upstream registry / model builder so
   the model is anysrified (before the optimizer is built) and the scale reaches it;
4. the script runs as ``__main__`` with ``sys.argv = [SCRIPT, *ARGS]``.
"""
from __future__ import annotations

import contextlib
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import AnySRConfig
from .errors import AnySRError

#: top-level module names used by the upstream repos (and the stdlib / PyPI names they shadow)
UPSTREAM_MODULE_NAMES = ("models", "model", "datasets", "data", "utils", "utility", "test", "trainer", "option",
                         "template", "loss", "dataloader", "Adam", "scheduler", "train", "train_liif", "demo")


@dataclass
class LaunchContext:
    method: str
    repo: Path
    script: Path
    argv: list
    cpu: bool = False
    anysr_config: AnySRConfig | None = None
    #: callables run when the script returns (adapters may restore patches here)
    cleanups: list = field(default_factory=list)


def purge_modules(names=UPSTREAM_MODULE_NAMES) -> None:
    for key in list(sys.modules):
        if key.split(".")[0] in names:
            del sys.modules[key]


@contextlib.contextmanager
def cpu_shim():
    """Make ``.cuda()`` a no-op and load checkpoints onto the CPU (smoke tests only)."""
    saved = (torch.Tensor.cuda, torch.nn.Module.cuda, torch.load)

    def tensor_cuda(self, *args, **kwargs):
        return self

    def module_cuda(self, *args, **kwargs):
        return self

    def load(*args, **kwargs):
        kwargs.setdefault("map_location", "cpu")
        return saved[2](*args, **kwargs)

    torch.Tensor.cuda, torch.nn.Module.cuda, torch.load = tensor_cuda, module_cuda, load
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.load = saved


def run(ctx: LaunchContext) -> int:
    """Run ``ctx.script`` as ``__main__`` inside the upstream repo with the adapter installed."""
    from .adapters import get_adapter

    repo = ctx.repo.resolve()
    script = ctx.script if ctx.script.is_absolute() else (repo / ctx.script)
    if not script.is_file():
        raise AnySRError(f"upstream script {script} not found; run from the upstream repo root or pass --repo DIR")
    adapter = get_adapter(ctx.method)
    saved_path, saved_argv, saved_cwd = list(sys.path), list(sys.argv), os.getcwd()
    purge_modules()
    sys.path.insert(0, str(repo))
    sys.argv = [str(script)] + list(ctx.argv)
    os.chdir(repo)
    try:
        with cpu_shim() if ctx.cpu else contextlib.nullcontext():
            adapter.install(ctx)
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as exc:
                code = exc.code
                return code if isinstance(code, int) else (0 if code is None else 1)
        return 0
    finally:
        for cleanup in reversed(ctx.cleanups):
            cleanup()
        os.chdir(saved_cwd)
        sys.path[:], sys.argv[:] = saved_path, saved_argv
        purge_modules()


__all__ = ["LaunchContext", "run", "cpu_shim", "purge_modules"]
