"""Where a model's scale comes from, found from its structure (forward signature, methods).

Why: most arbitrary-scale SR code is a fork of LIIF's or EDSR-PyTorch's code base with
renamed classes, registry names and extra arguments.  What does not change is how the
scale enters: a ``cell`` argument next to the LR input (LIIF, LTE, SRNO and their forks;
also op-dispatched ``forward(op, inp=None, feat=None, coord=None, cell=None)``), a
``scale`` argument, or a ``set_scale(...)`` call before ``forward`` (EDSR-PyTorch style:
Meta-SR's ``set_scale(idx)``, ArbSR's ``set_scale(scale, scale2)``).  So the scale
source is decided from those, never from a class or registry name; method adapters may
*add* knowledge (Meta-SR's ``pos_mat`` fallback) but never gate support.

A :class:`ScaleSource` says where the scale comes from (``describe()``, shown at
conversion) and reads it from one call (``read(module, args, kwargs)`` -> ``(B, 2)`` or
None).  :func:`find_scale_source` picks one; :func:`explicit_source` turns the user's
``anysrify(..., scale_from=...)`` into one.

The second half is the feature-first deferral (:func:`defer_features`): methods that
run the encoder before any scale is visible (``gen_feat``, ``gen_feats``, an op-dispatched
``forward('gen_feat', ...)``), found by structure, wait for the first call that carries a
``cell``; the class patch is scoped and undone on exit.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

import torch
from torch import nn

from ..errors import AnySRError, NoScaleSourceError, ScaleError

#: parameter names that carry the LR image (knowledge only: the first tensor parameter otherwise)
INPUT_NAMES = ("inp", "x", "lr", "input", "img", "image", "lr_img")
#: parameter names that carry a scale directly (a number, a pair, or a per-sample tensor)
SCALE_NAMES = ("scale", "scales", "scale_factor")


def _signature(fn):
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _plain_params(sig) -> list:
    return [p for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _bind(module: nn.Module, args: tuple, kwargs: dict) -> dict:
    """The call's arguments by parameter name (what forward would see); {} when they do not bind."""
    sig = _signature(module.forward)
    if sig is None:
        return {}
    try:
        return dict(sig.bind_partial(*args, **kwargs).arguments)
    except TypeError:
        return {}


class ScaleSource:
    """Where the scale of a call comes from.  Subclasses implement ``read`` and ``describe``."""

    kind = "context"

    def read(self, module: nn.Module, args: tuple, kwargs: dict):
        return None

    def describe(self) -> str:
        return "scale from context (use_scale / use_width; the full network otherwise)"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"


class ContextSource(ScaleSource):
    """No scale in the call: ``use_scale`` / ``use_width`` decide, the full network otherwise."""

    def __init__(self, reason: str = ""):
        self.reason = reason

    def describe(self) -> str:
        return super().describe() + (f": {self.reason}" if self.reason else "")


def scale_from_cell(inp: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Per-sample scale (B, 2) = ``2 / (cell * (H_lr, W_lr))`` for ``cell`` (B, 2), (B, Q, 2) or
    (B, H, W, 2) (constant over the queries: the first is read) and ``inp`` (B, C, H_lr, W_lr)."""
    if not isinstance(inp, torch.Tensor) or inp.dim() != 4:
        raise ScaleError(f"expected the LR input as a (B, C, H, W) tensor, got "
                         f"{tuple(inp.shape) if isinstance(inp, torch.Tensor) else type(inp).__name__}")
    if not isinstance(cell, torch.Tensor) or cell.dim() < 2 or cell.shape[-1] != 2:
        raise ScaleError("expected `cell` of shape (B, 2), (B, Q, 2) or (B, H, W, 2) (cell = 2 / HR size per axis), "
                         f"got {tuple(cell.shape) if isinstance(cell, torch.Tensor) else type(cell).__name__}")
    if cell.shape[0] != inp.shape[0]:
        raise ScaleError(f"`cell` has batch {cell.shape[0]} but the input has batch {inp.shape[0]}")
    c = cell.detach().float()
    if c.dim() > 2:
        c = c.reshape(c.shape[0], -1, 2)[:, 0, :]
    if c.numel() and not bool((c > 0).all()):
        raise ScaleError(f"`cell` entries must be positive (2 / HR size); got {c.flatten()[:4].tolist()}")
    lr = torch.tensor([inp.shape[-2], inp.shape[-1]], dtype=torch.float32, device=c.device)
    return (2.0 / (c * lr)).cpu()


def _lr_tensor(bound: dict, skip: tuple):
    """The LR-sized (B, C, h, w) tensor of a call: a known input name first, then any 4-D tensor."""
    for name in INPUT_NAMES:
        v = bound.get(name)
        if isinstance(v, torch.Tensor) and v.dim() == 4:
            return v
    for name, v in bound.items():
        if name not in skip and isinstance(v, torch.Tensor) and v.dim() == 4:
            return v
    return None


class CellSource(ScaleSource):
    """``forward(..., cell, ...)``: ``s = 2 / (cell * LR size)``; the LR size is read from the
    call's LR input (or, in an op-dispatched query call, from the LR-sized feature map)."""

    kind = "cell"

    def __init__(self, cell_name: str = "cell", op_dispatched: bool = False, params: tuple = ()):
        self.cell_name = cell_name
        self.op_dispatched = op_dispatched
        self.params = tuple(params)

    def read(self, module, args, kwargs):
        bound = _bind(module, args, kwargs)
        cell = bound.get(self.cell_name)
        if not isinstance(cell, torch.Tensor):
            return None
        lr = _lr_tensor(bound, skip=(self.cell_name, "coord"))
        if lr is None:
            return None
        return scale_from_cell(lr, cell)

    def describe(self) -> str:
        if self.op_dispatched:
            return (f"scale from forward argument `{self.cell_name}` of the op-dispatched "
                    f"forward({', '.join(self.params)}); feature-first calls wait for it")
        return f"scale from forward argument `{self.cell_name}`"


class ScaleArgSource(ScaleSource):
    """``forward(x, scale)``: a number, an (s_h, s_w) pair, a (B,) or (B, 2) tensor."""

    kind = "argument"

    def __init__(self, name: str):
        self.name = name

    def read(self, module, args, kwargs):
        from ..plan import as_scale_tensor

        bound = _bind(module, args, kwargs)
        value = bound.get(self.name)
        if value is None:
            return None
        batch = next((v.shape[0] for v in bound.values() if isinstance(v, torch.Tensor) and v.dim() == 4), None)
        return as_scale_tensor(value, batch=batch)

    def describe(self) -> str:
        return f"scale from forward argument `{self.name}`"


class SetScaleSource(ScaleSource):
    """EDSR-PyTorch style: ``net.set_scale(...)`` before ``net(x)``; the pair it set is recorded
    by an instance-level wrapper of ``set_scale`` (``adapters.metasr.wrap_set_scale``).

    ``contract``: ``"index"`` (``set_scale(idx)``, the scale read back from ``net.scale``) or
    ``"pair"`` (``set_scale(scale, scale2)``)."""

    kind = "set_scale"

    def __init__(self, contract: str, params: tuple = ()):
        self.contract = contract
        self.params = tuple(params)

    def read(self, module, args, kwargs):
        from .metasr import per_sample, recorded_scale

        return per_sample(recorded_scale(module), args)

    def describe(self) -> str:
        what = " (an index into the net's scale list)" if self.contract == "index" else " as (s_h, s_w)"
        return f"scale from set_scale({', '.join(self.params)}){what}"


class AdapterSource(ScaleSource):
    """A method adapter's own reader (adds knowledge, e.g. Meta-SR's ``pos_mat`` fallback)."""

    def __init__(self, adapter_name: str, description: str, kind: str = "adapter", contract: str | None = None):
        self.adapter_name = adapter_name
        self.description = description
        self.kind = kind
        self.contract = contract  # kind "set_scale": how set_scale is called ("index" | "pair")

    def read(self, module, args, kwargs):
        from . import get_adapter

        return get_adapter(self.adapter_name).scale_from_call(module, args, kwargs)

    def describe(self) -> str:
        return self.description


class CallableSource(ScaleSource):
    """The user's ``scale_from=fn(module, args, kwargs) -> (B, 2) scale or None``."""

    kind = "callable"

    def __init__(self, fn):
        self.fn = fn

    def read(self, module, args, kwargs):
        return self.fn(module, args, kwargs)

    def describe(self) -> str:
        return f"scale from scale_from={getattr(self.fn, '__qualname__', type(self.fn).__name__)}(module, args, kwargs)"


def set_scale_contract(model: nn.Module):
    """("index" | "pair", parameter names) when the model has an EDSR-PyTorch ``set_scale``."""
    fn = getattr(type(model), "set_scale", None)
    if not callable(fn):
        return None
    sig = _signature(fn)
    if sig is None:
        return None
    params = [p.name for p in _plain_params(sig)][1:]  # without self
    if not params:
        return None
    required = [p for p in list(sig.parameters.values())[1:] if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return ("pair" if len(params) >= 2 and len(required) <= 2 and len(params) <= 3 else "index"), tuple(params)


def find_scale_source(model: nn.Module):
    """The scale source read from `model`'s structure, or None (see the module docstring)."""
    sig = _signature(model.forward)
    if sig is not None:
        params = _plain_params(sig)
        names = [p.name for p in params]
        if "cell" in names:
            first = params[0]
            op = (first.name not in INPUT_NAMES and first.default is first.empty
                  and any(p.name in INPUT_NAMES + ("feat",) and p.default is None for p in params[1:]))
            return CellSource("cell", op_dispatched=op, params=tuple(names))
        for name in SCALE_NAMES:
            if name in names:
                return ScaleArgSource(name)
    contract = set_scale_contract(model)
    if contract is not None:
        return SetScaleSource(*contract)
    return None


def single_input(model: nn.Module) -> bool:
    """True for a network whose forward takes one required input and nothing else (an encoder)."""
    sig = _signature(model.forward)
    if sig is None:
        return False
    params = _plain_params(sig)
    required = [p for p in params if p.default is p.empty]
    return len(required) == 1 and len(params) == 1


def explicit_source(scale_from) -> ScaleSource:
    """``anysrify(..., scale_from=...)``: "context", a ScaleSource, or a callable."""
    if isinstance(scale_from, ScaleSource):
        return scale_from
    if isinstance(scale_from, str):
        if scale_from == "context":
            return ContextSource("chosen with scale_from='context'")
        raise NoScaleSourceError(f"scale_from={scale_from!r}: expected 'context', a callable "
                                 "(module, args, kwargs) -> (B, 2) scale or None, or a ScaleSource")
    if callable(scale_from):
        return CallableSource(scale_from)
    raise NoScaleSourceError(f"scale_from must be 'context', a callable or a ScaleSource, got "
                             f"{type(scale_from).__name__}")


def no_source_error(model: nn.Module) -> NoScaleSourceError:
    sig = _signature(model.forward)
    return NoScaleSourceError(
        f"{type(model).__name__}: no scale source found: forward{sig if sig is not None else '(...)'} has no "
        "`cell` or `scale` argument and the model has no set_scale(); the width could not follow the scale. "
        "Fix: anysrify(model, cfg, scale_from=fn) with fn(module, args, kwargs) returning the (B, 2) scale "
        "(s_h, s_w) of a call (or None), or scale_from='context' to run the full network unless told by "
        "use_scale / use_width")


# ---------------------------------------------------------------------------
# feature-first deferral


class DeferredFeatures:
    """What a deferred feature method returns until the scale is known.

    Passed back into the model (e.g. ``forward('query_rgb', feat=...)``) it is replaced by the
    real features; anything else done with it raises a clear error."""

    __slots__ = ("_owner",)

    def __init__(self, owner):
        object.__setattr__(self, "_owner", owner)

    def __getattr__(self, name):
        raise AnySRError("the model's features were deferred until the first call that carries `cell` "
                         "(anysr defer_features: the encoder runs at the scale's width then); to use them "
                         "directly, run the feature call inside anysr_plugin.use_scale(model, s)")

    def __repr__(self) -> str:
        return "<AnySR deferred features: computed at the first call that carries `cell`>"


def _is_plain_method(cls, name: str):
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            return None
        if name in klass.__dict__:
            fn = klass.__dict__[name]
            return fn if inspect.isfunction(fn) else None
    return None


def _loads_attr(fn, attr: str) -> bool:
    """True when `fn`'s code reads ``self.<attr>`` (directly)."""
    code = getattr(fn, "__code__", None)
    return code is not None and attr in code.co_names


def feature_and_query_methods(model: nn.Module, encoder_attr: str):
    """(methods that run the encoder, methods that take a ``cell``), by structure.

    Feature methods read ``self.<encoder_attr>`` and take no ``cell``; query methods take a
    ``cell`` parameter (``forward`` included)."""
    cls = type(model)
    names = set()
    for klass in cls.__mro__:
        if klass in (nn.Module, object):
            break
        names.update(n for n, v in klass.__dict__.items() if inspect.isfunction(v) and not n.startswith("__"))
    names.add("forward")
    features, queries = [], []
    for name in sorted(names):
        fn = _is_plain_method(cls, name)
        if fn is None:
            continue
        sig = _signature(fn)
        if sig is None:
            continue
        pnames = [p.name for p in _plain_params(sig)]
        if "cell" in pnames:
            queries.append(name)
        elif name != "forward" and encoder_attr and _loads_attr(fn, encoder_attr):
            features.append(name)
    return features, queries


def _scale_known(model) -> bool:
    from ..plan import scale_known

    state = getattr(model, "_anysr_state", None)
    if state is None:
        return True
    from ..control import anysr_blocks

    blocks = anysr_blocks(model)
    return not blocks or scale_known(state, blocks[0])


def _deferring_feature(orig):
    def feature(self, *args, **kwargs):
        self.__dict__.pop("_anysr_resolved", None)
        self.__dict__.pop("_anysr_deferred_scale", None)
        if not self.__dict__.get("_anysr_defer") or _scale_known(self):
            self.__dict__.pop("_anysr_pending", None)
            return orig(self, *args, **kwargs)
        placeholder = DeferredFeatures(self)
        self.__dict__["_anysr_pending"] = (orig, args, kwargs, placeholder)
        return placeholder
    feature.__name__, feature.__qualname__, feature.__doc__ = orig.__name__, orig.__qualname__, orig.__doc__
    feature.__wrapped__ = orig
    feature._anysr_deferring = True
    return feature


def _substitute(value, placeholder, result):
    if value is placeholder:
        return result
    if isinstance(value, (tuple, list)) and any(v is placeholder for v in value):
        return type(value)(result if v is placeholder else v for v in value)
    return value


@contextlib.contextmanager
def _call_plan(model, scale, owner):
    """A call plan made from `scale` for the deferred feature run (it replaces a scale-less plan
    that the enclosing call's hook may have made)."""
    from ..control import anysr_blocks
    from ..plan import make_plan, pop_plans, push_plan

    state, blocks = model._anysr_state, anysr_blocks(model)
    push_plan(state, id(owner), make_plan(state, scale, scale.shape[0], model.training, blocks[0]), True)
    try:
        yield
    finally:
        pop_plans(state, id(owner))


def _deferring_query(orig):
    sig = _signature(orig)

    def query(self, *args, **kwargs):
        pending = self.__dict__.pop("_anysr_pending", None)
        resolved = self.__dict__.get("_anysr_resolved")
        if pending is None and resolved is not None:  # later query chunks pass the same placeholder
            placeholder, result = resolved
            args = tuple(_substitute(a, placeholder, result) for a in args)
            kwargs = {k: _substitute(v, placeholder, result) for k, v in kwargs.items()}
        if pending is not None:
            from ..control import use_scale

            feat_fn, fargs, fkwargs, placeholder = pending
            try:
                bound = sig.bind_partial(self, *args, **kwargs).arguments if sig is not None else {}
            except TypeError:
                bound = {}
            cell = bound.get("cell")
            lr = _lr_tensor({**{f"_{i}": a for i, a in enumerate(fargs)}, **fkwargs}, skip=())
            if isinstance(cell, torch.Tensor) and lr is not None:
                scale = scale_from_cell(lr, cell)
                with use_scale(self, scale), _call_plan(self, scale, placeholder):
                    result = feat_fn(self, *fargs, **fkwargs)
                self.__dict__["_anysr_deferred_scale"] = scale
            else:  # no cell at all: the core's no-scale rule (full network, one warning)
                result = feat_fn(self, *fargs, **fkwargs)
            self.__dict__["_anysr_resolved"] = (placeholder, result)
            args = tuple(_substitute(a, placeholder, result) for a in args)
            kwargs = {k: _substitute(v, placeholder, result) for k, v in kwargs.items()}
        scale = self.__dict__.get("_anysr_deferred_scale")
        if scale is not None and not _scale_known(self):
            # every query chunk of this image under the image's scale: a slimmable decoder
            # (decoder="slim") reads the encoder's plan, so it gets the same scale group
            from ..control import use_scale

            with use_scale(self, scale):
                return orig(self, *args, **kwargs)
        return orig(self, *args, **kwargs)
    query.__name__, query.__qualname__, query.__doc__ = orig.__name__, orig.__qualname__, orig.__doc__
    query.__wrapped__ = orig
    query.__signature__ = sig
    query._anysr_deferring = True
    return query


#: class -> (number of live deferrals, {name: (had own entry, original)})
_PATCHED: dict = {}


def _patch_class(cls, features, queries) -> None:
    count, saved = _PATCHED.get(cls, (0, {}))
    if count == 0:
        saved = {}
        for name, make in [(n, _deferring_feature) for n in features] + [(n, _deferring_query) for n in queries]:
            fn = _is_plain_method(cls, name)
            saved[name] = (name in cls.__dict__, cls.__dict__.get(name))
            setattr(cls, name, make(fn))
    _PATCHED[cls] = (count + 1, saved)


def _unpatch_class(cls) -> None:
    count, saved = _PATCHED.get(cls, (0, {}))
    if count > 1:
        _PATCHED[cls] = (count - 1, saved)
        return
    _PATCHED.pop(cls, None)
    for name, (own, original) in saved.items():
        if own:
            setattr(cls, name, original)
        else:
            delattr(cls, name)


def encoder_attribute(model: nn.Module) -> str:
    """The child of `model` that holds every AnySR block (e.g. ``encoder``), or ''."""
    from ..control import anysr_blocks

    blocks = set(id(b) for b in anysr_blocks(model))
    for name, child in model.named_children():
        inside = set(id(m) for m in child.modules())
        if blocks and blocks <= inside:
            return name
    return ""


@contextlib.contextmanager
def defer_features(model: nn.Module) -> Iterator[nn.Module]:
    """While open, feature-first calls of `model` wait for the scale.

    A method that runs the encoder (found by structure: it reads the attribute holding the
    AnySR blocks and takes no ``cell``) called while no scale is known (no call plan, no
    ``use_scale``) only records its arguments and returns a :class:`DeferredFeatures`; the
    next call of a method that takes ``cell`` (``query_rgb``, an op-dispatched ``forward``
    ...) first runs it under the scale ``2 / (cell * LR size)``, then substitutes the real
    features for the placeholder in its own arguments.  A fixed width alone (``use_width``,
    ``--width``) is not a scale: such calls are deferred too, so the gates see the real
    scale.  The methods are wrapped on the model's class for as long as some
    model of that class is inside this context (inert for other instances) and restored
    exactly on exit.  Yields the model.
    """
    from ..control import get_state

    get_state(model)  # NotAnySRError for a plain model
    cls = type(model)
    features, queries = feature_and_query_methods(model, encoder_attribute(model))
    if not features or not queries:
        yield model
        return
    _patch_class(cls, features, queries)
    previous = model.__dict__.get("_anysr_defer")
    model.__dict__["_anysr_defer"] = True
    try:
        yield model
    finally:
        model.__dict__.pop("_anysr_pending", None)
        model.__dict__.pop("_anysr_resolved", None)
        if previous is None:
            model.__dict__.pop("_anysr_defer", None)
        else:
            model.__dict__["_anysr_defer"] = previous
        _unpatch_class(cls)


def deferred_methods(model: nn.Module) -> tuple:
    """(feature methods, query methods) :func:`defer_features` would wrap (for reports)."""
    return feature_and_query_methods(model, encoder_attribute(model))


__all__ = ["ScaleSource", "ContextSource", "CellSource", "ScaleArgSource", "SetScaleSource", "AdapterSource",
           "CallableSource", "find_scale_source", "explicit_source", "single_input", "NoScaleSourceError",
           "scale_from_cell", "defer_features", "DeferredFeatures", "deferred_methods"]
