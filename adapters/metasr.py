"""Meta-SR (XuecaiHu/Meta-SR-Pytorch: MetaRDN, MetaEDSR, MetaRCAN) and the machinery the
EDSR-PyTorch family shares (also used by :mod:`anysr_plugin.adapters.arbsr`).

How the scale reaches the blocks
--------------------------------
Meta-SR's wrapper ``model.Model.forward(x, idx_scale, pos_mat)`` calls
``net.set_scale(idx_scale)`` (an **index** into ``args.scale``) and then ``net(x, pos_mat)``.
:func:`wrap_set_scale` replaces the net's ``set_scale`` by an instance attribute with the
same signature that calls the original and records the resulting scale pair on the net
(``net._anysr_call_scale``); :meth:`MetaSRAdapter.scale_from_call` returns it for the
next forward, one row per sample of the batch (Algorithm 1's full-width reset is then
drawn per sample, docs/design.md item 6; in eval every sample shares the width and the sliced path runs).  Fallback (a net anysrified outside the launcher, never hooked): the first
column of ``pos_mat`` (``1/s``, prepended by ``Trainer.input_matrix_wpn``), rounded to 1e-4.

The launcher (``anysr launch metasr -- main.py ...``)
------------------------------------------------------
:func:`install_edsr_family` makes the unmodified repo run on a current PyTorch / SciPy /
matplotlib, and converts the net **inside** ``model.Model`` before ``Trainer`` builds the
optimizer:

* ``sys.modules['dataloader']`` (Meta-SR; ``data.dataloader`` for ArbSR) is pre-seeded with
  a working ``MSDataLoader``: one scale per batch drawn with ``random.randrange`` (ArbSR:
  integer scales only while ``dataset.first_epoch``), ``dataset.set_scale`` before the
  samples are read, batches ``[lr, hr, filenames, idx_scale]``; workers (``--n_threads``)
  are real ``torch.utils.data`` workers;
* ``MPLBACKEND=Agg`` and ``matplotlib.use`` ignores interactive backends (ArbSR's
  ``matplotlib.use('TKAgg')`` kills headless runs);
* ``scipy.misc.imsave`` (gone since SciPy 1.2; used by ``--save_results``) via ``imageio``
  or Pillow;
* Meta-SR ``--ext sep``: ``numpy.load`` of the repo's own ``bin/*.pt`` image caches gets
  ``allow_pickle=True`` (numpy >= 1.16.3 refuses pickles by default);
* ``model.Model.load`` first anysrifies ``get_model()`` (after ``.to(device)`` and
  DataParallel, before the checkpoint is read, so AnySR checkpoints fill the gates), then
  reports what the lenient upstream loader did with the ``anysr_*`` keys.

What the lenient upstream loaders do with ``anysr_*`` keys
----------------------------------------------------------
* Meta-SR always loads with ``strict=False``; ArbSR ``--resume N`` too; ArbSR ``--resume 0``
  (``--pre_train``) keeps the file's keys that the model has and loads strictly.
* Upstream (vanilla) weights into the launched, anysrified net: every upstream key loads;
  the ``anysr_*`` gate tensors are not in the file and keep their identity initialisation
  (``gate="identity"``), so fine-tuning starts from the pretrained function.  Reported.
* An AnySR checkpoint (``model_{epoch}.pt`` written by the launched trainer) into the
  launched net (``--resume N``, ``--pre_train FILE``, ``--test_only``): every key loads,
  gates included.
* An AnySR checkpoint into a **vanilla** upstream run (without the launcher): the loaders
  silently drop the ``anysr_*`` keys and run the full-width net without gates -- a
  different function.  Always evaluate AnySR checkpoints through ``anysr launch``.
"""
from __future__ import annotations

import functools
import math
import os
import random
import sys
import types
from pathlib import Path

import torch
from torch import nn

from ..glue.launch import import_repo_module, report_test_scales, script_scope
from ..runtime.checkpoint import atomic_write_text, load_upstream_checkpoint
from ..runtime.config import AnySRConfig
from ..runtime.control import unwrap
from ..runtime.control import get_state, set_width
from ..runtime.errors import AdapterError, AnySRWarning, ConfigError
from ..runtime.injection import anysrify, inspect_targets, is_anysr
from ..runtime.methods import MethodAdapter, find_tensor_arg, register_adapter
from ..runtime.scale_source import CALL_SCALE_ATTR, AdapterSource, per_sample, recorded_scale, wrap_set_scale  # noqa: F401  (re-exported)

#: paper recipe (Sec. IV-A) for fine-tuning Meta-SR / ArbSR into AnySR
PAPER_RECIPE = {"patch_size": 50, "lr": 1e-5, "lr_decay": 200, "epochs": 500, "optimizer": "ADAM",
                "loss": "1*L1"}


def _log(msg: str) -> None:
    print(f"anysr: {msg}", flush=True)


# ---------------------------------------------------------------------------
# scale plumbing (the set_scale recorder itself is the runtime's: scale_source.wrap_set_scale)


def scale_from_pos_mat(pos_mat) -> "torch.Tensor | None":
    """(1, 2) scale from Meta-SR's ``pos_mat`` (N', P, 3) whose column 0 is ``1/s``."""
    if not isinstance(pos_mat, torch.Tensor) or pos_mat.dim() < 2 or pos_mat.shape[-1] != 3 \
            or pos_mat.numel() == 0:
        return None
    inv = float(pos_mat.reshape(-1, 3)[0, 0])
    if not math.isfinite(inv) or inv <= 0:
        return None
    s = round(1.0 / inv, 4)  # float32 1/1.5 -> 1.4999999; Meta-SR scales are on a 0.1 grid
    return torch.tensor([[s, s]])


def _has_meta_upscale(net: nn.Module) -> bool:
    p2w = getattr(net, "P2W", None)
    return p2w is not None and isinstance(getattr(p2w, "meta_block", None), nn.Sequential)


# ---------------------------------------------------------------------------
# the replacement multi-scale data loader


class _ScaledView(torch.utils.data.Dataset):
    """Dataset view indexed by ``(idx_to_set, idx_reported, i)``: sets the scale, reads sample i.

    Attribute reads and writes go to the wrapped dataset, so the trainer's
    ``loader.dataset.set_scale(...)`` / ``.first_epoch = ...`` / ``.benchmark`` work.
    Works in worker processes too: the scale travels inside the key.
    """

    def __init__(self, dataset):
        object.__setattr__(self, "_anysr_inner", dataset)

    def __getitem__(self, key):
        inner = self._anysr_inner
        idx_set, idx_reported, i = key
        if idx_set is not None:
            inner.set_scale(idx_set)
        return inner[i], idx_reported

    def __len__(self):
        return len(self._anysr_inner)

    def __getattr__(self, name):
        return getattr(object.__getattribute__(self, "_anysr_inner"), name)

    def __setattr__(self, name, value):
        setattr(self._anysr_inner, name, value)


class _ScaleBatchSampler:
    """Batches of keys ``(idx_to_set, idx_reported, i)``: one scale per batch."""

    def __init__(self, choose, sampler, batch_size, drop_last):
        self.choose, self.sampler, self.batch_size, self.drop_last = choose, sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield self._tag(batch)
                batch = []
        if batch and not self.drop_last:
            yield self._tag(batch)

    def _tag(self, batch):
        idx_set, idx_reported = self.choose()
        return [(idx_set, idx_reported, i) for i in batch]

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


class _AppendScale:
    """collate_fn: upstream's collate of the samples, then the batch's int ``idx_scale``."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, tagged):
        out = self.collate([sample for sample, _ in tagged])
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        out.append(int(tagged[0][1]))
        return out


def make_msdataloader_module(flavor: str, module_name: str) -> types.ModuleType:
    """A module exposing a working ``MSDataLoader`` for ``flavor`` in {"metasr", "arbsr"}.

    Same constructor as upstream: ``MSDataLoader(args, dataset, batch_size=1, shuffle=False,
    sampler=None, batch_sampler=None, collate_fn=default_collate, pin_memory=False,
    drop_last=False, timeout=0, worker_init_fn=None)``; ``num_workers = args.n_threads``.
    Batches are ``[lr, hr, filenames, idx_scale]`` (idx_scale a python int), as upstream.
    """
    from torch.utils.data import DataLoader, RandomSampler, SequentialSampler
    from torch.utils.data.dataloader import default_collate

    class MSDataLoader(DataLoader):
        __module__ = module_name

        def __init__(self, args, dataset, batch_size=1, shuffle=False, sampler=None, batch_sampler=None,
                     collate_fn=default_collate, pin_memory=False, drop_last=False, timeout=0,
                     worker_init_fn=None):
            if batch_sampler is not None:
                raise AdapterError("the AnySR MSDataLoader draws one scale per batch itself; "
                                   "a custom batch_sampler is not supported")
            self.scale = list(args.scale)
            scale2 = getattr(args, "scale2", None)
            self.scale2 = list(scale2) if scale2 else list(self.scale)
            self.flavor = flavor
            view = _ScaledView(dataset)
            if sampler is None:
                sampler = RandomSampler(view) if shuffle else SequentialSampler(view)
            super().__init__(view, batch_sampler=_ScaleBatchSampler(self.choose_scale, sampler, batch_size,
                                                                    drop_last),
                             num_workers=int(getattr(args, "n_threads", 0) or 0),
                             collate_fn=_AppendScale(collate_fn),
                             pin_memory=bool(pin_memory) and torch.cuda.is_available(), timeout=timeout,
                             worker_init_fn=worker_init_fn)

        def integer_scale_indices(self):
            return [i for i, (a, b) in enumerate(zip(self.scale, self.scale2))
                    if a == b and float(a).is_integer()]

        def choose_scale(self):
            """(index to set on the dataset or None, index reported in the batch): the per-batch
            scale choice of upstream's worker loop, made when the batch is formed."""
            ds = self.dataset
            if len(self.scale) > 1 and bool(getattr(ds, "train", False)):
                if self.flavor == "arbsr" and getattr(ds, "first_epoch", False):
                    # upstream: a random one of [9, 19, 29] (x2, x3, x4 of the default 60-pair list),
                    # reporting idx 0; here every integer symmetric scale of args.scale: the same set
                    # for the default list and no IndexError for a custom one
                    ints = self.integer_scale_indices() or list(range(len(self.scale)))
                    return ints[random.randrange(0, len(ints))], 0
                idx = random.randrange(0, len(self.scale))
                return idx, idx
            # evaluation (or one scale): the dataset keeps the scale the trainer set
            return None, 0

    module = types.ModuleType(module_name, f"AnySR replacement of the upstream {module_name} "
                                           "(the original needs PyTorch <= 1.1)")
    module.MSDataLoader = MSDataLoader
    module.default_collate = default_collate
    module.__file__ = __file__
    return module


# ---------------------------------------------------------------------------
# compatibility shims


def _headless_matplotlib(ctx) -> None:
    previous_env = os.environ.get("MPLBACKEND")
    os.environ["MPLBACKEND"] = "Agg"

    def restore_env():
        if previous_env is None:
            os.environ.pop("MPLBACKEND", None)
        else:
            os.environ["MPLBACKEND"] = previous_env

    ctx.cleanups.append(restore_env)
    try:
        import matplotlib
    except ImportError:
        return
    original_use = matplotlib.use

    @functools.wraps(original_use)
    def use(backend, *args, **kwargs):
        if str(backend).lower() not in ("agg", "pdf", "ps", "svg", "cairo", "pgf", "template",
                                       "module://matplotlib_inline.backend_inline"):
            _log(f"matplotlib.use({backend!r}) ignored: running headless with the Agg backend")
            return None
        return original_use(backend, *args, **kwargs)

    matplotlib.use = use
    ctx.cleanups.append(lambda: setattr(matplotlib, "use", original_use))


def _imsave_shim(ctx) -> None:
    try:
        import scipy.misc as misc
    except ImportError:
        return
    if hasattr(misc, "imsave"):
        return

    def imsave(name, arr, format=None):
        import numpy as np
        try:
            import imageio.v2 as imageio

            imageio.imwrite(name, np.asarray(arr), format=format)
        except ImportError:
            from PIL import Image

            Image.fromarray(np.asarray(arr)).save(name, format=format)

    misc.imsave = imsave
    ctx.cleanups.append(lambda: delattr(misc, "imsave") if getattr(misc, "imsave", None) is imsave else None)


def _np_load_shim(ctx) -> None:
    """Meta-SR ``--ext sep`` reads its own pickled image caches ``<dir>/bin/**.pt`` with np.load."""
    import numpy as np

    original = np.load

    @functools.wraps(original)
    def load(file, *args, **kwargs):
        path = os.fspath(file) if isinstance(file, (str, os.PathLike)) else ""
        if path.endswith(".pt") and f"{os.sep}bin{os.sep}" in os.path.abspath(path) and "allow_pickle" not in kwargs:
            kwargs["allow_pickle"] = True
        return original(file, *args, **kwargs)

    np.load = load
    ctx.cleanups.append(lambda: setattr(np, "load", original))


def _seed_module(ctx, name: str, module: types.ModuleType) -> None:
    previous = sys.modules.get(name)
    sys.modules[name] = module

    def restore():
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous

    ctx.cleanups.append(restore)


# ---------------------------------------------------------------------------
# converting the net inside model.Model


def _resolve_config(ctx) -> AnySRConfig:
    """``--anysr-config`` (or the paper's settings) with the command line's ``--scale-from`` / ``--lam``."""
    cfg = getattr(ctx, "anysr_config", None)
    if cfg is None:
        _log("no --anysr-config: using the paper's settings (AnySRConfig())")
        cfg = AnySRConfig()
    elif isinstance(cfg, (str, os.PathLike)):
        cfg = AnySRConfig.from_yaml(Path(cfg))
    elif isinstance(cfg, dict):
        cfg = AnySRConfig.from_dict(cfg)
    elif not isinstance(cfg, AnySRConfig):
        raise ConfigError(f"ctx.anysr_config must be an AnySRConfig, got {type(cfg).__name__}")
    overrides = getattr(ctx, "overrides", None)
    return cfg.replace(**overrides) if overrides else cfg


def _fixed_width(ctx):
    """``anysr launch --width W`` (the one way to fix the width, for every method)."""
    return getattr(ctx, "width", None)


def _reporting_load_state_dict(self, state_dict, strict=True, *args, **kwargs):
    """Instance-bound ``load_state_dict`` that says what happened to the anysr_* keys."""
    own = self.state_dict()
    kept = [k for k in own if "anysr_" in k and (k not in state_dict or (
        isinstance(state_dict[k], torch.Tensor) and state_dict[k].data_ptr() == own[k].data_ptr()))]
    result = type(self).load_state_dict(self, state_dict, strict, *args, **kwargs)
    n_gates = sum(1 for k in own if "anysr_" in k)
    missing = [k for k in getattr(result, "missing_keys", []) if "anysr_" not in k]
    unexpected = list(getattr(result, "unexpected_keys", []))
    if kept:
        identity = _state_of(self).config.gate == "identity"
        _log(f"checkpoint has no AnySR gates ({len(kept)}/{n_gates} anysr_* tensors absent): an upstream "
             "checkpoint; the gates keep their initialisation"
             + (" (identity: at full width the net computes the upstream function)" if identity else ""))
    else:
        _log(f"checkpoint carries all {n_gates} anysr_* gate tensors: an AnySR checkpoint")
    if missing or unexpected:
        import warnings

        shown = ", ".join((missing + unexpected)[:6])
        warnings.warn(f"AnySR: the upstream loader (strict=False) skipped {len(missing)} missing and "
                      f"{len(unexpected)} unexpected key(s), e.g. {shown}: the checkpoint does not fit this net",
                      AnySRWarning, stacklevel=2)
    return result


_reporting_load_state_dict.__name__ = "load_state_dict"


def _report_load(net: nn.Module) -> None:
    net.__dict__["load_state_dict"] = types.MethodType(_reporting_load_state_dict, net)


def _state_of(net):
    return get_state(net)


def convert_upstream_net(net: nn.Module, adapter, config: AnySRConfig, contract: str, width=None) -> nn.Module:
    """anysrify an upstream Meta-SR / ArbSR net in place and hook its ``set_scale``."""
    net = unwrap(net)
    if is_anysr(net):
        return net
    if not adapter.detect(net):
        raise AdapterError(f"{type(net).__name__} is not a {adapter.name} net ({adapter.describe_expected()}); "
                           f"pass the right --model to main.py or use the matching `anysr launch` method")
    wrap_set_scale(net, contract)
    anysrify(net, config, adapter=adapter)
    _report_load(net)
    report = inspect_targets(net)
    kinds = sorted({t.upstream_type for t in report.targets})
    n_gate = sum(p.numel() for n, p in net.named_parameters() if "anysr_" in n)
    _log(f"converted {type(net).__name__}: {len(report.targets)} {'/'.join(kinds)} blocks, "
         f"widths {list(config.widths)}, gate={config.gate}, {n_gate:,} gate parameters; {report.scale_source}")
    if width is not None:
        set_width(net, width)
        _log(f"fixed sub-network width {width:g} (every scale)")
    return net


def _patch_model_class(ctx, adapter, contract: str) -> None:
    """Make ``model.Model`` anysrify its net right before it loads a checkpoint."""
    model_pkg = import_repo_module(ctx, "model")  # a missing dependency of the repo: one line, by the launcher
    Model = getattr(model_pkg, "Model", None)
    if Model is None or not hasattr(Model, "load"):
        raise AdapterError(f"{getattr(model_pkg, '__file__', 'model')} defines no Model with a load() method; "
                           f"is {ctx.repo} a {adapter.name} checkout?")
    config = _resolve_config(ctx)
    width = _fixed_width(ctx)
    if width is not None:
        config.check_width(width)
    original_load, original_init = Model.load, Model.__init__

    def convert(wrapper):
        net = wrapper.get_model() if hasattr(wrapper, "get_model") else unwrap(wrapper.model)
        fresh = not is_anysr(net)
        net = convert_upstream_net(net, adapter, config, contract, width)
        if fresh:  # evaluation calls say which width and MACs each test scale runs at
            script_scope(ctx).enter_context(report_test_scales(ctx, net))
        return net

    @functools.wraps(original_load)
    def load(self, *args, **kwargs):
        convert(self)
        return original_load(self, *args, **kwargs)

    init_from = getattr(ctx, "init_from", None)

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        net = convert(self)  # no-op when load() already converted it
        if init_from is not None:  # `anysr launch --init-from PTH`: vanilla upstream weights, checked strictly

            missing, _ = load_upstream_checkpoint(net, init_from)
            _log(f"initialised from {init_from} ({len(missing)} anysr_* tensors keep their initialisation)")

    Model.load, Model.__init__ = load, __init__

    def restore():
        Model.load, Model.__init__ = original_load, original_init

    ctx.cleanups.append(restore)


def check_cpu_flag(ctx, adapter) -> None:
    """``anysr launch --cpu`` only makes AnySR's side CPU-safe: Meta-SR / ArbSR pick their
    device from their own ``--cpu`` flag (``'cuda'`` otherwise), so say so before they fail
    with a driver error."""
    if not getattr(ctx, "cpu", False):
        return
    argv = [str(a) for a in getattr(ctx, "argv", [])]
    if any(a == "--cpu" or a.startswith("--cpu=") for a in argv):
        return
    flag = "--cpu True" if adapter.name == "arbsr" else "--cpu"
    raise AdapterError(f"--cpu was given to the launcher but not to {Path(str(ctx.script)).name}: "
                       f"{adapter.name} picks its device from its own flag; add `{flag}` after `--` "
                       f"(e.g. anysr launch {adapter.name} --cpu -- main.py ... {flag})")


def install_edsr_family(ctx, adapter, loader_module: str, contract: str, flavor: str) -> None:
    check_cpu_flag(ctx, adapter)
    _headless_matplotlib(ctx)
    _imsave_shim(ctx)
    if flavor == "metasr":
        _np_load_shim(ctx)
    _seed_module(ctx, loader_module, make_msdataloader_module(flavor, loader_module))
    _patch_model_class(ctx, adapter, contract)


# ---------------------------------------------------------------------------
# config template


def write_template(adapter, out, anysr_config, upstream, model_name: str, extra_args: str,
                   repo_hint: str, options: dict, notes: tuple = ()) -> str:
    import yaml


    cfg = anysr_config if anysr_config is not None else AnySRConfig()
    if isinstance(cfg, dict):
        cfg = AnySRConfig.from_dict(cfg)
    unknown = sorted(set(options) - {"model", "patch_size", "epochs", "lr", "lr_decay", "save", "init_from",
                                     "paper_schedule"})
    if unknown:
        raise ConfigError(f"unknown option(s) for {adapter.name} convert_config: {unknown}")
    recipe = dict(PAPER_RECIPE)
    recipe.update({k: v for k, v in options.items() if k in recipe})
    model_name = options.get("model", model_name)
    save = options.get("save", f"anysr_{model_name.lower()}")
    bounds = list(cfg.scale_bounds)
    groups = {}
    for i, w in enumerate(cfg.widths):
        hi = bounds[i] if i < len(bounds) else None
        groups[f"S{i + 1}"] = {"max(s_h, s_w) up to": hi if hi is not None else "any larger scale", "width": w}
    upstream_args = ""
    if upstream:
        text = Path(upstream).read_text()
        for line in text.splitlines():
            line = line.strip()
            if "main.py" in line and not line.startswith("#"):
                upstream_args = line.split("main.py", 1)[1].strip()
                break
        if not upstream_args:
            raise ConfigError(f"{upstream}: no `main.py ...` command line found to carry over")
    init = options.get("init_from")
    if init:
        # vanilla upstream weights: the repo's own --pre_train (resume 0) path loads them; the
        # launcher reports that the anysr_* gates were absent and keep their identity init
        extra_args = " ".join(a for a in extra_args.split() if a not in ("PRETRAINED.pt",))
        extra_args = extra_args.replace("--pre_train model/RCAN_BIX4.pt", "").replace("--pre_train", "")
        extra_args = f"{extra_args} --pre_train {init}"
    args = (f"--model {model_name} --patch_size {recipe['patch_size']} --lr {recipe['lr']:g} "
            f"--lr_decay {recipe['lr_decay']} --epochs {recipe['epochs']} --save {save} {extra_args}")
    args = " ".join(args.split())
    if upstream_args:
        args = f"{upstream_args} {args}"  # argparse: the later flags (the paper's) win
    config_name = Path(out).name
    doc = {
        "anysr": cfg.to_dict(),
        "upstream": {
            "method": adapter.name,
            "repo": repo_hint,
            "recipe": recipe,
            "scale_groups": groups,
            "lam_default": {"EDSR/RCAN blocks": 4, "RDN blocks": 8, "note": "anysr.lam: null = per block family"},
            "notes": list(notes),
            "launch": f"anysr launch {adapter.name} --anysr-config {config_name} -- main.py {args}",
        },
    }
    header = (f"# AnySR settings for {adapter.name} ({repo_hint}); written by `anysr convert-config --method "
              f"{adapter.name}`.\n# The `anysr:` section is read by `anysr launch --anysr-config`; `upstream:` records "
              "the paper's fine-tuning recipe\n# (Sec. IV-A: Adam, L1, lr 1e-5 halved every 200 epochs, 500 epochs, "
              "LR patch 50) as main.py flags.\n")
    atomic_write_text(out, header + yaml.safe_dump(doc, sort_keys=False))
    return str(out)


# ---------------------------------------------------------------------------


class MetaSRAdapter(MethodAdapter):
    name = "metasr"
    upstream_names = ("metardn", "metaedsr", "metarcan")

    def describe_expected(self) -> str:
        return "expected a net with P2W.meta_block (Pos2Weight) and set_scale(idx)"

    def detect(self, model: nn.Module) -> bool:
        net = unwrap(model)
        return _has_meta_upscale(net) and callable(getattr(net, "set_scale", None))

    def block_root(self, model: nn.Module) -> nn.Module:
        # the whole net: the blocks sit under RDBs (ModuleList, indexed in forward) or body;
        # P2W holds no block, and the root hook is the one that sees every call
        return model

    def prepare(self, model: nn.Module) -> nn.Module:
        """Hook ``set_scale`` so the scale reaches the blocks (done by the launcher; call it
        yourself when you drive a Meta-SR net outside ``anysr launch``)."""
        return wrap_set_scale(model, "index")

    def scale_source(self, model: nn.Module):
        return AdapterSource(self.name, "scale from set_scale(idx_scale) (an index into args.scale; "
                             "else pos_mat's 1/s column)", kind="set_scale", contract="index")

    def scale_from_call(self, module: nn.Module, args: tuple, kwargs: dict):
        scale = recorded_scale(module)
        if scale is None:
            # no attribute fallback: MetaRDN starts with scale = 1 before any set_scale
            scale = scale_from_pos_mat(find_tensor_arg(args, kwargs, 1, "pos_mat"))
        return per_sample(scale, args)

    def install(self, ctx) -> None:
        install_edsr_family(ctx, self, loader_module="dataloader", contract="index", flavor="metasr")

    def convert_config(self, upstream, out, anysr_config, **options) -> str:
        return write_template(self, out, anysr_config, upstream, "metardn",
                              "--scale '' --n_GPUs 1 --ext img --resume 0 --pre_train PRETRAINED.pt",
                              "XuecaiHu/Meta-SR-Pytorch", options, notes=(
                                  "lr: Meta-SR steps its StepLR before the first epoch, so the printed rate "
                                  "is one step ahead (upstream quirk)",
                                  "--epochs N trains N epochs; each writes experiment/<save>/model/model_N.pt "
                                  "(bare state dict with the anysr_* gate tensors)",
                                  "evaluate with the same launcher: ... -- main.py ... --test_only --resume N "
                                  "(anysr launch metasr --width 0.5|0.7|0.9|1.0 ... fixes the sub-network)"))


METASR = register_adapter(MetaSRAdapter(), "metasr", "meta-sr", "metardn", "metaedsr", "metarcan")

__all__ = ["MetaSRAdapter", "METASR", "wrap_set_scale", "scale_from_pos_mat", "make_msdataloader_module",
           "install_edsr_family", "convert_upstream_net"]
