"""The LIIF-family launcher hooks: ``models.make`` and ``test.batched_predict`` of a LIIF, LTE or
SRNO checkout, as ``anysr launch liif|lte|srno`` installs them (``LIIFAdapter.install``).

Why here: these repositories build every model through a registry, ``models.make(spec)``
with ``spec = {'name', 'args'}`` (checkpoints carry the spec with its ``sd``), and evaluate
through ``test.batched_predict(model, inp, coord, cell)``; both are method knowledge.  The
launcher itself (``anysr_plugin/glue/launch.py``) stays method-neutral: it runs the script and calls
``adapter.install(ctx)``.  The ``--repo`` tools build checkpoints through
:func:`build_anysr_model` too (``adapter.build_spec``), so a model is converted and loaded
the same way under the launcher and in the tools.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from ..glue.checkout import registry_make
from ..glue.launch import (ANYSR_KEY, INIT_FROM_KEY, LaunchContext, import_repo_module, report_test_scales,
                      script_scope)
from ..runtime.checkpoint import ANYSR_KEY as GATE_MARK, load_upstream_checkpoint
from ..runtime.config import AnySRConfig
from ..runtime.control import set_width, use_scale
from ..runtime.deferral import defer_features
from ..runtime.errors import AnySRError, CheckpointError, ConfigError, NoBlocksError
from ..runtime.injection import anysrify, inspect_targets, is_anysr
from ..runtime.scale_source import scale_from_cell
from .official_release import prepare_official_model


def describe_weights(ctx, model, spec, name, load_sd) -> str:
    """Load the weights a built AnySR model starts from; returns what was done, for the report."""
    if load_sd:
        sd = spec.get("sd")
        if not isinstance(sd, Mapping):
            raise CheckpointError(f"model spec {name!r}: load_sd=True but the spec has no `sd` state dict")
        if any(GATE_MARK in k for k in sd):
            result = model.load_state_dict(sd, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise CheckpointError(
                    f"saved AnySR weights do not fit the model built from the spec's `anysr:` entry; "
                    f"missing {result.missing_keys[:6]}, unexpected {result.unexpected_keys[:6]}")
            return "loaded its saved AnySR weights"
        load_upstream_checkpoint(model, sd)
        return "the saved weights are vanilla upstream weights (no anysr_* keys): gates start fresh"
    init = ctx.init_from or spec.get(INIT_FROM_KEY)
    if init:
        init = Path(init)
        if not init.is_absolute() and not init.exists():
            init = ctx.repo / init
        missing, _ = load_upstream_checkpoint(model, init)
        return f"initialised from {init} ({len(missing)} new anysr_* tensors keep their fresh init)"
    return "no --init-from / anysr_init_from: pretrained weights are not loaded"


def build_anysr_model(ctx: LaunchContext, adapter, orig_make, spec, args=None, load_sd=False, top_level=True):
    """``models.make`` with AnySR: specs carrying ``anysr:`` are built, anysrified, then loaded.

    * ``anysr:`` (a top-level key of the model spec, the AnySRConfig dict) marks an AnySR
      model, whatever the spec's name.  ``--anysr-config FILE`` adds it, **in place**, to
      every top-level spec (not to the encoder specs the model builds inside) that lacks
      it, so every checkpoint the trainer saves describes itself.
    * the model is converted by structure: the method adapter when it recognises the
      model, else the generic adapter (a renamed fork still gets its encoder's blocks and
      its scale from the forward signature).  When nothing is converted the launch stops
      with a typed error before any training step.
    * ``load_sd=True`` (resume, ``test.py``, ``demo.py``): the saved ``sd`` is loaded
      *after* anysrify, strictly; an ``sd`` without any ``anysr_*`` key is taken as vanilla
      upstream weights (gates keep their fresh init, with a message).
    * otherwise ``--init-from`` or the spec's ``anysr_init_from`` (vanilla upstream weights,
      written by ``anysr convert-config --init-from``) is loaded with
      :func:`anysr_plugin.load_upstream_checkpoint` (only ``anysr_*`` keys may be missing).

    All of it happens inside ``make``, i.e. before the trainer builds its optimizer from
    ``model.parameters()``, so the gates are trained.  One line per model says how many
    blocks were converted and where the scale comes from.
    """
    if not isinstance(spec, Mapping):
        return orig_make(spec, args=args, load_sd=load_sd)
    name = spec.get("name")
    section = spec.get(ANYSR_KEY)
    if section is None and ctx.anysr_config is not None and top_level:
        section = ctx.anysr_config.to_dict()
        if isinstance(spec, dict):
            spec[ANYSR_KEY] = section
    if section is None:
        sd = spec.get("sd") if load_sd else None
        if isinstance(sd, Mapping) and any(GATE_MARK in k for k in sd):
            raise CheckpointError(f"model spec {name!r} holds AnySR weights (anysr_* keys) but no `anysr:` entry; "
                                  "pass the AnySR config with `anysr launch ... --anysr-config FILE`")
        if top_level:  # e.g. LTE's `resume:` pointing at a vanilla checkpoint
            ctx.say(f"model spec {name!r} carries no `anysr:` entry: building the plain upstream model "
                    "(convert the config with `anysr convert-config` or pass --anysr-config FILE)")
        return orig_make(spec, args=args, load_sd=load_sd)
    section = with_overrides(ctx, spec, name, section, load_sd)
    try:
        cfg = AnySRConfig.from_dict(section)
    except AnySRError as exc:
        raise ConfigError(f"model.anysr: {exc}") from None
    if ctx.anysr_config is not None and ctx.anysr_config.to_dict() != cfg.to_dict() and not getattr(
            ctx, "_warned_cfg", False):
        ctx._warned_cfg = True
        ctx.say("the model spec's own `anysr:` entry differs from --anysr-config; the spec's is used "
                "(it describes the weights)")
    model = orig_make(spec, args=args, load_sd=False)
    try:
        anysrify(model, cfg, adapter if adapter.detect(model) else None)
    except NoBlocksError as exc:
        raise NoBlocksError(f"model spec {name!r} carries an AnySR config but nothing in "
                            f"{type(model).__name__} can be converted, so the run would train the plain model; "
                            f"stopped before any training step. {exc}") from None
    if cfg.compat == "official":
        prepare_official_model(model, adapter)
    report = inspect_targets(model)
    weights = describe_weights(ctx, model, spec, name, load_sd)
    ctx.say(f"built {name} ({type(model).__name__}): {report.summary()}; {weights}")
    if ctx.width is not None:
        set_width(model, ctx.width)
        ctx.say(f"fixed width {ctx.width:g} for every call (--width; the gates still see each call's scale)")
    if ctx.running:  # inside `anysr launch` (not the tools' builds): scoped to the script
        script_scope(ctx).enter_context(defer_features(model))
        script_scope(ctx).enter_context(report_test_scales(ctx, model))
    return model


def with_overrides(ctx: LaunchContext, spec, name, section, load_sd: bool):
    """The spec's AnySR section with the command line's fields (``--scale-from``, ``--lam``), written
    back into the spec (so every checkpoint the trainer saves carries them); said when it changes a
    value.  A different ``--lam`` cannot load gates trained with another lambda: refused."""
    if not ctx.overrides or not isinstance(section, Mapping):
        return section
    changed = {k: v for k, v in ctx.overrides.items() if section.get(k) != v}
    if not changed:
        return section
    sd = spec.get("sd") if load_sd else None
    if "lam" in changed and isinstance(sd, Mapping) and any(GATE_MARK in k for k in sd):
        trained = section.get("lam")
        raise ConfigError(f"--lam {changed['lam']}: model spec {name!r} holds AnySR gates trained with "
                          f"{'lam=' + str(trained) if trained is not None else 'the block types default lambda'} "
                          "(model.anysr.lam), which another lambda cannot load; drop --lam")
    ctx.say(f"model spec {name!r}: " + ", ".join(f"{k}={v!r} (was {section.get(k)!r})" for k, v in changed.items())
            + " from the command line")
    section = {**section, **changed}
    if isinstance(spec, dict):
        spec[ANYSR_KEY] = section
    return section


def install_registry_hooks(ctx: LaunchContext, adapter) -> None:
    """Hook ``models.make`` and ``test.batched_predict`` of the upstream repo (LIIF, LTE, SRNO).

    ``models.make`` is replaced on the package (the SR wrappers and the scripts look it
    up there at call time), see :func:`build_anysr_model`.  ``test.batched_predict`` (a
    module global read by ``eval_psnr`` at call time, also in train-time validation)
    runs inside ``use_scale(model, scale_from_cell(inp, cell))``, so the encoder run by
    ``gen_feat`` gets the scale.  A ``test.py`` / ``demo.py`` run as ``__main__`` has its
    own copy of ``batched_predict``; models built here therefore also defer their
    feature methods (found by structure) to the first call carrying a ``cell``
    (:func:`defer_features`, undone when the script returns).
    """
    models = import_repo_module(ctx, "models")
    orig_make = registry_make(models, ctx.repo.resolve(), ctx.method)

    depth = [0]

    @functools.wraps(orig_make)
    def make(model_spec, args=None, load_sd=False):
        depth[0] += 1
        try:
            return build_anysr_model(ctx, adapter, orig_make, model_spec, args=args, load_sd=load_sd,
                                     top_level=depth[0] == 1)
        finally:
            depth[0] -= 1

    make._anysr_orig = orig_make
    models.make = make
    ctx.cleanups.append(lambda: setattr(models, "make", orig_make))

    test = import_repo_module(ctx, "test", required=False)
    orig_bp = getattr(test, "batched_predict", None) if test is not None else None
    if orig_bp is not None:
        @functools.wraps(orig_bp)
        def batched_predict(model, inp, coord, cell, *args, **kwargs):
            if cell is not None and is_anysr(model):
                with use_scale(model, scale_from_cell(inp, cell)):
                    return orig_bp(model, inp, coord, cell, *args, **kwargs)
            return orig_bp(model, inp, coord, cell, *args, **kwargs)

        test.batched_predict = batched_predict
        ctx.cleanups.append(lambda: setattr(test, "batched_predict", orig_bp))


__all__ = ["install_registry_hooks", "build_anysr_model", "describe_weights", "with_overrides"]
