"""Feature-first deferral: calls that run the encoder before any scale is visible wait for it.

Why: LIIF-style models compute features first (``gen_feat``, ``gen_feats``, an op-dispatched
``forward('gen_feat', ...)``) and take the ``cell`` that says the scale only in the query call
after it.  :func:`defer_features` finds those methods by structure (they read the attribute
holding the AnySR blocks and take no ``cell``), makes each feature call wait for the next call
that carries a ``cell`` (one deferral per feature call), and scopes the class patch to the
``with`` block.
"""
from __future__ import annotations

import contextlib
import inspect
from typing import Iterator

import torch
from torch import nn

from .control import anysr_blocks, get_state, use_scale
from .errors import AnySRError, ScaleError
from .plan import make_plan, pop_plans, push_plan, scale_known
from .scale_source import CallBinding, _plain_params, _signature, scale_from_cell, source_error


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
    state = getattr(model, "_anysr_state", None)
    if state is None:
        return True
    blocks = anysr_blocks(model)
    return not blocks or scale_known(state, blocks[0])


class _Deferral:
    """One feature call waiting for its scale (``model.__dict__["_anysr_deferral"]``).

    A new feature call always starts a new one (the previous one is dropped, resolved or not), so
    a deferral never outlives its own image: later calls of another batch never see its scale."""

    __slots__ = ("fn", "args", "kwargs", "lr", "grad", "inference", "placeholder", "done", "result", "scale")

    def __init__(self, fn, args, kwargs, lr, placeholder):
        self.fn, self.args, self.kwargs, self.lr, self.placeholder = fn, args, kwargs, lr, placeholder
        # the grad mode of the feature call itself: a feature call made under no_grad stays without
        # gradients when the query that resolves it runs with them
        self.grad, self.inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
        self.done, self.result, self.scale = False, None, None


def _deferring_feature(orig):
    binding = CallBinding(_signature(orig), skip_first=True)

    def feature(self, *args, **kwargs):
        self.__dict__.pop("_anysr_deferral", None)  # a new feature call: a new deferral
        if not self.__dict__.get("_anysr_defer") or _scale_known(self):
            return orig(self, *args, **kwargs)
        lr = binding.first_map(args, kwargs)
        if lr is None:  # no named input: any 4-D tensor of the call
            lr = next((v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor) and v.dim() == 4), None)
        placeholder = DeferredFeatures(self)
        self.__dict__["_anysr_deferral"] = _Deferral(orig, args, kwargs, lr, placeholder)
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


def _mentions(args: tuple, kwargs: dict, placeholder) -> bool:
    return any(_substitute(v, placeholder, None) is not v for v in (*args, *kwargs.values()))


@contextlib.contextmanager
def _call_plan(model, scale, owner):
    """A call plan made from `scale` for the deferred feature run (it replaces a scale-less plan
    that the enclosing call's hook may have made)."""
    state, blocks = model._anysr_state, anysr_blocks(model)
    push_plan(state, id(owner), make_plan(state, scale, scale.shape[0], model.training, blocks[0]), True)
    try:
        yield
    finally:
        pop_plans(state, id(owner))


def _resolve(model, deferral: _Deferral, cell) -> None:
    """Run the deferred feature call: under the scale ``2 / (cell * LR size)`` when the query
    carries a ``cell`` (checked like any scale read from a call), else the core's no-scale rule
    (the full network, one warning); in the grad mode of the feature call."""
    lr = deferral.lr
    with contextlib.ExitStack() as stack:
        stack.enter_context(torch.inference_mode(deferral.inference))
        stack.enter_context(torch.set_grad_enabled(deferral.grad))
        if isinstance(cell, torch.Tensor) and lr is not None:
            try:
                scale = scale_from_cell(lr, cell)
            except ScaleError as exc:
                raise source_error(get_state(model).describe_scale_source(), exc) from None
            stack.enter_context(use_scale(model, scale))
            stack.enter_context(_call_plan(model, scale, deferral.placeholder))
            deferral.scale = scale
        deferral.result = deferral.fn(model, *deferral.args, **deferral.kwargs)
    deferral.done = True


def _deferring_query(orig, dispatches: bool):
    """``dispatches``: the method's code calls a feature method (an op-dispatched ``forward``,
    LIIF's ``forward``): called without a ``cell`` and without the placeholder it is a feature
    call, or another op, never the pending deferral's query."""
    sig = _signature(orig)
    binding = CallBinding(sig, skip_first=True)

    def query(self, *args, **kwargs):
        deferral = self.__dict__.get("_anysr_deferral")
        if deferral is None:
            return orig(self, *args, **kwargs)
        cell = binding.get(args, kwargs, "cell")
        carries_cell = isinstance(cell, torch.Tensor)
        if not deferral.done:
            if not (carries_cell or _mentions(args, kwargs, deferral.placeholder) or not dispatches):
                return orig(self, *args, **kwargs)
            _resolve(self, deferral, cell)
        placeholder, result = deferral.placeholder, deferral.result
        args = tuple(_substitute(a, placeholder, result) for a in args)
        kwargs = {k: _substitute(v, placeholder, result) for k, v in kwargs.items()}
        if carries_cell and deferral.scale is not None and not _scale_known(self):
            # every query chunk of this image under the image's scale: a slimmable decoder
            # (decoder="slim") reads the encoder's plan, so it gets the same scale group
            with use_scale(self, deferral.scale):
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
        for name in (*features, *queries):
            fn = _is_plain_method(cls, name)
            saved[name] = (name in cls.__dict__, cls.__dict__.get(name))
            if name in features:
                setattr(cls, name, _deferring_feature(fn))
            else:  # a query that calls a feature method may dispatch (an op-dispatched forward)
                setattr(cls, name, _deferring_query(fn, any(_loads_attr(fn, f) for f in features)))
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
    ...) and carries one (or passes the placeholder back) first runs it under the scale
    ``2 / (cell * LR size)``, in the grad mode of the feature call, then substitutes the real
    features for the placeholder in its own arguments.  A new feature call always starts a
    new deferral: a scale never carries over to another batch's features (a method that
    dispatches to a feature method, called without ``cell``, is not a query).  A fixed width alone (``use_width``,
    ``--width``) is not a scale: such calls are deferred too, so the gates see the real
    scale.  The methods are wrapped on the model's class for as long as some
    model of that class is inside this context (inert for other instances) and restored
    exactly on exit.  Yields the model.
    """
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
        model.__dict__.pop("_anysr_deferral", None)
        if previous is None:
            model.__dict__.pop("_anysr_defer", None)
        else:
            model.__dict__["_anysr_defer"] = previous
        _unpatch_class(cls)


def deferred_methods(model: nn.Module) -> tuple:
    """(feature methods, query methods) :func:`defer_features` would wrap (for reports)."""
    return feature_and_query_methods(model, encoder_attribute(model))


__all__ = ["defer_features", "DeferredFeatures", "deferred_methods", "feature_and_query_methods", "encoder_attribute"]
