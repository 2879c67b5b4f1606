"""Run an upstream repository's own script with AnySR installed, without editing the repo.

``anysr launch <method> [--cpu] [--repo DIR] [--anysr-config FILE] -- SCRIPT ARGS...``

1. the upstream repo root goes first on ``sys.path`` and modules whose names clash with
   it (the stdlib ``test``, HF ``datasets``, another repo's ``models`` / ``model`` /
   ``data`` ...) are purged from ``sys.modules``, so ``import models`` finds the repo's;
2. with ``--cpu`` the upstream's unconditional ``.cuda()`` calls become no-ops and
   ``torch.load`` maps to the CPU: **a smoke-test aid** for machines without CUDA, not
   a way to train for real;
3. the method adapter's ``install(ctx)`` hooks the upstream registry / model builder so
   the model is anysrified (before the optimizer is built) and the scale reaches it; what
   that takes is method knowledge and lives in the adapters (LIIF / LTE / SRNO:
   ``adapters/registry_hooks.py``; Meta-SR / ArbSR: ``adapters/metasr.py``), which use the
   helpers at the end of this module;
4. the script runs as ``__main__`` with ``sys.argv = [SCRIPT, *ARGS]``; while it runs,
   ``torch.save`` refuses a spec claiming AnySR without gate tensors (:func:`honest_saves`).
   Everything is undone when the script returns (patched classes, hooks, ``torch``).
"""
from __future__ import annotations

import contextlib
import functools
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..runtime.config import AnySRConfig
from ..runtime.control import anysr_blocks
from ..runtime.errors import AnySRError, CheckpointError, NoScaleSourceError, ScaleSourceError
from ..runtime.methods import get_adapter
from ..runtime.plan import peek_plan
from ..tools.cost import gate_macs
from .checkout import dependency_errors, import_repo_module as checkout_import

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
    #: vanilla upstream weights loaded into every freshly built AnySR model (``--init-from``);
    #: overrides the spec's ``anysr_init_from`` key written by ``anysr convert-config``
    init_from: Path | None = None
    #: messages printed by the hooks go here (stderr by default; tests capture them)
    log: object = None
    #: the user's modules imported before the script runs (``--import``: their own block types)
    imports: list = field(default_factory=list)
    #: run every AnySR model built by the hooks at this fixed width (``--width``; e.g. 1.0 = the
    #: full network at every scale, the paper's AnySR-double-dagger rows); None = by scale
    width: float | None = None
    #: AnySRConfig fields set on the command line (``--scale-from``, ``--lam``) for every AnySR
    #: model the hooks build, written into the spec's ``anysr:`` entry so saved checkpoints carry them
    overrides: dict = field(default_factory=dict)
    #: True while the script runs (models built then are scoped to it: deferral, test-scale lines)
    running: bool = False

    def say(self, message: str) -> None:
        print(f"anysr: {message}", file=self.log or sys.stderr, flush=True)


def purge_modules(names=UPSTREAM_MODULE_NAMES) -> None:
    for key in list(sys.modules):
        if key.split(".")[0] in names:
            del sys.modules[key]


class _CpuDataLoader(torch.utils.data.DataLoader):
    """DataLoader without worker processes or pinned memory (``--cpu`` smoke runs: the
    upstream scripts ask for 8 workers and ``pin_memory=True``, pointless without CUDA)."""

    def __init__(self, *args, **kwargs):
        args = list(args)
        # DataLoader(dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn, pin_memory, ...)
        for index, key, value in ((5, "num_workers", 0), (7, "pin_memory", False)):
            if len(args) > index:
                args[index] = value
            else:
                kwargs[key] = value
        kwargs.pop("persistent_workers", None)
        kwargs.pop("prefetch_factor", None)
        super().__init__(*args, **kwargs)


@contextlib.contextmanager
def cpu_shim():
    """Make ``.cuda()`` a no-op and load checkpoints onto the CPU (smoke tests only).

    Also replaces ``torch.utils.data.DataLoader`` by a subclass that uses no worker
    processes and no pinned memory, so a 2-core CPU machine can dry-run the upstream
    scripts in seconds (they must import ``DataLoader`` after the shim is on, which is
    the case for a script run by :func:`run`)."""
    saved = (torch.Tensor.cuda, torch.nn.Module.cuda, torch.load)
    saved_loader = torch.utils.data.DataLoader

    def tensor_cuda(self, *args, **kwargs):
        return self

    def module_cuda(self, *args, **kwargs):
        return self

    def load(*args, **kwargs):
        kwargs.setdefault("map_location", "cpu")
        return saved[2](*args, **kwargs)

    torch.Tensor.cuda, torch.nn.Module.cuda, torch.load = tensor_cuda, module_cuda, load
    torch.utils.data.DataLoader = _CpuDataLoader
    saved_visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    try:
        yield
    finally:
        torch.Tensor.cuda, torch.nn.Module.cuda, torch.load = saved
        torch.utils.data.DataLoader = saved_loader
        if saved_visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)


def _claims_anysr_without_gates(obj) -> bool:
    from collections.abc import Mapping

    specs = [obj] + ([obj["model"]] if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping) else [])
    for spec in specs:
        if isinstance(spec, Mapping) and spec.get(ANYSR_KEY) is not None and isinstance(spec.get("sd"), Mapping):
            if not any("anysr_" in str(k) for k in spec["sd"]):
                return True
    return False


@contextlib.contextmanager
def honest_saves():
    """While the script runs, ``torch.save`` refuses a model spec that claims AnySR (``anysr:``)
    next to a state dict without any gate tensor: the model trained was the plain upstream
    one (e.g. LTE resuming a vanilla checkpoint), and such a file would lie about itself."""
    original = torch.save

    @functools.wraps(original)
    def save(obj, *args, **kwargs):
        if _claims_anysr_without_gates(obj):
            raise CheckpointError(
                "refusing to save a checkpoint whose model spec claims AnySR (`anysr:`) but whose `sd` holds no "
                "anysr_* gate tensor: the model being trained is the plain upstream model (resumed from a vanilla "
                "checkpoint through `resume:`?). Point `resume:` at the AnySR run (anysr convert-config does) or "
                "remove it, and run again")
        return original(obj, *args, **kwargs)

    torch.save = save
    try:
        yield
    finally:
        torch.save = original


def import_user_modules(specs) -> list:
    """Import the user's modules named by ``--import`` (a ``.py`` file or a dotted module name,
    looked up from the current folder / the repo root), so what they register at import --
    block types (``anysr_plugin.register_block_type``), adapters -- exists before any model
    is built.  Returns the modules; a module that cannot be imported is a one-line error."""
    import importlib
    import importlib.util

    modules = []
    for spec in specs or ():
        spec = str(spec)
        try:
            if spec.endswith(".py"):
                path = Path(spec).resolve()
                if not path.is_file():
                    raise AnySRError(f"--import {spec}: file does not exist")
                loader_spec = importlib.util.spec_from_file_location(path.stem, path)
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[path.stem] = module
                loader_spec.loader.exec_module(module)
            else:
                module = importlib.import_module(spec)
        except AnySRError:
            raise
        except Exception as exc:
            raise AnySRError(f"--import {spec}: importing it failed ({type(exc).__name__}: {exc}); pass a .py "
                             "file or a module importable from the current folder") from None
        modules.append(module)
    return modules


def run(ctx: LaunchContext) -> int:
    """Run ``ctx.script`` as ``__main__`` inside the upstream repo with the adapter installed."""
    adapter = get_adapter(ctx.method)
    repo = ctx.repo.resolve()
    script = ctx.script if ctx.script.is_absolute() else (repo / ctx.script)
    if not script.is_file():
        raise AnySRError(f"upstream script {script} not found in {repo}; name a script of that repository "
                         "(e.g. train_liif.py), run from its root or pass --repo DIR")
    saved_path, saved_argv, saved_cwd = list(sys.path), list(sys.argv), os.getcwd()
    ctx.running = True
    purge_modules()
    sys.path.insert(0, str(repo))
    sys.argv = [str(script)] + list(ctx.argv)
    os.chdir(repo)
    try:
        with cpu_shim() if ctx.cpu else contextlib.nullcontext(), honest_saves(), \
                dependency_errors(repo, script.parent):  # a module the checkout needs, not installed: one line
            import_user_modules(ctx.imports)  # e.g. the user's own block types, registered on import
            adapter.install(ctx)
            try:
                runpy.run_path(str(script), run_name="__main__")
            except SystemExit as exc:
                code = exc.code
                return code if isinstance(code, int) else (0 if code is None else 1)
            except (NoScaleSourceError, ScaleSourceError) as exc:  # the remedy, as the launcher takes it
                raise type(exc)(f"{exc}. With anysr launch: --scale-from MODULE:FUNCTION (or --scale-from context), "
                                "or scale_from: in the model spec's anysr: entry (anysr convert-config "
                                "--scale-from)") from None
        return 0
    finally:
        ctx.running = False
        for cleanup in reversed(ctx.cleanups):
            cleanup()
        os.chdir(saved_cwd)
        sys.path[:], sys.argv[:] = saved_path, saved_argv
        purge_modules()


# ---------------------------------------------------------------------------
# what the method adapters' install(ctx) use (adapters/registry_hooks.py, adapters/metasr.py)

#: top-level model-spec key (ignored by upstream ``make``) naming vanilla weights to start from
INIT_FROM_KEY = "anysr_init_from"
#: top-level model-spec key holding the AnySRConfig dict
ANYSR_KEY = "anysr"


def import_repo_module(ctx: LaunchContext, name: str, required: bool = True):
    """Import the upstream repo's own top-level module `name` (never a stdlib/PyPI namesake);
    see :func:`anysr_plugin.glue.checkout.import_repo_module` for the messages."""
    return checkout_import(ctx.repo, name, required=required, method=ctx.method, script=ctx.script)


def script_scope(ctx: LaunchContext):
    """An ExitStack closed when the script returns (class patches and hooks are undone there)."""
    stack = getattr(ctx, "_scope", None)
    if stack is None:
        stack = ctx._scope = contextlib.ExitStack()
        ctx.cleanups.append(stack.close)
    return stack


@contextlib.contextmanager
def report_test_scales(ctx: LaunchContext, model):
    """Print, for evaluation calls, the width and the AnySR blocks' MACs each new scale runs at.

    A line is printed whenever an ``eval()`` call runs at another (scale, width) than the
    previous one, i.e. once per test scale, next to the script's own PSNR output."""
    blocks = anysr_blocks(model)
    last = {}

    def observe(block, args):
        if block.training or not args or not isinstance(args[0], torch.Tensor):
            return None
        x = args[0]
        scale, widths = peek_plan(block, x)
        s = tuple(round(float(v), 4) for v in scale[0].tolist())
        key = (s, tuple(widths))
        if last.get("key") == key:
            return None
        last["key"] = key
        pixels = int(x.shape[-2]) * int(x.shape[-1])
        w = widths[0] if len(set(widths)) == 1 else None
        macs = sum(b.conv_macs_per_pixel(w) * pixels + gate_macs(b, w) for b in blocks) if w is not None else None
        shown = f"x{s[0]:g}" if s[0] == s[1] else f"x{s[0]:g}/{s[1]:g}"
        ctx.say(f"test scale {shown}: width {format(w, 'g') if w is not None else widths}, encoder blocks "
                f"{'mixed widths' if macs is None else f'{macs / 1e9:.4g} GMACs'} per image "
                f"({x.shape[-2]}x{x.shape[-1]} LR, {len(blocks)} AnySR blocks)")
        return None

    handle = blocks[0].register_forward_pre_hook(observe) if blocks else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()



__all__ = ["LaunchContext", "run", "cpu_shim", "purge_modules", "honest_saves", "import_user_modules",
           "import_repo_module", "script_scope", "report_test_scales", "INIT_FROM_KEY", "ANYSR_KEY"]
