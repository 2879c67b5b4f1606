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
conversion) and reads it from one call (``read(module, args, kwargs)``); callers use
``read_checked``, which trusts nothing unchecked (shape, rows per sample, >= 1, one scale
per sample's queries) and refuses a call it cannot read with ``ScaleSourceError`` naming
the remedy and the way back.  Which argument holds what is bound once from the signature
(:class:`CallBinding`), not per call.  :func:`find_scale_source` picks a source;
:func:`explicit_source` turns ``scale_from=`` (``anysrify``'s, or ``AnySRConfig.scale_from``)
into one; :func:`dry_run` reads an example call before anything is converted.

A ``set_scale`` source reads the pair the net's ``set_scale`` set: :func:`wrap_set_scale`
records it (an instance-level wrapper; anysrify installs it when the source is ``set_scale``).
The feature-first deferral (``defer_features``) is ``deferral.py``.
"""
from __future__ import annotations

import inspect
import types

import torch
from torch import nn

from .control import unwrap
from .errors import AdapterError, NoScaleSourceError, ScaleError, ScaleSourceError
from .plan import as_scale_tensor
from .registry import ADAPTERS

#: parameter names that carry the LR image (knowledge only: the first tensor parameter otherwise)
INPUT_NAMES = ("inp", "x", "lr", "input", "img", "image", "lr_img")
#: parameter names that carry a scale directly (a number, a pair, or a per-sample tensor)
SCALE_NAMES = ("scale", "scales", "scale_factor")
#: parameter pairs that carry (s_h, s_w) as two arguments (ArbSR's ``scale, scale2`` convention)
SCALE_PAIRS = (("scale", "scale2"), ("scale_h", "scale_w"))


def _signature(fn):
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


def _plain_params(sig) -> list:
    return [p for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


class CallBinding:
    """Where each named parameter of a function sits in a call, decided once from its signature.

    Why: the scale is read on every call; binding ``inspect.signature`` per call cost more than
    the read itself.  ``get`` answers what ``bind_partial(...).arguments.get(name)`` would
    (None when the call does not pass it)."""

    def __init__(self, sig, skip_first: bool = False):
        params = _plain_params(sig) if sig is not None else []
        if skip_first:
            params = params[1:]
        self.names = tuple(p.name for p in params)
        self.positions = {p.name: i for i, p in enumerate(params) if p.kind != p.KEYWORD_ONLY}
        self.keywords = frozenset(p.name for p in params if p.kind != p.POSITIONAL_ONLY)

    def get(self, args: tuple, kwargs: dict, name: str):
        if name in kwargs and name in self.keywords:
            return kwargs[name]
        i = self.positions.get(name)
        return args[i] if i is not None and i < len(args) else None

    def first_map(self, args: tuple, kwargs: dict, skip: tuple = ()):
        """The call's LR-sized (B, C, h, w) tensor: a known input name first, then any 4-D tensor."""
        order = [n for n in INPUT_NAMES if n in self.names] + [n for n in self.names if n not in skip]
        for name in order:
            v = self.get(args, kwargs, name)
            if isinstance(v, torch.Tensor) and v.dim() == 4:
                return v
        return None


def _binding_of(module: nn.Module) -> CallBinding:
    return CallBinding(_signature(module.forward))


#: what to do when a scale source cannot read a call (the typed errors say it)
FIX = ("Fix: anysrify(model, cfg, scale_from=fn) with fn(module, args, kwargs) returning the call's (B, 2) "
       "scale (s_h, s_w), each >= 1, or None; or scale_from='context' and run the calls under "
       "anysr_plugin.use_scale(model, s)")
WAY_BACK = "anysr_plugin.unanysrify(model) gives the unconverted model back"
#: a scale read from a call may lie below 1 by float rounding only (cell = 2 / H in float32 or float16)
SCALE_FLOOR = 1.0 - 1e-3
#: the queries of one sample must imply the same scale to this relative precision
QUERY_AGREEMENT = 1e-3


def _values(t: torch.Tensor, limit: int = 4) -> str:
    rows = [[round(float(v), 4) for v in row] for row in t[:limit].tolist()]
    return f"{rows}{' ...' if t.shape[0] > limit else ''}"


def check_read_scale(scale: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """`scale` (B, 2), read from a call, if every value is >= 1 (to float rounding) and it has one
    row per sample of the call's `batch` (or one row); ScaleError saying what is wrong otherwise.
    Never clamped: a value below 1 is not a super-resolution scale (it is 1 / scale, 1 / HR size
    or a cell), so using it would pick a width from a misread value."""
    if batch is not None and scale.shape[0] not in (1, batch):
        raise ScaleError(f"it gives {scale.shape[0]} per-sample scales for a batch of {batch}")
    low = (scale < SCALE_FLOOR).any(dim=1)
    if bool(low.any()):
        rows = torch.nonzero(low).flatten().tolist()
        raise ScaleError(f"it reads a scale below 1 for sample(s) {rows[:4]}{' ...' if len(rows) > 4 else ''}: "
                         f"{_values(scale[low])} (a super-resolution scale is >= 1 on both axes; 1 / scale, "
                         "1 / HR size or a cell is not one)")
    return scale


def call_batch(args: tuple, kwargs: dict):
    """Batch size of a call: the first 4-D tensor among its arguments (None without one)."""
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor) and v.dim() == 4:
            return v.shape[0]
    return None


class ScaleSource:
    """Where the scale of a call comes from.  Subclasses implement ``read`` and ``describe``;
    callers use ``read_checked``, which trusts nothing a source returns unchecked."""

    kind = "context"

    def read(self, module: nn.Module, args: tuple, kwargs: dict):
        return None

    def read_checked(self, module: nn.Module, args: tuple, kwargs: dict, converted: bool = True):
        """The call's scale as a float32 (B, 2) tensor, or None when the call carries none.

        Wrong shapes, extra columns, rows that do not match the batch and values below 1 raise
        :class:`ScaleSourceError` naming the remedy (and, once converted, the way back)."""
        try:
            value = self.read(module, args, kwargs)
            if value is None:
                return None
            batch = call_batch(args, kwargs)
            return check_read_scale(as_scale_tensor(value, batch=batch), batch)
        except ScaleSourceError:
            raise
        except ScaleError as exc:
            raise source_error(self.describe(), exc, converted) from None

    def describe(self) -> str:
        return "scale from context (use_scale / use_width; the full network otherwise)"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.describe()}>"


def source_error(where: str, exc: Exception, converted: bool = True) -> ScaleSourceError:
    """The typed refusal of a call whose scale `where` (a source's description) cannot read."""
    if converted:
        return ScaleSourceError(f"{where}: cannot take the scale from this call: {exc}. {FIX}. {WAY_BACK}")
    return ScaleSourceError(f"{where}: cannot take the scale from the example call: {exc}; the model was not "
                            f"changed. {FIX}")


class ContextSource(ScaleSource):
    """No scale in the call: ``use_scale`` / ``use_width`` decide, the full network otherwise."""

    def __init__(self, reason: str = ""):
        self.reason = reason

    def describe(self) -> str:
        return super().describe() + (f": {self.reason}" if self.reason else "")


def scale_from_cell(inp: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """Per-sample scale (B, 2) = ``2 / (cell * (H_lr, W_lr))`` for ``cell`` (B, 2), (B, Q, 2) or
    (B, H, W, 2) and ``inp`` (B, C, H_lr, W_lr).

    The encoder runs once per image, at one width: the queries of a sample must imply one scale
    (to ``QUERY_AGREEMENT``), else ScaleError (never "the first query wins"); the scale must be
    >= 1 (:func:`check_read_scale`)."""
    if not isinstance(inp, torch.Tensor) or inp.dim() != 4:
        raise ScaleError(f"expected the LR input as a (B, C, H, W) tensor, got "
                         f"{tuple(inp.shape) if isinstance(inp, torch.Tensor) else type(inp).__name__}")
    if not isinstance(cell, torch.Tensor) or cell.dim() < 2 or cell.shape[-1] != 2:
        raise ScaleError("expected `cell` of shape (B, 2), (B, Q, 2) or (B, H, W, 2) (cell = 2 / HR size per axis), "
                         f"got {tuple(cell.shape) if isinstance(cell, torch.Tensor) else type(cell).__name__}")
    if cell.shape[0] != inp.shape[0]:
        raise ScaleError(f"`cell` has batch {cell.shape[0]} but the input has batch {inp.shape[0]}")
    c = cell.detach().float()
    if c.numel() and not bool((c > 0).all()):
        raise ScaleError(f"`cell` entries must be positive (2 / HR size); got {c.flatten()[:4].tolist()}")
    lr = torch.tensor([inp.shape[-2], inp.shape[-1]], dtype=torch.float32, device=c.device)
    if c.dim() > 2:  # per-query cells: one scale per sample
        if c.shape[0] and not c.numel():
            raise ScaleError(f"`cell` of shape {tuple(cell.shape)} holds no query")
        c = c.reshape(c.shape[0], -1, 2) if c.numel() else c.new_zeros(0, 1, 2)
        lo, hi = c.amin(dim=1), c.amax(dim=1)
        apart = (hi - lo > QUERY_AGREEMENT * lo.abs()).any(dim=1)
        if bool(apart.any()):
            b = int(torch.nonzero(apart)[0])
            low, high = (2.0 / (hi[b] * lr)).tolist(), (2.0 / (lo[b] * lr)).tolist()
            raise ScaleError(f"the queries of sample {b} imply different scales, from x{low[0]:.4g}/{low[1]:.4g} to "
                             f"x{high[0]:.4g}/{high[1]:.4g} (`cell` is not constant over a sample's queries); the "
                             "encoder runs once per image, at one width, so one scale per image is needed")
        c = c[:, 0, :]
    return check_read_scale((2.0 / (c * lr)).cpu())


class _BoundSource(ScaleSource):
    """A source that reads named forward arguments: the binding is decided once (at conversion,
    from the signature ``find_scale_source`` saw; else at the first read)."""

    binding = None

    def _binding(self, module: nn.Module) -> CallBinding:
        if self.binding is None:
            self.binding = _binding_of(module)
        return self.binding


class CellSource(_BoundSource):
    """``forward(..., cell, ...)``: ``s = 2 / (cell * LR size)``; the LR size is read from the
    call's LR input (or, in an op-dispatched query call, from the LR-sized feature map)."""

    kind = "cell"

    def __init__(self, cell_name: str = "cell", op_dispatched: bool = False, params: tuple = (), sig=None):
        self.cell_name = cell_name
        self.op_dispatched = op_dispatched
        self.params = tuple(params)
        self.binding = CallBinding(sig) if sig is not None else None

    def read(self, module, args, kwargs):
        binding = self._binding(module)
        cell = binding.get(args, kwargs, self.cell_name)
        if not isinstance(cell, torch.Tensor):
            return None
        lr = binding.first_map(args, kwargs, skip=(self.cell_name, "coord"))
        if lr is None:
            return None
        return scale_from_cell(lr, cell)

    def describe(self) -> str:
        if self.op_dispatched:
            return (f"scale from forward argument `{self.cell_name}` of the op-dispatched "
                    f"forward({', '.join(self.params)}); feature-first calls wait for it")
        return f"scale from forward argument `{self.cell_name}`"


class ScaleArgSource(_BoundSource):
    """``forward(x, scale)``: a number, an (s_h, s_w) pair, a (B,), (B, 1) or (B, 2) tensor; with
    ``second`` (``forward(x, scale, scale2)``) the two arguments are s_h and s_w (a call that
    leaves the second out is isotropic)."""

    kind = "argument"

    def __init__(self, name: str, sig=None, second: str | None = None):
        self.name, self.second = name, second
        self.binding = CallBinding(sig) if sig is not None else None

    def read(self, module, args, kwargs):
        binding = self._binding(module)
        value = binding.get(args, kwargs, self.name)
        other = binding.get(args, kwargs, self.second) if self.second else None
        if value is None or other is None:
            return value
        if isinstance(value, torch.Tensor) or isinstance(other, torch.Tensor):
            return torch.stack(torch.broadcast_tensors(torch.as_tensor(value, dtype=torch.float32).reshape(-1),
                                                       torch.as_tensor(other, dtype=torch.float32).reshape(-1)), 1)
        return value, other

    def describe(self) -> str:
        if self.second:
            return f"scale from forward arguments `{self.name}`, `{self.second}` as (s_h, s_w)"
        return f"scale from forward argument `{self.name}`"


class SetScaleSource(ScaleSource):
    """EDSR-PyTorch style: ``net.set_scale(...)`` before ``net(x)``; the pair it set is recorded
    by an instance-level wrapper of ``set_scale`` (:func:`wrap_set_scale`).

    ``contract``: ``"index"`` (``set_scale(idx)``, the scale read back from ``net.scale``) or
    ``"pair"`` (``set_scale(scale, scale2)``)."""

    kind = "set_scale"

    def __init__(self, contract: str, params: tuple = ()):
        self.contract = contract
        self.params = tuple(params)

    def read(self, module, args, kwargs):
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
        return ADAPTERS.get(self.adapter_name).scale_from_call(module, args, kwargs)

    def describe(self) -> str:
        return self.description


class CallableSource(ScaleSource):
    """The user's ``scale_from=fn(module, args, kwargs) -> (B, 2) scale or None``."""

    kind = "callable"

    def __init__(self, fn, name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__qualname__", type(fn).__name__)  # 'module:function' when named so

    def read(self, module, args, kwargs):
        return self.fn(module, args, kwargs)

    def describe(self) -> str:
        return f"scale from scale_from={self.name}(module, args, kwargs)"


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
            return CellSource("cell", op_dispatched=op, params=tuple(names), sig=sig)
        for first, second in SCALE_PAIRS:
            if first in names and second in names:
                return ScaleArgSource(first, sig=sig, second=second)
        for name in SCALE_NAMES:
            if name in names:
                return ScaleArgSource(name, sig=sig)
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


def import_scale_function(name: str):
    """The function ``"package.module:function"`` names (imported now), or NoScaleSourceError."""
    import importlib

    module_name, _, attr_path = name.partition(":")
    try:
        target = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module itself failing
        raise NoScaleSourceError(f"scale_from={name!r}: cannot import module {module_name!r} ({type(exc).__name__}: "
                                 f"{exc}); make it importable (a .py file in the current folder or the repository "
                                 "root, or `anysr launch / convert-config --import FILE.py`)") from None
    for part in attr_path.split("."):
        if not hasattr(target, part):
            raise NoScaleSourceError(f"scale_from={name!r}: module {module_name!r} has no {attr_path!r}")
        target = getattr(target, part)
    if not callable(target):
        raise NoScaleSourceError(f"scale_from={name!r}: {attr_path!r} is a {type(target).__name__}, not a function "
                                 "fn(module, args, kwargs) -> (B, 2) scale or None")
    return target


def explicit_source(scale_from) -> ScaleSource:
    """``anysrify(..., scale_from=...)`` or ``AnySRConfig.scale_from``: "context",
    "module:function" (imported now), a ScaleSource, or a callable."""
    if isinstance(scale_from, ScaleSource):
        return scale_from
    if isinstance(scale_from, str):
        if scale_from == "context":
            return ContextSource("chosen with scale_from='context'")
        if ":" in scale_from:
            return CallableSource(import_scale_function(scale_from), scale_from)
        raise NoScaleSourceError(f"scale_from={scale_from!r}: expected 'context', 'module:function', a callable "
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


def example_call(example_inputs) -> tuple:
    """``(args, kwargs)`` of ``anysrify(..., example_inputs=...)``: the positional arguments of one
    call (a tuple, or one tensor) or ``(args, kwargs)``."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,), {}
    if isinstance(example_inputs, tuple) and len(example_inputs) == 2 and isinstance(
            example_inputs[0], (tuple, list)) and isinstance(example_inputs[1], dict):
        return tuple(example_inputs[0]), dict(example_inputs[1])
    if isinstance(example_inputs, (tuple, list)):
        return tuple(example_inputs), {}
    raise ScaleSourceError(f"example_inputs must be the positional arguments of one call of the model (a tuple, "
                           f"or one tensor) or (args, kwargs), got {type(example_inputs).__name__}; the model was "
                           "not changed")


def dry_run(source: ScaleSource, model: nn.Module, example_inputs):
    """Read the scale of the example call with `source` before anything is converted (the model
    is not called).  Returns the (B, 2) scale, or None for sources that never read a call
    (context, set_scale); a call it cannot read, or one without a scale, is a ScaleSourceError."""
    args, kwargs = example_call(example_inputs)
    scale = source.read_checked(model, args, kwargs, converted=False)
    if scale is None and source.kind not in ("context", "set_scale"):
        raise ScaleSourceError(f"{source.describe()}: the example call carries no scale it can read; the model was "
                               "not changed. Give the call your trainer makes (with the scale argument filled in). "
                               f"{FIX}")
    return scale


# ---------------------------------------------------------------------------
# the set_scale recorder (EDSR-PyTorch style nets: Meta-SR, ArbSR and their forks)

#: where the recording ``set_scale`` leaves the pair it set (an instance attribute)
CALL_SCALE_ATTR = "_anysr_call_scale"


def _recording_set_scale(self, *args, **kwargs):
    """Instance-bound replacement of ``set_scale``: the class's original, then record the pair."""
    result = type(self).set_scale(self, *args, **kwargs)
    if self.__dict__.get("_anysr_scale_contract") == "pair":
        s_h = kwargs.get("scale", args[0] if args else None)
        s_w = kwargs.get("scale2", args[1] if len(args) > 1 else s_h)
    else:
        s_h = s_w = getattr(self, "scale", None)
    try:
        pair = (float(s_h), float(s_w))
    except (TypeError, ValueError):
        pair = None
    self.__dict__[CALL_SCALE_ATTR] = pair
    return result


class _RecordingSetScale:
    """``net.set_scale`` replacement (an instance attribute): upstream's signature, records the pair.

    Deep copies rebind to the copy (the net is copied through the memo); DataParallel replicas
    share it, which is right: the trainer calls ``set_scale`` on ``get_model()`` before
    ``forward`` replicates the net, and the replicas inherit the recorded pair."""

    _anysr_wrapped = True
    __name__ = "set_scale"

    def __init__(self, net):
        self.__self__ = net

    @property
    def __signature__(self):
        return inspect.signature(types.MethodType(type(self.__self__).set_scale, self.__self__))

    @property
    def __doc__(self):
        return type(self.__self__).set_scale.__doc__

    def __call__(self, *args, **kwargs):
        return _recording_set_scale(self.__self__, *args, **kwargs)

    def __repr__(self):
        return f"<AnySR-recording set_scale of {type(self.__self__).__name__}>"


def wrap_set_scale(net: nn.Module, contract: str) -> nn.Module:
    """Make ``net.set_scale`` record the scale pair it sets (idempotent; same signature).

    ``contract="index"`` (Meta-SR): ``set_scale(idx)``; the pair is read back from the
    ``scale`` attribute the original writes (``args.scale[idx]``).  ``contract="pair"``
    (ArbSR): ``set_scale(scale, scale2)`` with ``scale`` the height factor.  The hook is an
    instance attribute (:class:`_RecordingSetScale`): deep copies rebind to the copy,
    DataParallel replicas inherit the recorded scale, the class is untouched.
    """
    net = unwrap(net)
    if contract not in ("index", "pair"):
        raise AdapterError(f"set_scale contract must be 'index' or 'pair', got {contract!r}")
    if not callable(getattr(type(net), "set_scale", None)):
        raise AdapterError(f"{type(net).__name__} has no set_scale(); it is not a Meta-SR / ArbSR net")
    current = net.__dict__.get("set_scale")
    if current is not None and getattr(current, "_anysr_wrapped", False):
        net.__dict__["_anysr_scale_contract"] = contract
        return net
    net.__dict__["_anysr_scale_contract"] = contract
    net.__dict__["set_scale"] = _RecordingSetScale(net)
    return net


def per_sample(scale: "torch.Tensor | None", args: tuple) -> "torch.Tensor | None":
    """Expand a (1, 2) batch scale to (B, 2) for the input batch ``args[0]``.

    Meta-SR / ArbSR draw one scale per batch, but we apply Algorithm 1 per
    sample: with a (B, 2) scale the core draws the full-width reset for every sample (a
    training batch may then mix widths: the masked path); in eval all samples share the
    width and the sliced path runs."""
    if scale is None:
        return None
    x = args[0] if args else None
    if isinstance(x, torch.Tensor) and x.dim() == 4 and scale.shape[0] == 1 and x.shape[0] > 1:
        return scale.expand(x.shape[0], 2).clone()
    return scale


def recorded_scale(module: nn.Module):
    """The (1, 2) scale the net's recording ``set_scale`` set last, or None."""
    pair = getattr(module, CALL_SCALE_ATTR, None)
    if pair is None:
        return None
    return torch.tensor([[float(pair[0]), float(pair[1])]])


__all__ = ["ScaleSource", "ContextSource", "CellSource", "ScaleArgSource", "SetScaleSource", "AdapterSource",
           "CallableSource", "CallBinding", "find_scale_source", "explicit_source", "single_input", "no_source_error",
           "scale_from_cell", "dry_run", "example_call", "check_read_scale", "import_scale_function", "source_error",
           "set_scale_contract", "wrap_set_scale", "per_sample", "recorded_scale", "CALL_SCALE_ATTR"]
