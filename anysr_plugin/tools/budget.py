"""Budget-driven width: ``use_budget(model, gflops=...)`` or a latency table from ``anysr bench``.

Inside the context every call of the model runs the **largest** configured width whose
cost, for *that call's* input size and scale, fits the budget.  The width never exceeds
the one the scale policy would use (``config.width_for_scale``; the smallest over a
batch of mixed scales), because a larger sub-network than the scale group's was never
trained for that scale; ``allow_above_scale=True`` lifts that cap (the full network is
always a valid, trained network).  When even the smallest width does not fit, the call
raises :class:`~anysr_plugin.errors.BudgetError` naming the cheapest cost.

Costs:

* ``gflops``: FLOPs = 2 x MACs of the whole call (conv + linear, as ``count_flops``),
  counted once per (input shapes, scale, width) on a meta-device twin of the model
  (no compute), cached.
* ``latency_table``: the JSON ``anysr bench`` writes (or its dict / path) and
  ``latency_ms``: the budget.  An entry matches on the input's spatial size and the
  scale; without an exact size match the nearest measured size is used, its latency
  scaled by the pixel ratio (convolutions are linear in the pixel count); without a
  scale match the nearest measured scale.  Entries of the unconverted model are ignored.

The input size reaches the budget through a forward pre-hook that the context puts in
front of the model's own hooks and removes on exit.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
from typing import Iterator, Optional

import torch
from torch import nn

from ..runtime.control import _require_blocks, as_scale_tensor, get_state, unwrap
from ..runtime.errors import BudgetError, ConfigError, shorten
from ..runtime.limits import to_float
from ..runtime.plan import control
from .cost import MacCounter

__all__ = ["use_budget", "Budget", "BudgetError", "load_latency_table"]


def load_latency_table(table) -> list:
    """Entries ``{"width", "scale", "input_shape", "median_ms"}`` of an ``anysr bench`` JSON."""
    if isinstance(table, (str, os.PathLike)):
        try:
            with open(table) as f:
                table = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"latency table {os.fspath(table)!r} does not exist (write one with "
                              "`anysr bench --json PATH`)") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:  # a folder, binary, not JSON
            raise ConfigError(f"cannot read latency table {os.fspath(table)!r}: {type(exc).__name__}: {exc}; "
                              "expected the JSON `anysr bench --json` writes") from None
    if isinstance(table, dict):
        table = table.get("results", table.get("entries"))
    if not isinstance(table, list):
        raise ConfigError("latency_table must be an `anysr bench` JSON (a dict with 'results'), its path, "
                          "or a list of entries")
    out = []
    for e in table:
        if not isinstance(e, dict) or "median_ms" not in e or "width" not in e:
            raise ConfigError(f"latency table entry {shorten(e)} lacks 'width' / 'median_ms'")
        if e.get("model", "anysr") == "original":
            continue
        try:
            shape = e.get("input_shape") or e.get("lr_size")
            hw = tuple(int(v) for v in shape[-2:]) if shape else None
            scale = e.get("scale")
            if scale is not None and not isinstance(scale, (list, tuple)):
                scale = (float(scale), float(scale))
            scale = tuple(float(v) for v in scale) if scale else None
            entry = {"width": float(e["width"]), "hw": hw, "scale": scale, "ms": float(e["median_ms"])}
        except (TypeError, ValueError, IndexError, OverflowError) as exc:
            raise ConfigError(f"latency table entry {shorten(e)} is malformed ({exc}); expected numbers for 'width', "
                              "'median_ms', 'scale' and an 'input_shape' list") from None
        if not (math.isfinite(entry["ms"]) and entry["ms"] >= 0) or (scale and len(scale) != 2):
            raise ConfigError(f"latency table entry {shorten(e)}: 'median_ms' must be a finite number >= 0 and "
                              "'scale' a number or an (s_h, s_w) pair")
        out.append(entry)
    if not out:
        raise ConfigError("the latency table has no AnySR entries")
    return out


class Budget:
    """Decides a width per call; a ``budget`` control of the model while ``use_budget`` is open."""

    def __init__(self, model, gflops=None, latency_table=None, latency_ms=None, allow_above_scale=False,
                 use_meta=True):
        if (gflops is None) == (latency_table is None):
            raise ConfigError("use_budget needs exactly one of gflops=... or latency_table=... (with latency_ms)")
        if gflops is not None and (not isinstance(gflops, (int, float)) or isinstance(gflops, bool)
                                   or not gflops > 0 or not math.isfinite(to_float(gflops, ConfigError, "gflops"))):
            raise ConfigError(f"gflops must be a positive number, got {shorten(gflops)}")
        if latency_table is not None and (not isinstance(latency_ms, (int, float)) or isinstance(latency_ms, bool)
                                          or not latency_ms > 0
                                          or not math.isfinite(to_float(latency_ms, ConfigError, "latency_ms"))):
            raise ConfigError(f"a latency_table budget needs latency_ms, a positive finite number; got "
                              f"{shorten(latency_ms)}")
        self.model = unwrap(model)
        self.config = get_state(self.model).config
        self.gflops = gflops
        self.latency_ms = latency_ms
        self.table = load_latency_table(latency_table) if latency_table is not None else None
        self.allow_above_scale = allow_above_scale
        self._counter = None
        self._use_meta = use_meta
        self._call = None          # (args, kwargs) of the current call
        self._counting = False
        self.decisions: list = []  # (input hw, scale, width, cost) for inspection

    def __deepcopy__(self, memo):  # copies of the model (meta twins, exports) carry no budget
        return None

    def __reduce__(self):
        return (type(None), ())

    # -- costs ----------------------------------------------------------------
    def gflops_of(self, width: float, scale: Optional[torch.Tensor], args: tuple, kwargs: dict) -> float:
        if self._counter is None:
            self._counter = MacCounter(self.model, self._use_meta)
        s = None if scale is None else tuple(scale[0].tolist()) if scale.shape[0] == 1 else scale
        self._counting = True
        try:
            return 2 * self._counter(*args, width=width, scale=s, call_kwargs=kwargs) / 1e9
        finally:
            self._counting = False

    def latency_of(self, width: float, scale: Optional[torch.Tensor], hw) -> float:
        cands = [e for e in self.table if abs(e["width"] - width) < 1e-9]
        if not cands:
            return math.inf
        if scale is not None and any(e["scale"] for e in cands):
            s = float(scale.max())
            best = min(abs(max(e["scale"]) - s) for e in cands if e["scale"])
            cands = [e for e in cands if e["scale"] and abs(max(e["scale"]) - s) == best]
        if hw is None:
            return min(e["ms"] for e in cands)
        px = hw[0] * hw[1]
        exact = [e for e in cands if e["hw"] == tuple(hw)]
        if exact:
            return exact[0]["ms"]
        sized = [e for e in cands if e["hw"]]
        if not sized:
            return cands[0]["ms"]
        near = min(sized, key=lambda e: abs(math.log(e["hw"][0] * e["hw"][1] / px)))
        return near["ms"] * px / (near["hw"][0] * near["hw"][1])

    # -- decision -------------------------------------------------------------
    def cap(self, scale: Optional[torch.Tensor]) -> float:
        if self.allow_above_scale or scale is None:
            return 1.0
        return min(self.config.width_for_scale(float(s)) for s in scale.max(dim=1).values.tolist())

    def decide(self, scale: Optional[torch.Tensor], args: tuple, kwargs: dict) -> float:
        hw = _input_hw(args, kwargs)
        cap = self.cap(scale)
        widths = [w for w in self.config.widths if w <= cap + 1e-9]
        costs = {}
        for w in sorted(widths, reverse=True):
            cost = self.gflops_of(w, scale, args, kwargs) if self.table is None else self.latency_of(w, scale, hw)
            costs[w] = cost
            limit = self.gflops if self.table is None else self.latency_ms
            if cost <= limit:
                self.decisions.append((hw, None if scale is None else scale.tolist(), w, cost))
                return w
        unit = "GFLOPs" if self.table is None else "ms"
        limit = self.gflops if self.table is None else self.latency_ms
        cheapest = min(costs, key=costs.get)
        listing = ", ".join(f"width {w:g}: {c:.4g} {unit}" for w, c in sorted(costs.items()))
        raise BudgetError(
            f"no sub-network fits the budget of {limit:g} {unit} for input {hw} at scale "
            f"{None if scale is None else [round(v, 4) for v in scale[0].tolist()]}: the cheapest is width "
            f"{cheapest:g} at {costs[cheapest]:.4g} {unit} ({listing})"
            + ("" if self.allow_above_scale or cap == 1.0 else f"; widths above the scale policy's {cap:g} "
               "were not considered (allow_above_scale=True)"))

    def width_for(self, block, scale, x=None) -> float:
        """Called by plan.decide_widths for every call while the budget is active."""
        if self._counting:  # the counting forward itself runs at a fixed width
            return 1.0
        if self._call is not None:
            args, kwargs = self._call
        elif x is not None:  # block called directly, outside the model's hooks
            args, kwargs = (x,), {}
        else:
            args, kwargs = (), {}
        if scale is not None and not isinstance(scale, torch.Tensor):
            scale = as_scale_tensor(scale)
        if scale is not None:
            scale = scale.detach().to("cpu")
        return self.decide(scale, args, kwargs)


def _input_hw(args: tuple, kwargs: dict):
    for v in list(args) + list(kwargs.values()):
        if isinstance(v, torch.Tensor) and v.dim() == 4:
            return tuple(int(s) for s in v.shape[-2:])
    return None


class _CallRecorder:
    def __init__(self, budget: Budget):
        self.budget = budget

    def __call__(self, module, args, kwargs):
        if not self.budget._counting:
            self.budget._call = (args, kwargs)
        return None


@contextlib.contextmanager
def use_budget(model: nn.Module, gflops: float | None = None, latency_table=None, latency_ms: float | None = None,
               allow_above_scale: bool = False, use_meta: bool = True) -> Iterator[Budget]:
    """Run each call at the largest width whose cost fits (see the module docstring).

    ``gflops``: FLOPs budget (2 x MACs, in G) of one call of ``model``; or
    ``latency_table`` (an ``anysr bench`` JSON, dict or path) with ``latency_ms``.
    Yields the :class:`Budget` (its ``decisions`` list records every choice).
    A fixed width (``use_width``) takes precedence over the budget.
    """
    _require_blocks(model)  # NotAnySRError for a plain model
    budget = Budget(model, gflops, latency_table, latency_ms, allow_above_scale, use_meta)
    root = unwrap(model)
    handle = root.register_forward_pre_hook(_CallRecorder(budget), with_kwargs=True, prepend=True)
    try:
        with control(get_state(model), "budget", budget):
            yield budget
    finally:
        handle.remove()
