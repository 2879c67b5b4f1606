"""The user's upstream model, built by its own repository: ``--repo DIR --checkpoint FILE``.

Why: the reference look-alikes (``--model NAME``) are our code; a number measured on
them is a number about *our* model.  The tools (``anysr eval / flops / bench / export``)
therefore build the model a checkpoint describes with the repository that wrote it:

* LIIF / LTE / SRNO checkpoints carry their spec, ``{'model': {'name', 'args', 'sd', ...}}``;
  the repo's own ``models.make`` builds it, imported from ``DIR`` with the launcher's
  isolation (the repo root first on ``sys.path``, clashing modules purged before and
  after), and through the launcher's build path (the method adapter's ``build_spec``), so a spec with
  an ``anysr:`` entry is anysrified before its weights load and a vanilla one gets the
  ``--config`` (default: the paper's) with fresh gates;
* the unconverted model (``original``: the spec without ``anysr:``, the non-``anysr_*``
  weights) is built the same way, for the tools' "vs original" figures;
* the upstream code calls ``.cuda()`` unconditionally; on the models built here those
  calls follow the model's device (the CPU, or the meta device on which the cost tools
  count a twin of the model);
* the tools then drive the model only through its method adapter
  (``adapter_for(model).sr_inputs / super_resolve``).

Every ``--repo`` tool builds through :func:`repo_registry` (the checkout's ``models.make``, its
missing requirements as one-line errors, a failing constructor as a ``ConfigError``);
``convert-config --repo``, which needs no weights, builds with :func:`build_for_inspection`
(the meta device, else the CPU under a size guard).

Meta-SR / ArbSR checkpoints are bare state dicts: nothing says how to build the net
(its ``main.py`` arguments), so they are refused with a pointer to ``anysr launch``.

:func:`check_reference_checkpoint` is the other half: a checkpoint whose spec names a
different model than a reference (``--model liif-edsr-baseline --checkpoint lte.pth``), or
whose keys do not fit it, is a one-line :class:`CheckpointError` naming ``--repo``.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import math
import sys
import types
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..runtime.checkpoint import ANYSR_KEY as GATE_MARK, fit_problems, load_file, strip_wrapper_prefix
from ..runtime.config import AnySRConfig
from ..runtime.errors import AdapterError, CheckpointError, ConfigError
from ..runtime.errors import AnySRError
from ..runtime.export import export_subnet
from ..runtime.injection import anysrify
from ..runtime.limits import build_within
from ..runtime.methods import adapter_for_upstream, all_adapters
from ..tools.cost import build_model, encoder_of
from ..tools.reference.models import WRAPPER_UPSTREAM_NAMES
from .checkout import API_PATH
from .checkout import dependency_errors, import_repo_module, registry_make
from .launch import ANYSR_KEY, INIT_FROM_KEY, LaunchContext, purge_modules

#: key of the ``.safetensors`` metadata entry written by ``anysr export``
EXPORT_META_KEY = "anysr_export"


# ---------------------------------------------------------------------------
# checkpoints


def checkpoint_spec(obj, path) -> dict | None:
    """The model spec ``{'name', 'args', 'sd', ...}`` of a LIIF-style checkpoint, else None."""
    spec = obj.get("model") if isinstance(obj, Mapping) else None
    if isinstance(spec, Mapping) and isinstance(spec.get("name"), str):
        return dict(spec)
    return None


def _repo_hint(name) -> str:
    adapter = adapter_for_upstream(name)
    return adapter.repository if adapter is not None and adapter.repository else \
        f"the repository that defines {name!r}"


def adapter_for_spec(name: str):
    """The method adapter that builds upstream model ``name`` from a checkpoint's spec."""
    adapter = adapter_for_upstream(name)
    if adapter is None or not adapter.builds_specs:
        names = sorted({n for a in all_adapters() if a.builds_specs for n in a.upstream_names})
        raise AdapterError(f"the checkpoint's model spec names {name!r}; --repo builds the models "
                           f"{', '.join(names)} (from the checkpoints their repositories save)")
    return adapter


def check_reference_checkpoint(reference: str, obj, path) -> None:
    """Refuse a checkpoint whose spec names another model than reference ``reference``."""
    spec = checkpoint_spec(obj, path)
    if spec is None:
        return
    name = spec["name"]
    prefix = reference.split("-", 1)[0]
    wanted = WRAPPER_UPSTREAM_NAMES.get(prefix)
    if wanted is None:  # a bare encoder reference
        raise CheckpointError(f"{path} holds a whole {name!r} model (model.name in its spec), not the "
                              f"{reference!r} encoder: run the model itself with --repo <{_repo_hint(name)} "
                              "checkout>")
    if name != wanted:
        raise CheckpointError(f"{path} holds a {name!r} model (model.name in its spec); the reference "
                              f"{reference!r} computes {wanted!r}, a different function: run it with "
                              f"--repo <{_repo_hint(name)} checkout>")
    enc = ((spec.get("args") or {}).get("encoder_spec") or {}).get("name")
    ref_enc = reference.split("-", 1)[1]
    if enc is not None and enc != ref_enc:
        raise CheckpointError(f"{path}: its {name} model has a {enc!r} encoder, the reference {reference!r} "
                              f"a {ref_enc!r} one: use --model {prefix}-{enc} (with --model-arg for its sizes) "
                              f"or --repo <{_repo_hint(name)} checkout>")


def load_fitting(model: nn.Module, sd: Mapping, path, name: str, spec_name: str | None = None) -> None:
    """Strict ``load_state_dict`` whose failure is one line: what did not fit, and ``--repo``."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in sd.items()
              if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = [f"{t} {len(keys)} (e.g. {', '.join(keys[:3])})" for t, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if keys]
        hint = (f"--repo <{_repo_hint(spec_name)} checkout>" if spec_name else
                "--model-arg for the model's sizes, or --repo <the upstream checkout that wrote it>")
        raise CheckpointError(f"{path} does not fit {name}: {'; '.join(parts)}; use {hint}")
    model.load_state_dict(sd)


# ---------------------------------------------------------------------------
# the repo's own registry


@contextlib.contextmanager
def repo_imports(repo: Path):
    """The repo's top-level modules importable (root first on ``sys.path``, clashing
    modules purged on entry and exit), as under ``anysr launch``."""
    saved = list(sys.path)
    purge_modules()
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        sys.path[:] = saved
        purge_modules()


@contextlib.contextmanager
def _cuda_means(device):
    """``.cuda()`` moves to ``device`` instead (the CPU, or the meta device of a cost twin)."""
    saved = torch.Tensor.cuda, nn.Module.cuda
    torch.Tensor.cuda = lambda self, *a, **k: self.to(device)
    nn.Module.cuda = lambda self, *a, **k: self.to(device)
    try:
        yield
    finally:
        torch.Tensor.cuda, nn.Module.cuda = saved


def _cuda_follows_device(fn):
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        p = next(self.parameters(), None)
        if p is None or p.device.type == "cuda":
            return fn(self, *args, **kwargs)
        with _cuda_means(p.device):
            return fn(self, *args, **kwargs)
    call._anysr_cuda_guard = True
    return call


def follow_device(model: nn.Module) -> nn.Module:
    """Make the upstream's hard-wired ``.cuda()`` calls follow the model's device, for this
    instance only (``forward``, ``gen_feat``, ``query_rgb`` bound on the instance: the
    upstream class stays untouched; deep copies rebind to the copy)."""
    cls = type(model)
    for name in ("forward", "gen_feat", "query_rgb"):
        fn = getattr(cls, name, None)
        if callable(fn) and not getattr(model.__dict__.get(name), "_anysr_cuda_guard", False):
            model.__dict__[name] = types.MethodType(_cuda_follows_device(fn), model)
    return model


def _context(repo: Path, adapter, anysr_config, log):
    return LaunchContext(method=adapter.name, repo=repo, script=Path("<anysr tools>"), argv=[],
                         anysr_config=anysr_config, log=log)


def _plain_spec(spec: Mapping) -> dict:
    return {k: copy.deepcopy(v) for k, v in spec.items() if k not in ("sd", ANYSR_KEY, INIT_FROM_KEY)}


# ---------------------------------------------------------------------------
# the one builder of every --repo tool (convert-config, flops, bench, eval, export)

#: the most tensor memory a CPU build may create when the meta device failed (convert-config --repo)
CPU_BUILD_LIMIT = 2 * 1024 ** 3


@contextlib.contextmanager
def repo_registry(repo, method: str | None = None):
    """The checkout's ``models.make`` (checked: a failing constructor is a one-line error),
    importable with the launcher's isolation; a module the checkout needs but that is not
    installed is a one-line :class:`MissingDependencyError` while it is used."""
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise ConfigError(f"--repo {repo}: not a folder (give the upstream checkout's root)")
    with repo_imports(repo), dependency_errors(repo):
        make = registry_make(import_repo_module(repo, "models", method=method), repo, method)
        yield functools.partial(_checked_make, make, repo)


def _checked_make(make, repo, spec, args=None, load_sd=False):
    """``make(spec)`` with the upstream's ``.cuda()`` calls following the build's device; the
    constructor's own failure (a spec it refuses) becomes a one-line :class:`ConfigError`."""
    device = torch.empty(0).device  # the CPU, or the meta device inside `with torch.device("meta")`
    try:
        with _cuda_means(device):
            return make(spec, args=args, load_sd=load_sd)
    except (AnySRError, ModuleNotFoundError):
        raise
    except Exception as exc:
        name = spec.get("name") if isinstance(spec, Mapping) else spec
        raise ConfigError(f"--repo {repo}: models.make({name!r}) failed: {type(exc).__name__}: "
                          f"{_one_line(exc, 300)}") from exc


def _one_line(exc, limit: int) -> str:
    return " ".join(str(exc).split())[:limit]


def _size(nbytes: int) -> str:
    return f"{nbytes / 1024 ** 3:.3g} GiB" if nbytes >= 1024 ** 3 else f"{nbytes / 1024 ** 2:.3g} MB"


class _AllocationGuard(TorchFunctionMode):
    """Counts the bytes tensor constructors create and stops before ``limit`` is passed (each
    constructor's size is probed on the meta device first)."""

    CONSTRUCTORS = frozenset({torch.empty, torch.zeros, torch.ones, torch.full, torch.rand, torch.randn,
                              torch.randint, torch.eye, torch.arange, torch.linspace, torch.empty_strided,
                              torch.normal, torch.randperm})

    def __init__(self, limit: int, what: str):
        super().__init__()
        self.limit, self.what, self.bytes = limit, what, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.CONSTRUCTORS:
            try:
                probe = func(*args, **{**kwargs, "device": "meta"})
                self.bytes += probe.numel() * probe.element_size()
            except Exception:  # a signature without `device`: counted by nothing, allocated as asked
                pass
            if self.bytes > self.limit:
                raise ConfigError(f"{self.what} cannot be built on the meta device, and building it on the CPU "
                                  f"would create more than {_size(self.limit)} of tensors (the limit of this "
                                  "fallback); list its blocks in your own code (anysr_plugin.inspect_targets(model))")
        return func(*args, **kwargs)


def build_for_inspection(make, spec: Mapping, what: str):
    """``(model, note)``: ``spec`` built with ``make`` on the meta device (no memory, no compute)
    when its constructor allows it, else on the CPU under :data:`CPU_BUILD_LIMIT` (EDSR's
    ``MeanShift`` assigns CPU tensors in ``__init__``, which the meta device refuses).
    ``note`` is None for the meta build, else the line that says the CPU build ran."""
    try:
        with torch.device("meta"):
            return make(dict(spec)), None
    except ModuleNotFoundError:
        raise
    except Exception as exc:  # the constructor mixes devices, reads values, ...
        cause = exc.__cause__ if isinstance(exc, ConfigError) and exc.__cause__ is not None else exc
        failed = f"{type(cause).__name__}: {_one_line(cause, 160)}"
    with _AllocationGuard(CPU_BUILD_LIMIT, what) as guard:
        model = make(dict(spec))
    params = sum(p.numel() for p in model.parameters())
    return model, (f"{what} cannot be built on the meta device ({failed}); built it on the CPU instead "
                   f"({params / 1e6:.3g} M parameters, {_size(guard.bytes)} of tensors created; "
                   f"limit {_size(CPU_BUILD_LIMIT)})")


def build_from_repo(repo, checkpoint, anysr_config=None, log=None):
    """``(original, model, spec)`` built by ``repo``'s own registry from ``checkpoint``'s spec.

    ``original``: the unconverted upstream model with the checkpoint's shared weights;
    ``model``: the AnySR model (the spec's ``anysr:`` entry, else ``anysr_config`` / the
    paper's settings with fresh gates); ``spec``: the checkpoint's spec without ``sd``.
    Both are in eval mode, built on the CPU (they need the checkpoint's weights).
    """
    repo = Path(repo).resolve()
    if not repo.is_dir():
        raise ConfigError(f"--repo {repo}: not a directory (give the upstream checkout's root)")
    obj = load_file(checkpoint)
    spec = checkpoint_spec(obj, checkpoint)
    if spec is None:
        raise CheckpointError(
            f"{checkpoint} carries no model spec ({{'model': {{'name', 'args', 'sd'}}}} as LIIF / LTE / SRNO save); "
            "a bare state dict does not say how to build its net: evaluate Meta-SR / ArbSR checkpoints with "
            "`anysr launch metasr|arbsr -- main.py ... --test_only` in their repository; for a repository with "
            f"a registry of its own, {API_PATH}")
    if not isinstance(spec.get("sd"), Mapping):
        raise CheckpointError(f"{checkpoint}: its model spec has no `sd` state dict")
    spec["sd"] = strip_wrapper_prefix(spec["sd"])
    adapter = adapter_for_spec(spec["name"])
    cfg = anysr_config if anysr_config is not None else AnySRConfig()
    ctx = _context(repo, adapter, cfg, log)
    with repo_registry(repo) as make:
        original = make(_plain_spec(spec))
        load_fitting(original, {k: v for k, v in spec["sd"].items() if GATE_MARK not in k}, checkpoint,
                     f"{spec['name']} as {repo} builds it")
        model = adapter.build_spec(ctx, make, spec, load_sd=True)
    follow_device(original)
    follow_device(model)
    return original.eval(), model.eval(), {k: v for k, v in spec.items() if k != "sd"}


def build_spec_from_repo(repo, spec: Mapping) -> nn.Module:
    """The unconverted model of ``spec`` (no weights) built by ``repo``'s registry."""
    adapter_for_spec(spec["name"])
    with repo_registry(repo) as make:
        model = make(_plain_spec(spec))
    return follow_device(model).eval()


# ---------------------------------------------------------------------------
# CLI


def load_repo_cli_model(args, anysrify_it: bool = True):
    """``(original, anysr_model)`` for ``--repo DIR --checkpoint FILE`` (see ``commands/_model.py``)."""
    if not getattr(args, "checkpoint", None):
        raise ConfigError("--repo DIR needs --checkpoint FILE: the checkpoint's model spec says what to build")
    if getattr(args, "model_arg", None):
        raise ConfigError("--model-arg does not apply with --repo: the checkpoint's spec gives the model's arguments")
    cfg = AnySRConfig.from_yaml(args.config) if getattr(args, "config", None) else None
    original, model, spec = build_from_repo(args.repo, args.checkpoint, cfg)
    args.model = f"{spec['name']} ({Path(args.repo).resolve().name})"
    args.model_source = {"source": "repo", "spec": spec}
    return original, (model if anysrify_it else None)


# ---------------------------------------------------------------------------
# exported sub-networks (.safetensors metadata)


def export_metadata(source: Mapping, config, width: float, scale, part: str) -> dict:
    """The ``.safetensors`` metadata of an export: what to build and how to slice it."""
    meta = {"format": "anysr-subnet", "version": 1, "model": source, "anysr": config.to_dict(),
            "width": float(width), "scale": None if scale is None else [float(scale[0]), float(scale[1])],
            "part": part}
    return {EXPORT_META_KEY: json.dumps(meta, default=str)}


def read_export_metadata(path) -> dict:
    """The metadata dict :func:`export_metadata` stored in ``path`` (``.safetensors``); a file
    that cannot be read as one is a CheckpointError naming it."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:  # SafetensorError (a broken header), OSError
        raise CheckpointError(f"cannot read export {path}: {type(exc).__name__}: {exc}") from None
    if EXPORT_META_KEY not in meta:
        raise CheckpointError(f"{path} has no `{EXPORT_META_KEY}` metadata: not written by `anysr export`")
    try:
        spec = json.loads(meta[EXPORT_META_KEY])
    except ValueError as exc:
        spec, problem = None, f"is not JSON ({exc})"
    else:
        problem = _export_spec_problem(spec)
    if problem:
        raise CheckpointError(f"{path}: its `{EXPORT_META_KEY}` metadata {problem}; write the file again with "
                              "`anysr export`")
    return spec


def _export_spec_problem(spec) -> str:
    """"" when `spec` has the fields :func:`load_export` reads, with the right kinds, else what is wrong."""
    if not isinstance(spec, dict):
        return f"is a JSON {type(spec).__name__}, not an object"
    missing = [k for k in ("model", "anysr", "width", "scale", "part") if k not in spec]
    if missing:
        return f"lacks {', '.join(missing)}"
    model = spec["model"]
    if not isinstance(model, dict) or not (isinstance(model.get("name"), str) or (
            model.get("source") == "repo" and isinstance(model.get("spec"), dict))):
        return "`model` names no model (expected {\"name\": ...} or {\"source\": \"repo\", \"spec\": {...}})"
    if not isinstance(model.get("args") or {}, dict):
        return f"`model.args` is {model['args']!r}, not an object"
    if not isinstance(spec["anysr"], dict):
        return "`anysr` is not an object (the AnySR config)"
    if isinstance(spec["width"], bool) or not isinstance(spec["width"], (int, float)):
        return f"`width` is {spec['width']!r}, not a number"
    scale = spec["scale"]
    if scale is not None and not (isinstance(scale, list) and len(scale) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in scale)):
        return f"`scale` is {scale!r}, not null or [s_h, s_w]"
    if spec["part"] not in ("model", "encoder"):
        return f"`part` is {spec['part']!r}, not \"model\" or \"encoder\""
    return ""


def export_shapes(path) -> dict:
    """``{key: shape}`` of a ``.safetensors`` file, from its header alone (no tensor is read)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # SafetensorError (a broken header), OSError
        raise CheckpointError(f"cannot read export {path}: {type(exc).__name__}: {exc}") from None


def export_budget(shapes: Mapping, width) -> int:
    """Elements the model behind an export of `shapes` may hold: a sub-network at width w keeps
    at least about w**2 of each sliced weight (RDB growth) and every unsliced one, so the full
    plain model holds at most ``2 / w**2`` times the stored values (capped at 256), plus 1M for
    small heads.  A metadata that claims more is refused while the model is built dry."""
    stored = sum(math.prod(s) for s in shapes.values())
    ok = isinstance(width, (int, float)) and not isinstance(width, bool) and 0 < width <= 1
    factor = min(2 / width ** 2, 256) if ok else 256
    return int(stored * factor) + 2**20


def load_export(path, repo=None) -> nn.Module:
    """Rebuild the static sub-network ``anysr export`` wrote to a ``.safetensors`` file.

    The metadata names the model (a reference name + arguments, or an upstream spec,
    then ``repo`` is its checkout), the AnySR config, the width, the folded scale and
    the part; the model is built, anysrified, sliced with ``export_subnet`` and the
    file's tensors loaded strictly.  The metadata is untrusted: the model is first built dry
    (meta device) within :func:`export_budget` of the stored values, and the sub-network's
    shapes are compared with the header's before any tensor is read.
    """
    from safetensors.torch import load_file as load_st


    meta = read_export_metadata(path)
    shapes = export_shapes(path)
    limit = export_budget(shapes, meta.get("width"))
    what = f"{path}: the model its metadata describes (for {sum(map(math.prod, shapes.values())):,} stored values)"
    src = meta["model"]
    if src.get("source") == "repo":
        if repo is None:
            raise ConfigError(f"{path} holds an upstream {src['spec'].get('name')!r} sub-network: pass repo=<its "
                              "checkout> to rebuild it")
        model = build_within(limit, what, build_spec_from_repo, repo, src["spec"])
    else:
        model = build_within(limit, what, build_model, src["name"], seed=src.get("seed", 0), **(src.get("args") or {}))
    anysrify(model, AnySRConfig.from_dict(meta["anysr"]))
    target = encoder_of(model) if meta["part"] == "encoder" else model
    sub = export_subnet(target, meta["width"], scale=meta["scale"])
    problems = fit_problems(sub, {k: torch.empty(v, device="meta") for k, v in shapes.items()})
    if problems:  # checked on the header's shapes, before a tensor is read
        raise CheckpointError(f"{path} does not hold the sub-network its metadata describes ({problems}); write "
                              "the file again with `anysr export`")
    try:
        tensors = load_st(str(path))
    except Exception as exc:  # SafetensorError: tensors that do not fit the header
        raise CheckpointError(f"cannot read the tensors of export {path}: {type(exc).__name__}: {exc}") from None
    sub.load_state_dict(tensors)
    return sub.eval()


__all__ = ["build_from_repo", "build_spec_from_repo", "repo_registry", "build_for_inspection", "CPU_BUILD_LIMIT",
           "check_reference_checkpoint", "load_fitting",
           "load_repo_cli_model", "follow_device", "repo_imports", "export_metadata", "read_export_metadata",
           "load_export", "checkpoint_spec", "EXPORT_META_KEY"]
