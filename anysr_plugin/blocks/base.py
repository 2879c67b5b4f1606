"""What every slimmable AnySR block shares: adoption, the two execution paths, validation.

A converted block *adopts* the upstream block's children under their original
attribute names (so ``body.0.weight`` stays ``body.0.weight`` and the very same
``Parameter`` objects are used); the only new tensors live in ``anysr_gate``.

Execution at per-sample widths (a list with one width per sample):

* one width for the whole batch -> ``forward_sliced``: convolutions on the first
  ``floor(C*w)`` filters, so the FLOPs really shrink;
* several widths -> ``forward_masked``: full-size convolutions with the channels
  beyond each sample's ``n_b`` zeroed, which equals each sample's sliced result.

The width and scale for a call come from the plan the model's hooks wrote on the
block (see control.py); a block called outside such a call plans for itself.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from ..config import AnySRConfig, channels_at
from ..gate import InterweavingGate

#: activations a sub-block may use between its convolutions
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU)


def sliced_conv(conv: nn.Conv2d, x: torch.Tensor, out_channels=None, in_index=None) -> torch.Tensor:
    """``conv`` on its first ``out_channels`` filters reading input channels ``in_index``.

    ``in_index`` is an int (a prefix of the input channels) or a LongTensor (a gather,
    for dense blocks).  Uses the conv's own padding mode, stride and dilation.
    """
    w, b = conv.weight, conv.bias
    if out_channels is not None:
        w = w[:out_channels]
        b = b[:out_channels] if b is not None else None
    if in_index is not None:
        w = w[:, :in_index] if isinstance(in_index, int) else w.index_select(1, in_index)
    return conv._conv_forward(x, w, b)


def add_residual(res: torch.Tensor, x: torch.Tensor, res_scale=1) -> torch.Tensor:
    """``res * res_scale + x``; in place on `res` when no gradient is recorded (inference
    then allocates no extra feature map per block, as the upstream ``res += x`` does)."""
    if torch.is_grad_enabled():
        return res.mul(res_scale) + x
    if res_scale != 1:
        res.mul_(res_scale)
    return res.add_(x)


def channel_mask(ns: list, channels: int, like: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, 1) mask that keeps the first n_b channels of sample b."""
    n = torch.tensor(ns, device=like.device)
    keep = torch.arange(channels, device=like.device)[None, :] < n[:, None]
    return keep.to(like.dtype)[:, :, None, None]


def check_conv(conv, what: str, in_ch=None, out_ch=None):
    """None if `conv` is a plain 2-D convolution of the expected size, else the reason."""
    if not isinstance(conv, nn.Conv2d) or type(conv).forward is not nn.Conv2d.forward:
        return f"{what} is {type(conv).__name__}, expected a plain nn.Conv2d"
    if conv.groups != 1:
        return f"{what} has groups={conv.groups}; only groups=1 can be sliced"
    if in_ch is not None and conv.in_channels != in_ch:
        return f"{what} reads {conv.in_channels} channels, expected {in_ch}"
    if out_ch is not None and conv.out_channels != out_ch:
        return f"{what} writes {conv.out_channels} channels, expected {out_ch}"
    return None


def check_activation(act, what: str):
    if not isinstance(act, ACTIVATIONS):
        return f"{what} is {type(act).__name__}, expected an activation ({', '.join(a.__name__ for a in ACTIVATIONS)})"
    return None


class AnySRBlock(nn.Module):
    """Base of the slimmable blocks.  Subclasses set ``family`` and ``name_pattern``
    and implement ``structure_problem``, ``_adopt``, ``forward_sliced``,
    ``forward_masked`` and ``conv_macs_per_pixel``."""

    family: str = ""
    #: regex on the upstream class name that marks a candidate of this family
    name_pattern: str = r"$^"

    # -- matching -------------------------------------------------------------
    @classmethod
    def is_candidate(cls, module: nn.Module) -> bool:
        return re.search(cls.name_pattern, type(module).__name__) is not None

    @classmethod
    def structure_problem(cls, module: nn.Module):  # pragma: no cover - abstract
        """None when `module` can be converted, else a sentence saying why not."""
        raise NotImplementedError

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- construction ---------------------------------------------------------
    def __init__(self, block: nn.Module, config: AnySRConfig, state=None):
        super().__init__()
        self._adopt(block)
        self.upstream_type = type(block).__name__
        self.channels = self.gated_channels(block)
        self.lam = config.lam_for(self.family)
        self.widths = config.widths
        param = next(block.parameters())
        self.anysr_gate = None
        if config.interweave != "none":
            self.anysr_gate = InterweavingGate(self.channels, self.lam, config.interweave, config.gate,
                                               device=param.device, dtype=param.dtype)
        self.training = block.training
        if self.anysr_gate is not None:
            self.anysr_gate.train(block.training)
        # runtime controls; plain attributes (never in state_dict), copied to DataParallel replicas
        self._anysr_state = state
        self._anysr_plan = None
        self._anysr_fixed_width = None
        self._anysr_scale_override = None
        self._anysr_budget = None

    def _adopt(self, block: nn.Module) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"family={self.family!r}, channels={self.channels}, widths={self.widths}"

    # -- execution ------------------------------------------------------------
    def width_channels(self, width: float) -> int:
        return channels_at(self.channels, width)

    def gated_channels_at(self, width: float) -> int:
        """Channels the gate weights at `width` (its ``n`` in Eq. 8)."""
        return self.width_channels(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..control import plan_for_block

        scale, widths = plan_for_block(self, x)
        ns = [self.width_channels(w) for w in widths]
        if len(set(ns)) == 1:
            return self.forward_sliced(x, ns[0], scale)
        if len(ns) != x.shape[0]:
            from ..errors import ScaleError

            raise ScaleError(f"{len(ns)} per-sample widths for a batch of {x.shape[0]}")
        return self.forward_masked(x, ns, scale)

    def apply_gate(self, h: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
        if self.anysr_gate is None:
            return h
        gate = self.anysr_gate(h, scale, n)
        return h.mul_(gate) if not torch.is_grad_enabled() else h * gate

    def apply_gate_masked(self, h: torch.Tensor, scale: torch.Tensor, ns: list, mask: torch.Tensor) -> torch.Tensor:
        if self.anysr_gate is None:
            return h
        return h * self.anysr_gate.forward_masked(h, scale, ns, mask)

    def forward_sliced(self, x, n, scale):  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_masked(self, x, ns, scale):  # pragma: no cover - abstract
        raise NotImplementedError

    def conv_macs_per_pixel(self, width: float) -> int:  # pragma: no cover - abstract
        """Multiply-accumulates of the block's convolutions per input pixel at `width`."""
        raise NotImplementedError


def full_width_reference(block: nn.Module, converted: AnySRBlock, channels: int, generator_seed: int = 0):
    """Max abs difference between the upstream block and its conversion at full width
    with a neutral gate, on a small random input (validates the forward semantics)."""
    param = next(block.parameters())
    if param.device.type == "meta":
        return 0.0
    g = torch.Generator(device="cpu").manual_seed(generator_seed)
    x = torch.randn(2, channels, 6, 6, generator=g).to(param.device, param.dtype)
    gate, converted.anysr_gate = converted.anysr_gate, None
    plan, converted._anysr_plan = converted._anysr_plan, (torch.ones(1, 2, device=param.device), [1.0])
    try:
        with torch.no_grad():
            ref = block(x.clone())
            out = converted(x.clone())
    finally:
        converted.anysr_gate, converted._anysr_plan = gate, plan
    if ref.shape != out.shape:
        return float("inf")
    return float((ref.float() - out.float()).abs().max())


__all__ = ["AnySRBlock", "add_residual", "sliced_conv", "channel_mask", "check_conv", "check_activation"]
