"""Cost of a (sub-)network: multiply-accumulates and parameters, per width, scale and block.

MACs are counted as the paper counts FLOPs for Tables IV/V: one multiply-add of every
convolution and linear layer that actually runs (so a sliced sub-network is charged
for its sliced convolutions only).  Counting uses PyTorch's FlopCounterMode on a real
forward, which sees the ``F.conv2d`` calls of the sliced path, and halves its FLOP
count (it counts a multiply-add as two).  ``FLOPs = 2 x MACs`` where a table shows both.

Whole-model tables run that forward on a **meta-device twin** of the model (a deep copy
whose tensors have shapes but no data), so counting a 400x600 HR output of LIIF costs
nothing; if a model cannot run on the meta device the real model runs under no_grad.

"Consistent pixel size" (Table IV: "measured with consistent pixel size for upsampling
SR images across all scales"): a fixed HR size is given and the LR input is
``floor(HR / s)`` per axis, so the cost falls with the scale.  The default HR size
400 x 600 is the one Table V implies: its ReLU and GAP columns count 64 x 60,000 =
3.84 M at x2 (LR 200 x 300), 1.70 M at x3 and 0.96 M at x4, and its conv FLOPs
8,860 M = 2 x 73,856 x 60,000 (multiply-adds plus bias, doubled).
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..runtime.control import anysr_blocks, get_state, scale_pair, unwrap, use_scale, use_width
from ..runtime.control import PlanHook
from ..runtime.errors import AnySRError, ConfigError, ScaleError, shorten
from ..runtime.export import safe_deepcopy
from ..runtime.methods import adapter_for
from .reference.models import REFERENCE_NAMES, build_encoder, build_reference
from .reference.registry import ENCODER_NAMES

#: HR size (H, W) that Table V's per-block counts imply (60,000 LR pixels at x2)
PAPER_HR_SIZE = (400, 600)


def count_flops(model: nn.Module, *inputs, width: float | None = None, scale=None, **kwargs) -> int:
    """Multiply-accumulates of convolutions and linears for one forward of ``model(*inputs)``.

    ``width`` fixes the sub-network, ``scale`` gives the scale explicitly (both only for
    AnySR models).  Runs in eval mode without gradients; the model's mode is restored.
    """
    return count_flops_by_module(model, *inputs, width=width, scale=scale, **kwargs)[""]


def count_flops_by_module(model: nn.Module, *inputs, width: float | None = None, scale=None, **kwargs) -> dict:
    """:func:`count_flops` split by module: ``{module path: MACs}``, ``""`` = the whole call
    (a module's MACs include its sub-modules'; modules that ran no conv/linear are absent)."""
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            if width is not None:
                stack.enter_context(use_width(model, width))
            if scale is not None:
                stack.enter_context(use_scale(model, scale))
            counter = FlopCounterMode(display=False)
            with torch.no_grad(), counter:
                model(*inputs, **kwargs)
        root = type(model).__name__ + "."
        out = {name[len(root):]: sum(per_op.values()) // 2 for name, per_op in counter.get_flop_counts().items()
               if name.startswith(root)}
        out[""] = counter.get_total_flops() // 2
        return out
    finally:
        model.train(was_training)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------
# meta-device counting


def meta_twin(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` on the meta device (shapes only), in eval mode."""
    twin = safe_deepcopy(unwrap(model))
    twin.to("meta")
    # meta tensors hold no values, so the adapter cannot read the scale from the call's
    # arguments (LIIF's cell); counting always passes the scale with use_scale instead
    for m in twin.modules():
        for hook in m._forward_pre_hooks.values():
            if isinstance(hook, PlanHook):
                hook.reads_call = False
    return twin.eval()


def _to_meta(x):
    if isinstance(x, torch.Tensor):
        return torch.empty(x.shape, dtype=x.dtype, device="meta")
    if isinstance(x, (tuple, list)):
        return type(x)(_to_meta(v) for v in x)
    if isinstance(x, dict):
        return {k: _to_meta(v) for k, v in x.items()}
    return x


class MacCounter:
    """Counts MACs of ``model(*inputs)`` at (width, scale), on a meta twin when possible.

    One twin is built per counter; results are cached on the input shapes, width and scale.
    """

    def __init__(self, model: nn.Module, use_meta: bool = True):
        self.model = unwrap(model)
        self.is_anysr = bool(anysr_blocks(self.model))
        self._twin = None
        self.use_meta = use_meta
        self._cache: dict = {}

    def _key(self, inputs, width, scale, call_kwargs):
        def sig(x):
            return tuple(x.shape) if isinstance(x, torch.Tensor) else repr(x)
        shapes = tuple(sig(x) for x in inputs) + tuple((k, sig(v)) for k, v in sorted(call_kwargs.items()))
        return shapes, width, None if scale is None else tuple(torch.as_tensor(scale).flatten().tolist())

    def __call__(self, *inputs, width=None, scale=None, call_kwargs=None) -> int:
        return self.by_module(*inputs, width=width, scale=scale, call_kwargs=call_kwargs)[""]

    def by_module(self, *inputs, width=None, scale=None, call_kwargs=None) -> dict:
        """MACs per module path of one call (:func:`count_flops_by_module`; ``""`` = whole)."""
        call_kwargs = dict(call_kwargs or {})
        key = self._key(inputs, width, scale, call_kwargs)
        if key in self._cache:
            return self._cache[key]
        kw = {"width": width, "scale": scale} if self.is_anysr else {}
        macs = None
        if self.use_meta:
            try:
                if self._twin is None:
                    self._twin = meta_twin(self.model)
                macs = count_flops_by_module(self._twin, *_to_meta(inputs), **kw, **_to_meta(call_kwargs))
            except AnySRError:
                raise
            except Exception:  # a model that needs real data (e.g. .item() on a tensor)
                self.use_meta = False
        if macs is None:
            macs = count_flops_by_module(self.model, *inputs, **kw, **call_kwargs)
        self._cache[key] = macs
        return macs


# ---------------------------------------------------------------------------
# per block


def _gate_params(block) -> int:
    return count_params(block.anysr_gate) if block.anysr_gate is not None else 0


def gate_macs(block, width: float) -> int:
    """MACs of the two gate FC layers at ``width`` (per image); the block type computes them."""
    return block.gate_macs(width)


@dataclass
class BlockCost:
    """One AnySR block at one width and LR size (Table V's columns, as MACs)."""

    name: str
    family: str
    width: float
    channels: int            # floor(C * w)
    conv_params: int
    gate_params: int
    params: int
    pixels: int              # LR pixels the block runs on
    conv_macs: int           # conv multiply-adds (no bias)
    conv_macs_ratio: float   # of full width
    act_ops: int             # activations applied (the block type counts them)
    gap_ops: int             # additions of the global average pool
    gate_macs: int


def block_costs(model: nn.Module, lr_size=(1, 1), widths: Optional[Sequence[float]] = None) -> list:
    """Per-block costs at ``lr_size`` (H, W) for every width (``BlockCost`` rows)."""
    blocks = anysr_blocks(model)
    if not blocks:
        raise AnySRError("block_costs needs an anysrified model")
    names = {id(m): n for n, m in unwrap(model).named_modules()}
    widths = tuple(widths) if widths is not None else get_state(model).config.widths
    pixels = int(lr_size[0]) * int(lr_size[1])
    rows = []
    for b in blocks:
        gp = _gate_params(b)
        cp = count_params(b) - gp
        full = b.conv_macs_per_pixel(1.0)
        for w in widths:
            n = b.width_channels(w)
            act = b.activations_per_pixel(w)
            rows.append(BlockCost(names[id(b)], b.family, w, n, cp, gp, cp + gp, pixels,
                                  b.conv_macs_per_pixel(w) * pixels, b.conv_macs_per_pixel(w) / full,
                                  act * pixels, (n * pixels) if b.anysr_gate is not None else 0,
                                  gate_macs(b, w)))
    return rows


# ---------------------------------------------------------------------------
# whole model


@dataclass
class CostRow:
    scale: tuple                # (s_h, s_w)
    width: float                # sub-network width (1.0 = full; "original" rows too)
    model: str                  # "original" | "anysr"
    lr_size: tuple
    hr_size: tuple
    params: int
    macs: int
    gflops: float               # 2 * MACs / 1e9
    ratio: Optional[float]      # MACs / reference MACs at this scale
    block_conv_macs: Optional[int] = None


def sizes_for(scale, hr_size=None, lr_size=None) -> tuple:
    """``(lr_size, hr_size)``: from a fixed HR size (LR = floor(HR / s), the paper's
    consistent pixel size) or a fixed LR size (HR = round(LR * s))."""
    sh, sw = scale_pair(scale)
    if (hr_size is None) == (lr_size is None):
        raise ConfigError("give exactly one of hr_size (consistent pixel size) or lr_size")
    if hr_size is not None:
        H, W = int(hr_size[0]), int(hr_size[1])
        lr = (math.floor(H / sh + 1e-9), math.floor(W / sw + 1e-9))
        if min(lr) < 1:
            raise ScaleError(f"scale {shorten(scale)} leaves no LR pixel of a {H}x{W} HR image")
        return lr, (H, W)
    h, w = int(lr_size[0]), int(lr_size[1])
    if not max(h * sh, w * sw) <= MAX_SIDE:  # x1e300 would be an HR side of inf pixels
        raise ScaleError(f"scale {shorten(scale)} makes the {h}x{w} LR image more than {MAX_SIDE} pixels a side")
    return (h, w), (round(h * sh), round(w * sw))


def call_inputs(model: nn.Module, lr_size, hr_size, batch: int = 1, lr=None) -> tuple:
    """The positional inputs of one call that upsamples an LR of ``lr_size`` to ``hr_size``,
    as the model's method adapter builds them (``(inp,)`` for a bare encoder)."""
    inp = lr if lr is not None else torch.zeros(batch, 3, int(lr_size[0]), int(lr_size[1]))
    args, kwargs = adapter_for(model).sr_inputs(unwrap(model), inp, hr_size)
    if kwargs:
        raise ConfigError(f"{type(unwrap(model)).__name__}: its adapter's call takes keyword inputs "
                          f"{sorted(kwargs)}; count it with count_flops(model, *args, **kwargs)")
    return tuple(args)


def default_inputs(model: nn.Module) -> Callable:
    """``make_inputs(lr_size, hr_size, scale) -> tuple`` for :func:`call_inputs`."""
    def make(lr, hr, scale):
        return call_inputs(model, lr, hr)
    return make


def encoder_of(model: nn.Module) -> nn.Module:
    """The encoder as the model's method adapter names it (its block root: LIIF / SRNO
    ``encoder``; the whole net for Meta-SR / ArbSR nets and bare encoders)."""
    return adapter_for(model).block_root(unwrap(model))


def encoder_path(model: nn.Module) -> str:
    """Module path of :func:`encoder_of` inside the model (``""``: the model itself)."""
    enc, root = encoder_of(model), unwrap(model)
    return next(name for name, m in root.named_modules() if m is enc)


#: deprecated alias: the reference encoders' names are the one table ``reference.registry.ENCODER_NAMES``
BUILTIN_ENCODERS = ENCODER_NAMES


def builtin_names() -> list:
    """The built-in reference models by name (the ``--model`` of ``anysr flops / bench / eval / export``):
    the bare encoders, then the SR models."""
    return list(ENCODER_NAMES) + list(REFERENCE_NAMES)


def build_model(name: str, seed: int = 0, **kwargs) -> nn.Module:
    """An unconverted reference model by name: an encoder (``edsr-baseline``, ``edsr``,
    ``rdn``, ``rcan``) or a wrapper (``liif-edsr-baseline``, ``srno-rdn``, ...)."""
    if name in ENCODER_NAMES:
        return build_encoder(name, seed=seed, **kwargs)
    if name not in REFERENCE_NAMES:
        raise ConfigError(f"unknown model {shorten(name)}; built-in names: {', '.join(builtin_names())}")
    return build_reference(name, seed=seed, **kwargs)


def cost_table(model: nn.Module, scales: Iterable, widths="all", hr_size=None, lr_size=None,
               original: Optional[nn.Module] = None, make_inputs: Optional[Callable] = None,
               use_meta: bool = True, part: str = "model") -> list:
    """Rows of params and MACs per scale and width (``CostRow``).

    ``widths``: "all" (every configured width), "policy" (the scale's width, as AnySR
    runs in eval mode, i.e. the † rows of Table IV), or a list.  ``original``: the
    unconverted model; when given its rows come first and ratios are relative to it
    (Table IV's percentages), else relative to the AnySR model at full width.
    ``make_inputs(lr_size, hr_size, scale)`` builds the call's inputs (default:
    :func:`call_inputs`).  ``part="encoder"`` counts only the module holding the blocks
    (LIIF / SRNO ``encoder``) on the LR image -- what Table IV's FLOPs column measures
    (its x4 figure, 35.01 G for every method, is the EDSR-baseline encoder's).
    """
    if hr_size is None and lr_size is None:
        hr_size = PAPER_HR_SIZE
    if part not in ("model", "encoder"):
        raise ConfigError(f"part must be 'model' or 'encoder', got {shorten(part)}")
    if part == "encoder":
        model = encoder_of(model)
        original = encoder_of(original) if original is not None else None
        make_inputs = make_inputs or (lambda lr, hr, scale: (torch.zeros(1, 3, lr[0], lr[1]),))
    make_inputs = make_inputs or default_inputs(model)
    counter = MacCounter(model, use_meta)
    cfg = get_state(model).config
    orig_counter = MacCounter(original, use_meta) if original is not None else None
    params = count_params(model)
    rows = []
    for scale in scales:
        sh, sw = scale_pair(scale)
        lr, hr = sizes_for((sh, sw), hr_size, lr_size)
        inputs = make_inputs(lr, hr, (sh, sw))
        ref = None
        if orig_counter is not None:
            ref = orig_counter(*make_inputs(lr, hr, (sh, sw)), scale=None)
            rows.append(CostRow((sh, sw), 1.0, "original", lr, hr, count_params(original), ref,
                                2 * ref / 1e9, 1.0))
        full = counter(*inputs, width=1.0, scale=(sh, sw))
        if ref is None:
            ref = full
        for w in widths_to_count(cfg, widths, (sh, sw)):
            macs = full if w == 1.0 else counter(*inputs, width=w, scale=(sh, sw))
            conv = sum(b.conv_macs_per_pixel(w) for b in anysr_blocks(model)) * lr[0] * lr[1]
            rows.append(CostRow((sh, sw), w, "anysr", lr, hr, params, macs, 2 * macs / 1e9, macs / ref, conv))
    return rows


def widths_to_count(cfg, widths, scale: tuple) -> list:
    """``"all"``: every configured width; ``"policy"``: the scale's own width; else the given
    widths, validated."""
    if widths == "all":
        return list(cfg.widths)
    if widths == "policy":
        return [cfg.width_for_scale(max(scale))]
    return [cfg.check_width(w) for w in widths]


@dataclass
class SplitRow:
    """Whole-model and encoder MACs of one call, original vs AnySR (where AnySR pays off).

    ``encoder_share``: the encoder's part of the original's whole-model MACs; ``blocks_share``:
    the part inside the blocks AnySR slims; ``model_ratio``: AnySR whole-model MACs over the
    original's (``1 - model_ratio`` is the saving)."""

    scale: tuple
    width: float
    lr_size: tuple
    hr_size: tuple
    original_macs: int
    original_encoder_macs: int
    original_blocks_macs: int
    macs: int
    encoder_macs: int
    blocks_macs: int
    encoder_share: float
    blocks_share: float
    encoder_ratio: float
    model_ratio: float


def cost_split(model: nn.Module, original: nn.Module, scales: Iterable, widths="policy", hr_size=None,
               lr_size=None, use_meta: bool = True) -> list:
    """:class:`SplitRow` per scale and width: whole-model MACs (the call the method adapter
    builds, :func:`call_inputs`), the encoder's part (the adapter's block root) and the
    blocks' part, each from the per-module split of the same counted call."""
    if hr_size is None and lr_size is None:
        hr_size = PAPER_HR_SIZE
    cfg = get_state(model).config
    names = {id(m): n for n, m in unwrap(model).named_modules()}
    block_paths = [names[id(b)] for b in anysr_blocks(model)]
    enc, orig_enc = encoder_path(model), encoder_path(original)
    counter, orig_counter = MacCounter(model, use_meta), MacCounter(original, use_meta)
    rows = []
    for scale in scales:
        sh, sw = scale_pair(scale)
        lr, hr = sizes_for((sh, sw), hr_size, lr_size)
        ref = orig_counter.by_module(*call_inputs(original, lr, hr))
        ref_blocks = sum(ref.get(p, 0) for p in block_paths)
        inputs = call_inputs(model, lr, hr)
        for w in widths_to_count(cfg, widths, (sh, sw)):
            got = counter.by_module(*inputs, width=w, scale=(sh, sw))
            rows.append(SplitRow((sh, sw), w, lr, hr, ref[""], ref.get(orig_enc, 0), ref_blocks, got[""],
                                 got.get(enc, 0), sum(got.get(p, 0) for p in block_paths),
                                 ref.get(orig_enc, 0) / ref[""], ref_blocks / ref[""],
                                 got.get(enc, 0) / max(1, ref.get(orig_enc, 0)), got[""] / ref[""]))
    return rows


def split_to_markdown(rows: Sequence[SplitRow]) -> str:
    lines = ["| scale | width | LR | original GMACs (whole / encoder) | encoder share | blocks share | "
             "AnySR GMACs (whole / encoder) | encoder ratio | whole-model ratio | whole-model saving |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_fmt_scale(r.scale)} | {r.width:g} | {r.lr_size[0]}x{r.lr_size[1]} | "
                     f"{r.original_macs / 1e9:.2f} / {r.original_encoder_macs / 1e9:.2f} | "
                     f"{100 * r.encoder_share:.1f}% | {100 * r.blocks_share:.1f}% | "
                     f"{r.macs / 1e9:.2f} / {r.encoder_macs / 1e9:.2f} | {r.encoder_ratio:.3f} | "
                     f"{r.model_ratio:.3f} | {100 * (1 - r.model_ratio):.1f}% |")
    return "\n".join(lines)


#: the longest image side a size argument may give (a 65536 x 65536 RGB float image is 48 GiB)
MAX_SIDE = 65536


def parse_size(text) -> tuple:
    """``"400x600"`` -> (400, 600); ``"96"`` -> (96, 96); each side at most ``MAX_SIDE``."""
    parts = str(text).lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:  # also an integer of thousands of digits
        raise ConfigError(f"cannot read size {shorten(text)}; use HxW, e.g. 400x600") from None
    if len(vals) == 1:
        vals *= 2
    if len(vals) != 2 or min(vals) < 1:
        raise ConfigError(f"cannot read size {shorten(text)}; use HxW, e.g. 400x600")
    if max(vals) > MAX_SIDE:
        raise ConfigError(f"size {shorten(text)} is out of range: at most {MAX_SIDE} pixels a side")
    return vals[0], vals[1]


# ---------------------------------------------------------------------------
# formatting


def _fmt_scale(s: tuple) -> str:
    return f"x{s[0]:g}" if s[0] == s[1] else f"x{s[0]:g}/{s[1]:g}"


def rows_to_markdown(rows: Sequence[CostRow]) -> str:
    lines = ["| scale | model | width | LR | HR | params (M) | MACs (G) | FLOPs (G) | % |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pct = f"{100 * r.ratio:.2f}%" if r.ratio is not None else "-"
        lines.append(f"| {_fmt_scale(r.scale)} | {r.model} | {r.width:g} | {r.lr_size[0]}x{r.lr_size[1]} | "
                     f"{r.hr_size[0]}x{r.hr_size[1]} | {r.params / 1e6:.3f} | {r.macs / 1e9:.3f} | "
                     f"{r.gflops:.2f} | {pct} |")
    return "\n".join(lines)


def blocks_to_markdown(rows: Sequence[BlockCost], first_only: bool = True) -> str:
    """Table V style: one block per width (the first block only when ``first_only``)."""
    if first_only and rows:
        rows = [r for r in rows if r.name == rows[0].name]
    lines = ["| block | width | n | conv params | gate params | params | LR pixels | conv MACs (M) | "
             "conv ratio | ReLU (M) | GAP (M) | FC MACs (K) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.name} | {r.width:g} | {r.channels} | {r.conv_params:,} | {r.gate_params:,} | "
                     f"{r.params:,} | {r.pixels:,} | {r.conv_macs / 1e6:.2f} | {r.conv_macs_ratio:.4f} | "
                     f"{r.act_ops / 1e6:.2f} | {r.gap_ops / 1e6:.2f} | {r.gate_macs / 1e3:.2f} |")
    return "\n".join(lines)


def to_json(rows: Sequence, blocks: Sequence = (), split: Sequence = ()) -> str:
    return json.dumps({"rows": [asdict(r) for r in rows], "blocks": [asdict(b) for b in blocks],
                       "split": [asdict(r) for r in split]}, indent=2)


__all__ = ["count_flops", "count_flops_by_module", "encoder_path", "cost_split", "SplitRow", "split_to_markdown",
           "count_params", "MacCounter", "meta_twin", "safe_deepcopy", "call_inputs",
           "encoder_of", "build_model", "builtin_names", "BUILTIN_ENCODERS", "block_costs", "BlockCost", "cost_table",
           "CostRow", "sizes_for", "rows_to_markdown", "blocks_to_markdown", "to_json", "PAPER_HR_SIZE",
           "gate_macs"]
