"""Adapter for the LIIF family: LIIF ``liif``, LTE ``lte`` / ``lte-fast`` and the Meta-SR
head ``metasr`` that LIIF and LTE ship in ``models/misc.py``.

What differs from the core's generic handling (from the upstream repositories' documented code):

* **Detection** by class name and structure, never ``isinstance`` (each checkout
  defines its own classes): an ``encoder`` sub-module plus ``gen_feat`` and
  ``query_rgb`` methods.  SRNO has the same shape and is left to ``adapters/srno.py``.
* **Blocks** live in ``model.encoder`` (EDSR-baseline, EDSR, RDN, RCAN).
* **Scale per sample from the call** ``forward(inp, coord, cell)``:
  ``s_h = 2 / (cell_h * H_lr)``, ``s_w = 2 / (cell_w * W_lr)`` with ``H_lr, W_lr =
  inp.shape[-2:]``, for ``cell`` of shape ``(B, Q, 2)`` (LIIF, LTE, Meta-SR; constant
  over Q, the first query is read) and ``(B, 2)`` (LTE-fast, SRNO).  During training
  this is the *effective* scale ``round(48 s) / 48`` the wrapper really produced.
* **gen_feat-first paths** (``batched_predict`` in every ``test.py``, the demos, SRNO's
  ``eval_bsize`` validation) run the encoder before any ``cell`` exists.  Two answers:
  ``anysr_plugin.use_scale(model, s)`` around the call (what the launcher does to the
  imported ``test.batched_predict``), and ``defer_features`` (``runtime/deferral.py``,
  by structure, not by method name), which makes the feature method wait for the first
  call that carries a ``cell``.  The launcher keeps it on for every model it builds while
  the script runs, so a ``test.py`` / ``demo.py`` run as ``__main__`` (whose functions
  cannot be patched from outside) gets the right sub-network too.
* **Test-time cell clipping.**  LTE's ``test.py`` (with ``eval_bsize``), LTE/SRNO
  ``demo.py`` and SRNO ``test.py --mcell`` multiply the cell by ``max(s / 4, 1)``, so
  the scale read from a clipped cell is ``min(s, 4)``.  With the paper's scale groups
  every scale above 3.25 already runs the full network, so the **width is unaffected**;
  the gates see the scale pair ``(4, 4)``, i.e. they are treated like the decoder,
  which is also told "x4" — the upstream's own extrapolation rule, and the largest
  scale the gates were trained on.  LIIF does no clipping (the gates then see the true
  ``s``, e.g. 12 at x12; such out-of-range scales always run the full network).
"""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from torch import nn

from ..glue.checkout import API_PATH, checkout_root, training_script
from ..glue.upstream import build_for_inspection, repo_registry
from ..runtime.checkpoint import atomic_write_text, extract_state_dict, load_file
from ..runtime.config import AnySRConfig
from ..runtime.control import unwrap, use_scale
from ..runtime.deferral import defer_features  # noqa: F401  (re-exported)
from ..runtime.errors import AnySRError, ConfigError
from ..runtime.gate import describe_chunks
from ..runtime.injection import inspect_targets, is_anysr
from ..runtime.methods import MethodAdapter, find_tensor_arg, register_adapter, sizes_scale
from ..runtime.safe_yaml import read_yaml_file
from ..runtime.scale_source import AdapterSource, scale_from_cell
from ..tools.coords import cell_for, make_coord
from ..tools.reference.registry import ENCODER_BLOCKS, ENCODER_NAMES, encoder_channels
from .registry_hooks import build_anysr_model, install_registry_hooks

#: upstream model-registry names this adapter serves
LIIF_NAMES = ("liif", "lte", "lte-fast", "metasr")
#: SR-wrapper class names of LIIF / LTE / LTE+ / Meta-SR-in-LIIF
LIIF_CLASS_NAMES = ("LIIF", "LTE", "LTEP", "MetaSR")


def _hr_side(grid: "int | None", from_cell: float) -> float:
    """One axis of a call's HR size: the coord grid's when it is the larger, else the cell's
    (as an int when it is one)."""
    if grid is not None and grid >= from_cell - 1e-3:
        return grid
    return float(round(from_cell)) if abs(from_cell - round(from_cell)) < 1e-3 else from_cell


def looks_implicit(model: nn.Module) -> bool:
    """An implicit-decoder SR wrapper: ``encoder`` module + ``gen_feat`` + ``query_rgb``."""
    return (isinstance(getattr(model, "encoder", None), nn.Module)
            and callable(getattr(model, "gen_feat", None))
            and callable(getattr(model, "query_rgb", None)))


def looks_srno(model: nn.Module) -> bool:
    name = type(model).__name__.lower()
    return "srno" in name or "sronet" in name or (
        looks_implicit(model) and hasattr(model, "conv00") and hasattr(model, "conv0"))


class LIIFAdapter(MethodAdapter):
    """LIIF / LTE / LTE-fast / Meta-SR-in-LIIF (see the module docstring)."""

    name = "liif"
    upstream_names = LIIF_NAMES
    class_names = LIIF_CLASS_NAMES
    #: default training script of the upstream repo (used in messages and recipes)
    train_script = "train_liif.py"
    #: encoder registry names accepted by convert-config
    encoder_names = ENCODER_NAMES
    #: whether the upstream trainer starts fresh when `resume:` names a missing file (LIIF loads it whenever
    #: it is set); used by convert-config only when the checkout's own script cannot be read
    fresh_on_missing_resume = False
    repository = "LIIF (yinboc/liif) or LTE"
    builds_specs = True
    train_patch = 48
    #: wrapper classes whose trainer call takes an HR grid ``coord`` (B, H, W, 2): LTE+ (``LTEP``)
    grid_class_names = ("LTEP",)

    def detect(self, model: nn.Module) -> bool:
        if looks_srno(model):
            return False
        return type(model).__name__ in self.class_names or looks_implicit(model)

    def block_root(self, model: nn.Module) -> nn.Module:
        enc = getattr(model, "encoder", None)
        return enc if isinstance(enc, nn.Module) else model

    def scale_source(self, model: nn.Module):
        """By structure (``cell`` in the forward signature); for a model this adapter recognises
        whose forward does not show it (a wrapper without a forward of its own), the family's
        contract ``forward(inp, coord, cell)`` adds the knowledge."""
        source = super().scale_source(model)
        if source is None:
            source = AdapterSource(self.name, "scale from forward argument `cell` (the LIIF-family contract "
                                   "forward(inp, coord, cell))", kind="cell")
        return source

    def scale_from_call(self, module: nn.Module, args: tuple, kwargs: dict):
        inp = find_tensor_arg(args, kwargs, 0, "inp")
        cell = find_tensor_arg(args, kwargs, 2, "cell")
        if inp is None or cell is None:
            return None
        return scale_from_cell(inp, cell)

    def query_layout(self, model: nn.Module) -> str:
        """LIIF / LTE / Meta-SR query flattened HR pixels, ``coord`` (B, Q, 2); LTE+ takes an HR grid."""
        return "grid" if type(model).__name__ in self.grid_class_names else "points"

    def call_sizes(self, args: tuple, kwargs: dict):
        """LR size from ``inp``; HR size per axis from ``coord`` when it is the larger (a cell clipped
        by ``max(s / 4, 1)`` under-states it; a training ``coord`` is a subset of the LR-sized crop),
        else from the cell (``2 / cell``).  ``coord`` (B, H, W, 2) gives both axes; (B, Q, 2) with
        ``Q = H * W`` gives them with the aspect the cell shows (a clip scales both axes evenly)."""
        inp, coord, cell = (find_tensor_arg(args, kwargs, i, n) for i, n in enumerate(("inp", "coord", "cell")))
        if not all(isinstance(t, torch.Tensor) for t in (inp, coord, cell)) or inp.dim() != 4 \
                or coord.shape[0] != inp.shape[0] or cell.shape[0] != inp.shape[0] or cell.shape[-1] != 2:
            return None
        lr = (int(inp.shape[-2]), int(inp.shape[-1]))
        c = cell.detach().double().reshape(cell.shape[0], -1, 2)[:, 0, :].cpu()
        if not bool((c > 0).all()):
            return None
        out = []
        for b in range(inp.shape[0]):
            from_cell = (2.0 / float(c[b, 0]), 2.0 / float(c[b, 1]))
            grid = (None, None)
            if coord.dim() == 4:
                grid = (int(coord.shape[1]), int(coord.shape[2]))
            elif coord.dim() == 3:
                q = int(coord.shape[1])
                h = round(math.sqrt(q * float(c[b, 1]) / float(c[b, 0])))
                if h > 0 and q % h == 0:
                    grid = (h, q // h)
            out.append((lr, tuple(_hr_side(g, f) for g, f in zip(grid, from_cell))))
        return out

    def slim_decoder(self, model: nn.Module):
        return ("mlp", "imnet") if isinstance(getattr(model, "imnet", None), nn.Module) else None

    # -- the tools' calls ------------------------------------------------------------
    #: LIIF-family data convention: images in [0, 1] are fed as (x - 0.5) / 0.5
    norm = (0.5, 0.5)

    def query_grid(self, hr_size, batch: int, like: torch.Tensor) -> tuple:
        """``(coord, cell)`` for every HR pixel: LIIF flattens the queries, (B, H*W, 2) each."""
        H, W = int(hr_size[0]), int(hr_size[1])
        coord = make_coord((H, W)).to(like).unsqueeze(0).expand(batch, H * W, 2)
        return coord, cell_for((H, W), batch, H * W).to(like)

    def sr_inputs(self, model: nn.Module, inp: torch.Tensor, hr_size) -> tuple:
        return (inp, *self.query_grid(hr_size, inp.shape[0], inp)), {}

    def query_image(self, model: nn.Module, coord, cell, hr_size, chunk: int) -> torch.Tensor:
        """LIIF's ``batched_predict`` after ``gen_feat``: queries in chunks, back to (B, C, H, W)."""
        H, W = int(hr_size[0]), int(hr_size[1])
        out = torch.cat([model.query_rgb(coord[:, q:q + chunk], cell[:, q:q + chunk])
                         for q in range(0, H * W, chunk)], dim=1)
        return out.permute(0, 2, 1).reshape(out.shape[0], out.shape[2], H, W)

    def super_resolve(self, model: nn.Module, lr: torch.Tensor, hr_size, scale=None,
                      chunk: int = 30000) -> torch.Tensor:
        m = unwrap(model)
        mean, std = self.norm
        inp = (lr - mean) / std
        with contextlib.ExitStack() as stack, torch.no_grad():
            if is_anysr(m):  # gen_feat runs before any cell is visible: give the gates the scale
                stack.enter_context(use_scale(m, scale if scale is not None else sizes_scale(lr, hr_size)))
            m.gen_feat(inp)
            coord, cell = self.query_grid(hr_size, inp.shape[0], inp)
            out = self.query_image(m, coord, cell, hr_size, max(1, int(chunk)))
        for attr in ("feat", "inp"):  # do not keep the last image's features alive
            if isinstance(m.__dict__.get(attr), torch.Tensor):
                m.__dict__[attr] = None
        return (out * std + mean).clamp(0, 1)

    # -- launcher and --repo tools -----------------------------------------------
    def install(self, ctx) -> None:
        install_registry_hooks(ctx, self)

    def build_spec(self, ctx, make, spec, args=None, load_sd: bool = False, top_level: bool = True):
        return build_anysr_model(ctx, self, make, spec, args=args, load_sd=load_sd, top_level=top_level)

    # -- config -----------------------------------------------------------------
    def convert_config(self, upstream, out, anysr_config, **options) -> str:
        return convert_upstream_config(self, upstream, out, anysr_config, **options)


# ---------------------------------------------------------------------------
# config mapping (anysr convert-config --method liif|lte|srno)

#: the paper's fine-tune schedule (Sec. IV-A): Adam, lr 1e-5 halved every 200 epochs, 500 epochs
PAPER_SCHEDULE = {"lr": 1.0e-5, "epoch_max": 500, "multi_step_lr": {"milestones": [200, 400], "gamma": 0.5}}


def convert_upstream_config(adapter, upstream, out, anysr_config=None, init_from=None, paper_schedule=False,
                            repo=None, **options) -> str:
    """Write `upstream` (an upstream training YAML) to `out` with the AnySR entries.

    * ``model.anysr``: the AnySRConfig dict (a top-level key of the model spec, which the
      upstream ``make`` ignores and every saved checkpoint carries);
    * ``model.anysr_init_from``: the vanilla pretrained checkpoint (``init_from``), loaded
      by the launcher into freshly built models;
    * ``paper_schedule``: lr 1e-5, 500 epochs, ``multi_step_lr`` milestones [200, 400],
      gamma 0.5 (a ``warmup_step_lr`` entry is dropped: ``multi_step_lr`` wins upstream);
    * ``resume:``: see :func:`_convert_resume` (a vanilla checkpoint becomes ``anysr_init_from``);
    * the header names the training script of the checkout (``repo``, else the one found
      above the config) or says in words which to run.

    Everything is validated first; errors name the offending key.  Returns `out`.
    """
    import yaml


    if options:
        raise ConfigError(f"convert-config --method {adapter.name}: unknown option(s) {sorted(options)}; "
                          "known: init_from, paper_schedule, repo")
    if upstream is None:
        raise ConfigError(f"convert-config --method {adapter.name} needs the upstream training YAML "
                          "(e.g. configs/train-div2k/train_edsr-baseline-liif.yaml)")
    path = Path(upstream)
    if not path.is_file():
        raise ConfigError(f"upstream config {path} does not exist")
    data = _read_upstream_yaml(path)
    model = data["model"]
    name = model.get("name")
    known_elsewhere = {"sronet": "srno", **{n: "liif" for n in LIIF_NAMES}}
    if name not in adapter.upstream_names and name in known_elsewhere:
        raise ConfigError(f"{path}: model.name is {name!r}; --method {adapter.name} converts "
                          f"{', '.join(adapter.upstream_names)} (and renamed models by structure); "
                          f"use --method {known_elsewhere[name]}")
    margs = model.get("args")
    if not isinstance(margs, dict):
        raise ConfigError(f"{path}: model.args is missing or not a mapping")
    if "anysr" in margs:
        raise ConfigError(f"{path}: model.args.anysr must not exist (the upstream constructor would get it "
                          "as a keyword); the AnySR entry belongs at model.anysr")
    cfg = anysr_config if anysr_config is not None else AnySRConfig()
    if not isinstance(cfg, AnySRConfig):
        cfg = AnySRConfig.from_dict(cfg)
    enc = margs.get("encoder_spec")
    repo = Path(repo).resolve() if repo is not None else None
    root = checkout_root(repo, path)
    if repo is not None:  # build it with the repo's registry (meta device when possible): what will be converted
        report, built = inspect_spec(repo, {"name": name, "args": margs}, cfg)
        if not report.targets:
            raise ConfigError(f"{path}: model {name!r} built with {repo}'s registry holds no convertible block "
                              f"(module types: {', '.join(sorted(report.module_types)[:12])}); AnySR would "
                              f"change nothing. {report.why_nothing()}")
        if report.skipped:
            details = "; ".join(f"{k.name} ({k.upstream_type}): {k.reason}" for k in report.skipped[:4])
            raise ConfigError(f"{path}: model {name!r}: {len(report.skipped)} block-like module(s) cannot be "
                              f"converted: {details}")
        if report.scale_source.startswith("no scale source"):
            raise ConfigError(f"{path}: model {name!r} built with {repo}'s registry: {report.scale_source} "
                              "(its forward has no `cell` or `scale` argument and it has no set_scale); "
                              "`anysr launch` would stop: pass --scale-from MODULE:FUNCTION (a function of the "
                              "repository, or of an --import file, that returns each call's (B, 2) scale)")
        print(f"convert-config: model {name!r} built {built} with {repo}'s registry: {report.summary()}")
        for t in report.targets:
            print(f"  {t.name} ({t.upstream_type}, {t.family}, C={t.channels}, lambda={t.lam})")
    else:
        if not isinstance(enc, dict):
            raise ConfigError(f"{path}: model.args.encoder_spec is missing or not a mapping (a model without an "
                              "encoder spec: pass --repo DIR to build it and list its convertible blocks)")
        enc_name, enc_args = enc.get("name"), enc.get("args") or {}
        if enc_name not in adapter.encoder_names:
            raise ConfigError(f"{path}: model.args.encoder_spec.name is {enc_name!r}, not a known encoder "
                              f"({', '.join(adapter.encoder_names)}); pass --repo DIR (the upstream repository) "
                              "to build the model with its registry and list what will be converted")
        if not isinstance(enc_args, dict) or enc_args.get("no_upsampling") is not True:
            raise ConfigError(f"{path}: model.args.encoder_spec.args.no_upsampling must be true (the encoder runs "
                              "at LR resolution in every LIIF/LTE/SRNO arbitrary-scale config)")
        channels = encoder_channels(enc_name, enc_args)
        lam = cfg.lam_for(ENCODER_BLOCKS[enc_name])
        if cfg.interweave == "interleave" and channels % lam:
            print(f"convert-config: {enc_name} has {channels} gated channels: {describe_chunks(channels, lam)}")
        if name not in adapter.upstream_names:
            print(f"convert-config: model {name!r} is not one of {', '.join(adapter.upstream_names)}; accepted by "
                  f"structure: its encoder {enc_name!r} has convertible blocks (pass --repo DIR to list them)")
    enc_name = enc.get("name") if isinstance(enc, dict) else None
    script, found = training_script(root, adapter.train_script)
    init_from, label = _convert_resume(data, out, root, script, init_from, adapter)
    model["anysr"] = cfg.to_dict()
    if init_from:
        init = Path(init_from)
        if not init.is_file():
            raise ConfigError(f"--init-from {init}: file does not exist (model.anysr_init_from must name the "
                              "vanilla pretrained checkpoint)")
        ckpt = load_file(init)
        sd = extract_state_dict(ckpt)
        spec = ckpt.get("model") if isinstance(ckpt, dict) else None
        if isinstance(spec, dict) and spec.get("name") not in (None, name):
            raise ConfigError(f"{label} {init}: the checkpoint's model.name is {spec.get('name')!r}, the "
                              f"config's is {name!r}")
        ck_enc = ((spec or {}).get("args") or {}).get("encoder_spec", {}) if isinstance(spec, dict) else {}
        if enc_name is not None and isinstance(ck_enc, dict) and ck_enc.get("name") not in (None, enc_name):
            raise ConfigError(f"{label} {init}: the checkpoint's encoder is {ck_enc.get('name')!r}, the "
                              f"config's model.args.encoder_spec.name is {enc_name!r}")
        if any("anysr_" in k for k in sd):
            raise ConfigError(f"{label} {init}: already holds AnySR weights; to continue an AnySR run use the "
                              "upstream `resume` key instead")
        model["anysr_init_from"] = str(init.resolve())
    if paper_schedule:
        opt = data.setdefault("optimizer", {"name": "adam", "args": {}})
        if not isinstance(opt, dict):
            raise ConfigError(f"{path}: optimizer must be a mapping")
        opt.setdefault("name", "adam")
        opt.setdefault("args", {})["lr"] = PAPER_SCHEDULE["lr"]
        data["epoch_max"] = PAPER_SCHEDULE["epoch_max"]
        data["multi_step_lr"] = dict(PAPER_SCHEDULE["multi_step_lr"])
        data.pop("warmup_step_lr", None)
        if isinstance(data.get("epoch_save"), int) and data["epoch_save"] > data["epoch_max"]:
            data["epoch_save"] = data["epoch_max"]
    header = (f"# AnySR fine-tuning config written by `anysr convert-config --method {adapter.name}` from {path}\n"
              f"# {run_line(adapter.name, root, script, found, adapter.train_script)}\n")
    atomic_write_text(out, header + yaml.safe_dump(data, sort_keys=False))
    return str(out)


def inspect_spec(repo, spec: dict, cfg):
    """``(report, how)``: `spec` built with the upstream repo's own ``models.make`` (on the meta
    device when its constructor allows it, else on the CPU with a size guard and a line saying
    so; ``upstream.build_for_inspection``) and what anysrify would convert there."""
    with repo_registry(repo) as make:  # inspected inside: what the config names may import from the repo
        model, note = build_for_inspection(make, spec, f"model {spec.get('name')!r}")
        if note is not None:
            print(f"convert-config: {note}")
        return inspect_targets(model, cfg), ("on the meta device" if note is None else "on the CPU")


def _read_upstream_yaml(path) -> dict:
    """The upstream training YAML as a dict with a ``model`` mapping; a Python-file or
    registry-style config is a one-line error naming what is supported and the API path."""
    import yaml


    supported = ("convert-config reads the YAML training configs of LIIF, LTE and SRNO (a `model: {name, args}` "
                 "spec that the repository's models.make builds) and writes Meta-SR / ArbSR settings files")
    if path.suffix == ".py":
        raise ConfigError(f"{path} is a Python-file config (OpenMMLab style): {supported}; {API_PATH}")
    try:
        data = read_yaml_file(path)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:  # a binary file is not YAML either
        raise ConfigError(f"{path} is not valid YAML ({' '.join(str(exc).split())}): {supported}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    model = data.get("model")
    if isinstance(model, dict) and "name" in model:
        return data
    if "network_g" in data or (isinstance(model, dict) and "type" in model):
        key = "network_g" if "network_g" in data else "model.type"
        raise ConfigError(f"{path}: a registry-style config (`{key}`, as BasicSR / OpenMMLab write them), not a "
                          f"LIIF-style `model: {{name, args}}` spec: {supported}; {API_PATH}")
    raise ConfigError(f"{path}: key `model` is missing or not a mapping with `name` (expected {{name, args}}): "
                      f"{supported}")


#: the resume-file test of trainers that start fresh when `resume:` names a missing file (LTE, SRNO)
_TESTS_RESUME = r"os\.path\.(exists|isfile)\(\s*config(\.get\(\s*|\[\s*)['\"]resume['\"]"


def _convert_resume(data: dict, out, root, script, init_from, adapter):
    """Rewrite ``resume:`` for the fine-tune; returns ``(init_from, label)`` for the weights it starts from.

    * an AnySR checkpoint (``anysr_*`` keys): kept, the run continues from it;
    * a vanilla checkpoint: becomes the fine-tune's starting weights (``model.anysr_init_from``,
      what ``--init-from`` does, unless ``--init-from`` names other weights), never a vanilla resume;
    * either way the key then names no vanilla file and no path a trainer would fail on: this
      config's own run checkpoint where the trainer starts fresh on a missing file (its script
      tests ``os.path.exists(config['resume'])``: LTE, SRNO), else ``null``.  Without the
      checkout's script at hand the method's upstream trainer decides
      (``adapter.fresh_on_missing_resume``).
    One line says what was done."""
    import re


    label = "--init-from"
    resume = data.get("resume")
    if resume is None:
        return init_from, label
    if not isinstance(resume, str):
        raise ConfigError(f"`resume: {resume!r}` is not a path")
    full = Path(resume) if Path(resume).is_absolute() else (root or Path.cwd()) / resume
    if script is not None:
        tolerant, trainer = re.search(_TESTS_RESUME, (root / script).read_text(errors="replace")), script
    else:
        tolerant = adapter.fresh_on_missing_resume
        trainer = f"the upstream {adapter.name} repository's {adapter.train_script}"
    own = f"./save/_{Path(out).name.split('.')[0]}/epoch-last.pth"
    fresh = own if tolerant else None
    why = (f"{trainer} starts a fresh run while that file is missing and resumes this run once it exists; with "
           f"--name N set resume: ./save/N/epoch-last.pth" if tolerant else
           "no resume: a fresh fine-tune; to continue an AnySR run later set resume: to its epoch-last.pth")
    if full.is_file():
        try:
            sd = extract_state_dict(load_file(full))
        except AnySRError as exc:
            raise ConfigError(f"`resume: {resume}` ({full}) is not a checkpoint this tool can read: {exc}") from None
        if any("anysr_" in str(k) for k in sd):
            print(f"convert-config: `resume: {resume}` is an AnySR checkpoint: kept, the run continues from it")
            return init_from, label
        data["resume"] = fresh
        if init_from is not None and Path(init_from).resolve() != full.resolve():
            print(f"convert-config: `resume: {resume}` is a vanilla checkpoint; --init-from {init_from} gives the "
                  f"starting weights instead, and resume: {fresh or 'null'} ({why})")
            return init_from, label
        print(f"convert-config: `resume: {resume}` is a vanilla checkpoint: the fine-tune starts from its weights "
              f"(model.anysr_init_from, as --init-from does) instead of resuming the plain model; resume: "
              f"{fresh or 'null'} ({why})")
        return full, "resume:"
    data["resume"] = fresh
    if resume != fresh:
        print(f"convert-config: `resume: {resume}` does not exist ({full}); resume: {fresh or 'null'} ({why})")
    return init_from, label


def run_line(method: str, root, script, found=(), usual: str = "train.py") -> str:
    """The header's line saying how to run the converted config: the checkout's own training
    script when one is found, else in words."""
    if script is not None:
        return f"run it with: anysr launch {method} -- {script} --config <this file>   (from {root})"
    where = ("no checkout found next to the config; --repo DIR names it" if root is None else
             f"several in {root}: {', '.join(found)}" if found else f"no train*.py in {root}")
    return (f"run it from your checkout's root with its training script ({where}; the upstream {method} "
            f"repository's is {usual}): anysr launch {method} -- <training script> --config <this file>")


class LTEAdapter(LIIFAdapter):
    """LTE's repo (jaewon-lee-b/lte): same models and contract, script ``train.py``."""

    name = "lte"
    train_script = "train.py"
    fresh_on_missing_resume = True  # train.py: os.path.exists(config.get('resume')); the key must be a path
    repository = "LTE (jaewon-lee-b/lte)"


ADAPTER = LIIFAdapter()
LTE_ADAPTER = LTEAdapter()


register_adapter(ADAPTER, "liif")
register_adapter(LTE_ADAPTER, "lte", "lte-fast")

__all__ = ["LIIFAdapter", "LTEAdapter", "ADAPTER", "LTE_ADAPTER", "scale_from_cell", "convert_upstream_config", "PAPER_SCHEDULE", "defer_features", "looks_implicit", "looks_srno",
           "LIIF_NAMES", "ENCODER_NAMES"]
