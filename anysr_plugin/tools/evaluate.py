"""The ``anysr eval`` harness: PSNR / LPIPS / GFLOPs per scale and width.

Protocol (the established arbitrary-scale SR evaluation, LIIF / SRNO test scripts):

* data: a folder of HR images (the LR is the bicubic downsampling of the HR, cropped
  top-left to a multiple of the scale: ``data.make_lr``; ``--bicubic pil`` as LIIF /
  SRNO, ``matlab`` as Meta-SR / ArbSR benchmark folders), or paired LR / HR folders;
* scales: integer, fractional, asymmetric ``(s_h, s_w)``, and out-of-distribution
  x6 ... x30 (the scale policy then runs the full network);
* model call: LIIF's ``batched_predict`` -- the input normalised by ``(x - 0.5) / 0.5``,
  ``gen_feat`` once, then ``query_rgb`` on chunks of ``chunk`` HR pixels (memory bounded
  by one chunk of LIIF queries; SRNO's attention mixes all queries, so it runs in one
  pass as upstream's test does), output ``* 0.5 + 0.5``,
  clamped to [0, 1];
* PSNR: ``metrics.psnr`` with ``protocol="benchmark"`` (Y of BT.601, shave = ceil(s))
  or ``"div2k"`` (RGB, shave = ceil(s) + 6), averaged over images;
* LPIPS (optional): ``metrics.LPIPSMetric`` (AlexNet; ``lpips_weights`` is a local file);
* GFLOPs: 2 x MACs of the whole call (``count_flops`` on a meta twin), mean over images;
  encoder GMACs: the multiply-adds of the module holding the AnySR blocks (LIIF / SRNO
  ``encoder``) on the LR image at the width used -- what the width changes, reported
  next to the width so every row says which sub-network ran and what it cost;
* modes: ``"subnet"`` (AnySR†: the width of the scale's group), ``"full"`` (AnySR‡:
  width 1), a fixed width (a float), or ``"budget"`` (the largest width within
  ``budget_gflops`` for each image); ``baseline="bicubic"`` evaluates bicubic upscaling
  of the same LR through the same protocol.
"""
from __future__ import annotations

import contextlib
import json
import math
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import torch
from torch import nn

from ..runtime.checkpoint import atomic_write_text
from ..runtime.control import anysr_blocks, as_scale_tensor, get_state, unwrap, use_width
from ..runtime.errors import ConfigError, ScaleError, shorten
from ..runtime.limits import check_floats
from ..runtime.methods import adapter_for
from .budget import Budget
from .cost import MacCounter, call_inputs, encoder_of
from .data import ImageFolder, PairedFolders, bicubic_upsample, make_lr, skimage_photos
from .metrics import LPIPSMetric, psnr

__all__ = ["EvalResult", "super_resolve", "evaluate", "results_to_json", "results_to_markdown", "parse_scale",
           "parse_scales",
           "load_dataset"]


@dataclass
class EvalResult:
    scale: object            # float, or [s_h, s_w] when asymmetric
    width: Optional[float]   # None for the bicubic baseline; the mean width in budget mode
    psnr: float
    lpips: Optional[float]
    gflops: Optional[float]
    mode: str = ""
    images: int = 0
    encoder_gmacs: Optional[float] = None   # encoder multiply-adds (1e9) at the width used, mean over images


def parse_scales(values) -> list:
    """Command-line scale lists: ``["2", "3"]``, ``["2,3,4"]`` or ``["1.5x3", "6"]`` -> pairs.

    Commas and spaces both separate scales (as ``anysr demo --scales 1.5,2,3``); an
    asymmetric scale is written ``s_h x s_w``."""
    return [parse_scale(piece) for value in values for piece in str(value).split(",") if piece.strip()]


def parse_scale(text) -> tuple:
    """``"2"`` -> (2, 2); ``"1.5x3"`` / ``"1.5/3"`` / ``(1.5, 3)`` -> (1.5, 3)."""
    check_floats(text, ScaleError, "scale")
    if isinstance(text, (int, float)):
        return float(text), float(text)
    if isinstance(text, (tuple, list)):
        return float(text[0]), float(text[1])
    parts = str(text).lower().replace("x", "/").split("/")
    parts = [p for p in parts if p.strip()]
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise ScaleError(f"cannot read scale {shorten(text)}; use e.g. 2, 2.5 or 1.5x3 (s_h x s_w)") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or not all(v > 0 and math.isfinite(v) for v in vals):
        raise ScaleError(f"cannot read scale {shorten(text)}; use e.g. 2, 2.5 or 1.5x3 (s_h x s_w)")
    return vals[0], vals[1]


def _scale_out(s: tuple):
    return s[0] if s[0] == s[1] else [s[0], s[1]]


def load_dataset(hr: Optional[str] = None, lr: Optional[str] = None, first_k: Optional[int] = None):
    """``("hr", [(name, hr_image)])`` from an HR folder (or the scikit-image photographs
    when ``hr`` is None or ``"skimage"``), or ``("paired", PairedFolders-like list)``."""
    if first_k is not None and (isinstance(first_k, bool) or not isinstance(first_k, int) or first_k < 1):
        raise ConfigError(f"first_k must be a positive integer (or None for all images), got {shorten(first_k)}")
    if lr is not None:
        if hr is None:
            raise ConfigError("paired evaluation needs both --lr and --hr folders")
        return "paired", (lr, hr, first_k)
    if hr is None or hr == "skimage":
        items = list(skimage_photos().items())
    else:
        items = [(n, img) for n, img in ImageFolder(hr)]
    if first_k is not None:
        items = items[:first_k]
    return "hr", items


def super_resolve(model: nn.Module, lr: torch.Tensor, hr_size, scale=None, width=None, chunk: int = 30000,
                  ) -> torch.Tensor:
    """SR of ``lr`` (3, h, w) or (1, 3, h, w) in [0, 1] to ``hr_size`` through the model's
    method adapter (LIIF: ``batched_predict``; SRNO: one pass over the HR grid).

    ``scale`` goes to the gates (default: HR / LR sizes), ``width`` fixes the sub-network
    (``use_width``; None = the scale policy).  Returns (3, H, W) in [0, 1].
    """
    if not isinstance(lr, torch.Tensor) or lr.dim() not in (3, 4) or lr.shape[-3] != 3:
        raise ConfigError(f"super_resolve needs an RGB LR image (3, h, w) or batch (B, 3, h, w) in [0, 1], got "
                          f"{tuple(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__}")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a positive integer (HR pixels per query batch), got {shorten(chunk)}")
    m = unwrap(model)
    m.eval()
    dev = next(m.parameters()).device
    x = (lr if lr.dim() == 4 else lr.unsqueeze(0)).to(dev)
    with contextlib.ExitStack() as st:
        if width is not None and anysr_blocks(m):
            st.enter_context(use_width(m, width))
        out = adapter_for(m).super_resolve(m, x, hr_size, scale=scale, chunk=chunk)
    return out[0].cpu()


def _pairs_for_scale(kind, data, scale, bicubic: str):
    if kind == "paired":
        lr_dir, hr_dir, *first_k = data
        for name, lr, hr in PairedFolders(lr_dir, hr_dir, scale, first_k=first_k[0] if first_k else None):
            yield name, lr, hr
        return
    for name, hr in data:
        lr, crop = make_lr(hr, scale, method=bicubic)
        yield name, lr, crop


def evaluate(model: Optional[nn.Module], data, scales: Iterable, modes: Sequence = ("subnet",),
             protocol: str = "benchmark", baseline: Optional[str] = None, bicubic: str = "pil",
             lpips_weights: Optional[str] = None, lpips: bool = False, lpips_metric=None,
             budget_gflops: Optional[float] = None, chunk: int = 30000, progress: bool = False,
             count_gflops: bool = True) -> list:
    """Evaluate ``model`` (and/or the bicubic baseline) -> list of :class:`EvalResult`.

    ``data``: the result of :func:`load_dataset`, or a list of ``(name, hr)``.
    ``modes``: any of "subnet", "full", "budget", or widths (floats); for a model that is
    not anysrified only its own forward is evaluated (mode "original").
    """
    kind, items = data if isinstance(data, tuple) and data and data[0] in ("hr", "paired") else ("hr", data)
    if kind == "hr" and not all(isinstance(it, (tuple, list)) and len(it) == 2 and isinstance(it[1], torch.Tensor)
                                for it in items):
        raise ConfigError("evaluate's data must be load_dataset(...) or a list of (name, (3, H, W) HR tensor) pairs")
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a positive integer (HR pixels per query batch), got {shorten(chunk)}")
    if model is None and baseline is None:
        raise ConfigError("nothing to evaluate: give a model or baseline='bicubic'")
    if baseline not in (None, "bicubic"):
        raise ConfigError(f"unknown baseline {shorten(baseline)}; the only baseline is 'bicubic'")
    metric = lpips_metric
    if metric is None and (lpips or lpips_weights is not None):
        metric = LPIPSMetric(weights_path=lpips_weights)
    anysr = model is not None and bool(anysr_blocks(model))
    runs = []
    if baseline == "bicubic":
        runs.append(("bicubic", None))
    if model is not None:
        if not anysr:
            runs.append(("original", None))
        else:
            cfg = get_state(model).config
            for mode in modes:
                if mode in ("subnet", "full", "budget"):
                    runs.append((mode, None))
                else:
                    if isinstance(mode, str):
                        try:
                            mode = float(mode)
                        except ValueError:
                            raise ConfigError(f"unknown mode {shorten(mode)}; use 'subnet', 'full', 'budget' or a "
                                              f"width {cfg.widths}") from None
                    width = cfg.check_width(mode)
                    runs.append((f"width {width:g}", width))
    if any(r[0] == "budget" for r in runs) and budget_gflops is None:
        raise ConfigError("mode 'budget' needs budget_gflops")
    counter = MacCounter(model) if (model is not None and count_gflops) else None
    enc_counter = MacCounter(encoder_of(model)) if (model is not None and count_gflops) else None
    budget = None
    if any(r[0] == "budget" for r in runs):
        budget = Budget(model, gflops=budget_gflops)
    scales = parse_scales(scales)
    below = [s for s in scales if min(s) < 1]
    if below:  # the LR would be larger than the HR: a PSNR of that means nothing
        raise ScaleError(f"scale {_scale_out(below[0])} is below 1 (a downscale); super-resolution is evaluated at "
                         "scales >= 1 (s_h and s_w)")
    bar = None
    if progress:
        from tqdm import tqdm

        n_items = len(items) if kind == "hr" else None
        bar = tqdm(total=(n_items or 0) * len(scales) * len(runs) or None, desc="eval", unit="img")
    results = []
    for scale in scales:
        stats = {r[0]: {"psnr": [], "lpips": [], "gflops": [], "width": [], "enc": []} for r in runs}
        for name, lr, hr in _pairs_for_scale(kind, items, scale, bicubic):
            hr_size = tuple(hr.shape[-2:])
            for mode, fixed in runs:
                width = None
                if mode == "bicubic":
                    sr = bicubic_upsample(lr, hr_size, method=bicubic)
                    gf = None
                else:
                    if mode == "full":
                        width = 1.0
                    elif mode == "subnet":
                        width = cfg.width_for_scale(max(scale))
                    elif mode == "budget":
                        width = budget.decide(as_scale_tensor(scale), call_inputs(model, lr.shape[-2:], hr_size), {})
                    elif fixed is not None:
                        width = fixed
                    sr = super_resolve(model, lr, hr_size, scale if anysr else None, width if anysr else None,
                                       chunk)
                    gf = None
                    if counter is not None:
                        ins = call_inputs(model, lr.shape[-2:], hr_size)
                        macs = counter(*ins, width=width, scale=scale) if anysr else counter(*ins)
                        gf = 2 * macs / 1e9
                        lr_in = torch.zeros(1, 3, *lr.shape[-2:])
                        enc = enc_counter(lr_in, width=width, scale=scale) if anysr else enc_counter(lr_in)
                        stats[mode]["enc"].append(enc / 1e9)
                s = stats[mode]
                s["psnr"].append(float(psnr(sr[None], hr[None], protocol=protocol, scale=scale)))
                if metric is not None:
                    s["lpips"].append(float(metric(sr[None], hr[None]).mean()))
                if gf is not None:
                    s["gflops"].append(gf)
                if width is not None:
                    s["width"].append(width)
                if bar is not None:
                    bar.update(1)
        for mode, _ in runs:
            s = stats[mode]
            if not s["psnr"]:
                continue
            w = None
            if s["width"]:
                w = s["width"][0] if len(set(s["width"])) == 1 else sum(s["width"]) / len(s["width"])
            results.append(EvalResult(_scale_out(scale), w, sum(s["psnr"]) / len(s["psnr"]),
                                      sum(s["lpips"]) / len(s["lpips"]) if s["lpips"] else None,
                                      sum(s["gflops"]) / len(s["gflops"]) if s["gflops"] else None,
                                      mode, len(s["psnr"]), sum(s["enc"]) / len(s["enc"]) if s["enc"] else None))
    if bar is not None:
        bar.close()
    return results


def results_to_json(results: Sequence[EvalResult], path=None) -> dict:
    """``{"results": [{"scale", "width", "psnr", "lpips", "gflops", "encoder_gmacs", "mode"}, ...]}``."""
    data = {"results": [{"scale": r.scale, "width": r.width, "psnr": r.psnr, "lpips": r.lpips,
                         "gflops": r.gflops, "encoder_gmacs": r.encoder_gmacs, "mode": r.mode} for r in results]}
    if path is not None:
        atomic_write_text(path, json.dumps(data, indent=2))
    return data


def results_to_markdown(results: Sequence[EvalResult]) -> str:
    lines = ["| scale | mode | width | encoder GMACs | PSNR (dB) | LPIPS | GFLOPs | images |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        sc = f"x{r.scale:g}" if not isinstance(r.scale, list) else f"x{r.scale[0]:g}/{r.scale[1]:g}"
        enc = "-" if r.encoder_gmacs is None else f"{r.encoder_gmacs:.3f}"
        lines.append(f"| {sc} | {r.mode} | {'-' if r.width is None else f'{r.width:g}'} | {enc} | {r.psnr:.2f} | "
                     f"{'-' if r.lpips is None else f'{r.lpips:.4f}'} | "
                     f"{'-' if r.gflops is None else f'{r.gflops:.3f}'} | {r.images} |")
    return "\n".join(lines)
