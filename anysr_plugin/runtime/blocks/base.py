"""What every block type shares: the block-type contract, adoption, the two execution paths.

A *block type* is one subclass of :class:`AnySRBlock`; it owns everything about one
upstream block family (its matching rule, default lambda, sliced and masked forward,
static export and cost) and is registered in the open registry (``registry.py``), so a
new block type is one new class, in the package or in user code.

A converted block *adopts* the upstream block's children under their original
attribute names (so ``body.0.weight`` stays ``body.0.weight`` and the very same
``Parameter`` objects are used); the only new tensors live in ``anysr_gate``.

Execution at per-sample widths (a list with one width per sample):

* one width for the whole batch -> ``forward_sliced``: convolutions on the first
  ``floor(C*w)`` filters, so the FLOPs really shrink;
* several widths, ``config.mixed_path``:

  - ``"grouped"`` -> ``forward_grouped``: the samples are split by width, each group runs
    ``forward_sliced`` on its sub-batch and the results go back in batch order.  Every
    sample computes exactly its own sliced sub-network (outputs and gradients), the MACs
    are the sum of the groups' sliced MACs, and no full-size masked activations are kept
    for backward (Algorithm 1 per sample makes almost every training batch mixed);
  - ``"masked"`` -> ``forward_masked``: full-size convolutions with the channels beyond
    each sample's ``n_b`` zeroed, which equals each sample's sliced result; full MACs and
    extra saved activations, but shapes that do not depend on the width mix;
  - ``"auto"`` (default): grouped when gradients are recorded (training: fewer MACs and,
    with the gated activation, no more saved activations than the plain block; measured
    on a LIIF-EDSR-baseline fine-tune step, examples/finetune_step_cost/) and, without
    gradients, for feature maps of at least ``AUTO_GROUPED_MIN_PIXELS`` (32x32) pixels;
    masked for smaller maps without gradients (per-group overheads outweigh the saved
    MACs there, and no-grad masked runs in place) and while ``torch.compile`` traces (the
    group sizes change from batch to batch, so grouped would recompile; masked keeps
    shapes static).  A rule on the grad mode and the shape, not a timing: the choice never
    depends on measurement noise, so runs repeat bit for bit.  The rule rests on CPU
    measurements (examples/mixed_path_choice/); ``python examples/mixed_path_choice.py
    --device cuda`` measures a GPU, and ``mixed_path=`` forces either path.

The width and scale for a call come from the call's plan (see plan.py); a block
called outside a hooked model call plans for itself.
"""
from __future__ import annotations

import copy
import re

import torch
import torch.nn.functional as F
from torch import nn

from ..config import AnySRConfig, channels_at
from ..errors import ScaleError
from ..gate import InterweavingGate, StaticGate, gate_macs, gated_activation
from ..plan import plan_for_block, snapshot
from .dataflow import buffers_kept

#: without gradients, mixed_path="auto" groups feature maps of at least this many pixels
AUTO_GROUPED_MIN_PIXELS = 32 * 32

#: activations a sub-block may use between its convolutions
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.GELU, nn.SiLU)


def sliced_conv(conv: nn.Conv2d, x: torch.Tensor, out_channels=None, in_index=None) -> torch.Tensor:
    """``conv`` on its first ``out_channels`` filters reading input channels ``in_index``.

    ``in_index`` is an int (a prefix of the input channels) or a LongTensor (a gather,
    for dense blocks).  Uses the conv's own padding mode, stride and dilation.
    """
    if conv._forward_pre_hooks:  # e.g. the old nn.utils.weight_norm computes `weight` in a pre-hook
        x = _pre_hooks(conv, x)
    w, b = conv.weight, conv.bias
    if out_channels is not None:
        w = w[:out_channels]
        b = b[:out_channels] if b is not None else None
    if in_index is not None:
        w = w[:, :in_index] if isinstance(in_index, int) else w.index_select(1, in_index)
    out = conv._conv_forward(x, w, b)
    for hook in conv._forward_hooks.values():
        result = hook(conv, (x,), out)
        out = out if result is None else result
    return out


def _pre_hooks(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """Run `conv`'s forward pre-hooks as its own call would (weight normalisation, spectral norm)."""
    for hook in conv._forward_pre_hooks.values():
        result = hook(conv, (x,))
        if result is not None:
            x = result[0] if isinstance(result, tuple) else result
    return x


def static_conv(conv: nn.Conv2d, out_index=None, in_index=None) -> nn.Conv2d:
    """A new plain Conv2d holding ``conv.weight[:out_index][:, in_index]`` (copies), for export
    (a weight a pre-hook computes, as the old ``nn.utils.weight_norm``'s, is computed first)."""
    if conv._forward_pre_hooks:
        with torch.no_grad():
            _pre_hooks(conv, torch.empty(0))
    w = conv.weight.detach()
    b = conv.bias.detach() if conv.bias is not None else None
    if out_index is not None:
        w = w[:out_index]
        b = b[:out_index] if b is not None else None
    if in_index is not None:
        w = w[:, :in_index] if isinstance(in_index, int) else w.index_select(1, in_index.to(w.device))
    new = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, stride=conv.stride, padding=conv.padding,
                    dilation=conv.dilation, groups=1, bias=b is not None, padding_mode=conv.padding_mode,
                    device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
    new.train(conv.training)
    return new


def activate(act: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``act(h)`` on the first ``h.shape[1]`` channels: a per-channel ``PReLU(C)`` uses the
    slopes of those channels (its other activations need no slicing)."""
    if isinstance(act, nn.PReLU) and act.num_parameters > 1 and h.shape[1] != act.num_parameters:
        return F.prelu(h, act.weight[: h.shape[1]])
    return act(h)


def static_activation(act: nn.Module, channels: int) -> nn.Module:
    """The activation of a sub-network with ``channels`` channels (a sliced PReLU(C), else a copy)."""
    if isinstance(act, nn.PReLU) and act.num_parameters > 1:
        w = act.weight.detach()
        new = nn.PReLU(channels, device=w.device, dtype=w.dtype)
        with torch.no_grad():
            new.weight.copy_(w[:channels])
        return new
    return copy.deepcopy(act)


def add_residual(res: torch.Tensor, x: torch.Tensor, res_scale=1) -> torch.Tensor:
    """``res * res_scale + x``; in place on `res` when no gradient is recorded (inference
    then allocates no extra feature map per block, as the upstream ``res += x`` does); out of
    place while tracing, so a trace records one graph whatever the grad mode."""
    if torch.is_grad_enabled() or torch.jit.is_tracing():
        return res.mul(res_scale) + x
    if res_scale != 1:
        res.mul_(res_scale)
    return res.add_(x)


def channel_mask(ns: list, channels: int, like: torch.Tensor) -> torch.Tensor:
    """(B, C, 1, 1) mask that keeps the first n_b channels of sample b."""
    n = torch.tensor(ns, device=like.device)
    keep = torch.arange(channels, device=like.device)[None, :] < n[:, None]
    return keep.to(like.dtype)[:, :, None, None]


def dense_input_index(in_channels: int, growth: int, g: int, layers: int, device) -> torch.Tensor:
    """Input columns a dense layer reads after `layers` earlier dense layers at growth ``g``
    (of ``growth``): ``[0, in_channels)`` plus the first ``g`` columns of every earlier
    layer's slot, so each weight column means the same feature at every width."""
    cols = list(range(in_channels)) + [in_channels + j * growth + i for j in range(layers) for i in range(g)]
    return torch.tensor(cols, dtype=torch.long, device=device)


class DenseColumns:
    """Mixin of dense block types (listed before AnySRBlock): ``_input_index(g, layers,
    device)`` cached per block in a plain dict (as the gate caches its layouts; left out of
    pickles and deep copies).  The block sets ``in_channels`` (what its first dense layer
    reads) in ``_adopt``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._index_cache: dict = {}

    def _input_index(self, g: int, layers: int, device) -> torch.Tensor:
        key = (g, layers, device)
        if key not in self._index_cache:
            with torch.inference_mode(False):  # made in inference mode, it must serve training too
                self._index_cache[key] = dense_input_index(self.in_channels, self.channels, g, layers, device)
        return self._index_cache[key]

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_index_cache"] = {}
        return state


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


def check_activation(act, what: str, channels=None):
    """None if `act` is a supported activation (a PReLU with 1 or ``channels`` slopes), else the reason."""
    if not isinstance(act, ACTIVATIONS):
        return f"{what} is {type(act).__name__}, expected an activation ({', '.join(a.__name__ for a in ACTIVATIONS)})"
    if isinstance(act, nn.PReLU) and channels is not None and act.num_parameters not in (1, channels):
        return f"{what} is PReLU({act.num_parameters}) on {channels} channels; expected PReLU(1) or PReLU({channels})"
    return None


class StaticBlock(nn.Module):
    """Marker base of the plain modules ``export_static`` returns (one width, no control flow)."""


class AnySRBlock(nn.Module):
    """Base of every block type.

    A block type sets the class attributes

    * ``family``: its registry name (unique);
    * ``default_lam``: lambda of its gate when ``AnySRConfig.lam`` is None;
    * ``name_pattern`` (optional): a regex on upstream class names that only *adds*
      knowledge: a module whose class name matches but whose structure does not is
      reported as skipped with the reason (structure alone decides support);
    * ``priority`` (optional, default 0): lookup order in the registry;

    and implements ``structure_problem``, ``gated_channels``, ``input_channels``,
    ``_adopt``, ``forward_sliced``, ``forward_masked``, ``export_static`` and
    ``conv_macs_per_pixel`` (see docs/block-types.md); ``forward_grouped`` is generic
    (it only calls ``forward_sliced``).
    """

    family: str = ""
    default_lam: int = 4
    #: regex on the upstream class name (knowledge only; None = match by structure alone)
    name_pattern: str | None = None
    priority: int = 0

    #: what a block type must implement (checked by register_block_type)
    REQUIRED = ("structure_problem", "gated_channels", "input_channels", "_adopt", "forward_sliced",
                "forward_masked", "export_static", "conv_macs_per_pixel")

    # -- matching -------------------------------------------------------------
    @classmethod
    def name_matches(cls, module: nn.Module) -> bool:
        """True when the upstream class name says this is a block of this type."""
        return cls.name_pattern is not None and re.search(cls.name_pattern, type(module).__name__) is not None

    @classmethod
    def structure_problem(cls, module: nn.Module):  # pragma: no cover - abstract
        """None when `module` has this type's structure (layer kinds and shapes), else a
        sentence saying why not."""
        raise NotImplementedError

    @classmethod
    def gated_channels(cls, module: nn.Module) -> int:  # pragma: no cover - abstract
        """Channels the gate weights at full width (C, or the growth of a dense block)."""
        raise NotImplementedError

    @classmethod
    def input_channels(cls, module: nn.Module) -> int:  # pragma: no cover - abstract
        """Channels the upstream block reads (the validation input's channels)."""
        raise NotImplementedError

    @classmethod
    def variant_for(cls, config: AnySRConfig) -> type:
        """The class anysrify builds for this type under `config` (a compat layout, or cls)."""
        return cls

    @classmethod
    def full_width_difference(cls, module: nn.Module, config: AnySRConfig, seed: int = 0) -> float:
        """Max abs difference between `module` and its gate-less conversion at full width on a
        small random input: proves the upstream forward is the residual this type computes.
        0.0 on the meta device (no values to compare)."""
        param = next(module.parameters())
        if param.device.type == "meta":
            return 0.0
        converted = cls(module, config.replace(interweave="none"))
        g = torch.Generator(device="cpu").manual_seed(seed)
        x = torch.randn(2, cls.input_channels(module), 6, 6, generator=g).to(param.device, param.dtype)

        devices = [param.device] if param.device.type == "cuda" else []
        with torch.no_grad(), buffers_kept(module), torch.random.fork_rng(devices=devices):
            # the same random state for both runs: a dropout in a training-mode block draws the same masks
            torch.manual_seed(seed)
            ref = module(x.clone())
            torch.manual_seed(seed)
            out = converted.forward_sliced(x.clone(), converted.channels, torch.ones(2, 2, device=param.device))
        if not isinstance(ref, torch.Tensor) or ref.shape != out.shape:
            return float("inf")
        return float((ref.float() - out.float()).abs().max())

    # -- construction ---------------------------------------------------------
    def __init__(self, block: nn.Module, config: AnySRConfig, state=None):
        super().__init__()
        self.__dict__["_anysr_upstream"] = block  # the upstream module itself, for unanysrify (not a submodule)
        self._adopt(block)
        self.upstream_type = type(block).__name__
        self.channels = self.gated_channels(block)
        self.lam = config.lam_for(type(self))
        self.widths = config.widths
        param = next(block.parameters())
        self.anysr_gate = None
        if config.interweave != "none":
            self.anysr_gate = InterweavingGate(self.channels, self.lam, config.interweave, config.gate,
                                               device=param.device, dtype=param.dtype)
        self.training = block.training
        if self.anysr_gate is not None:
            self.anysr_gate.train(block.training)
        # the model's shared state (never in state_dict); the per-call plan lives in plan.py
        self._anysr_state = state

    def _replicate_for_data_parallel(self):
        # DataParallel runs replicas in worker threads that do not see the caller's
        # use_width / use_scale contexts: the replica carries a snapshot of them

        replica = super()._replicate_for_data_parallel()
        replica.__dict__["_anysr_inherited"] = snapshot(self._anysr_state)
        return replica

    def _adopt(self, block: nn.Module) -> None:  # pragma: no cover - abstract
        """Take over the upstream block's children under their own attribute names."""
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
        scale, widths = plan_for_block(self, x)
        if len(widths) == 1:
            return self.forward_sliced(x, self.width_channels(widths[0]), scale)
        ns = [self.width_channels(w) for w in widths]
        if len(set(ns)) == 1:
            return self.forward_sliced(x, ns[0], scale)
        if len(ns) != x.shape[0]:
            raise ScaleError(f"{len(ns)} per-sample widths for a batch of {x.shape[0]}")
        if self.mixed_path(x) == "grouped":
            return self.forward_grouped(x, ns, scale)
        return self.forward_masked(x, ns, scale)

    def mixed_path(self, x: torch.Tensor) -> str:
        """``"grouped"`` or ``"masked"``: how this call runs a batch of several widths."""
        state = self._anysr_state
        path = state.config.mixed_path if state is not None else "auto"
        if path != "auto":
            return path
        if torch.compiler.is_compiling():
            return "masked"
        recording = torch.is_grad_enabled() and not torch.jit.is_tracing()  # a trace: one graph in both modes
        if recording or x.shape[-2] * x.shape[-1] >= AUTO_GROUPED_MIN_PIXELS:
            return "grouped"
        return "masked"

    def forward_grouped(self, x: torch.Tensor, ns: list, scale: torch.Tensor) -> torch.Tensor:
        """Each width group's ``forward_sliced`` on its sub-batch, results back in batch order.

        One gather sorts the batch by width (stable; skipped when already sorted), the
        groups are contiguous views of it, and one gather restores the order.  Autograd
        sees only index_select / split / cat, so gradients are exactly the per-sample ones.
        """
        order = sorted(range(len(ns)), key=ns.__getitem__)
        sizes, widths = [], []
        for b in order:
            if widths and widths[-1] == ns[b]:
                sizes[-1] += 1
            else:
                widths.append(ns[b])
                sizes.append(1)
        inverse = None
        if order != list(range(len(ns))):
            perm = torch.tensor(order, device=x.device)
            x, scale = x.index_select(0, perm), scale.index_select(0, perm)
            inverse = torch.empty_like(perm)
            inverse[perm] = torch.arange(len(order), device=x.device)
        parts = [self.forward_sliced(xg, n, sg)
                 for xg, sg, n in zip(x.split(sizes), scale.split(sizes), widths)]
        out = torch.cat(parts)
        return out if inverse is None else out.index_select(0, inverse)

    def apply_gate(self, h: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
        if self.anysr_gate is None:
            return h
        gate = self.anysr_gate(h, scale, n)
        return h * gate if torch.is_grad_enabled() or torch.jit.is_tracing() else h.mul_(gate)

    def gate_activation(self, h: torch.Tensor, scale: torch.Tensor, n: int, act) -> torch.Tensor:
        """``act(apply_gate(h, scale, n))``; in training it saves one feature map less for
        backward (gate.gated_activation), so a gated block keeps what the plain block keeps."""
        if self.anysr_gate is None:
            return activate(act, h)
        return gated_activation(h, self.anysr_gate(h, scale, n), act, activate)

    def apply_gate_masked(self, h: torch.Tensor, scale: torch.Tensor, ns: list, mask: torch.Tensor) -> torch.Tensor:
        if self.anysr_gate is None:
            return h
        return h * self.anysr_gate.forward_masked(h, scale, ns, mask)

    def forward_sliced(self, x, n, scale):  # pragma: no cover - abstract
        """The block at ``n`` gated channels for the whole batch (really smaller convolutions)."""
        raise NotImplementedError

    def forward_masked(self, x, ns, scale):  # pragma: no cover - abstract
        """Per-sample widths ``ns``: full-size convolutions with the channels >= n_b zeroed,
        equal to each sample's ``forward_sliced``."""
        raise NotImplementedError

    # -- export ---------------------------------------------------------------
    def export_static(self, n: int, scale=None) -> nn.Module:  # pragma: no cover - abstract
        """A plain module (a :class:`StaticBlock`) computing ``forward_sliced(x, n, scale)``
        with physically sliced weights; its gate is ``self.static_gate(n, scale)``."""
        raise NotImplementedError

    def static_gate(self, n: int, scale=None):
        """The gate at ``n`` channels in closed form (None without a gate); ``scale``:
        an ``(s_h, s_w)`` pair folded into the gate, or None (an input at run time)."""
        return StaticGate(self.anysr_gate, n, scale) if self.anysr_gate is not None else None

    # -- cost -----------------------------------------------------------------
    def conv_macs_per_pixel(self, width: float) -> int:  # pragma: no cover - abstract
        """Multiply-accumulates of the block's convolutions per input pixel at `width`."""
        raise NotImplementedError

    def gate_macs(self, width: float) -> int:
        """MACs of the two gate FC layers at ``width`` (per image, as inference runs them)."""
        if self.anysr_gate is None:
            return 0
        g = self.anysr_gate
        return gate_macs(g.channels, self.gated_channels_at(width), g.lam, g.fc1.weight.shape[0], g.interweave)

    def activations_per_pixel(self, width: float) -> int:
        """Activation evaluations per pixel at ``width`` (one activation over the n channels)."""
        return self.width_channels(width)


__all__ = ["AnySRBlock", "StaticBlock", "add_residual", "sliced_conv", "static_conv", "activate",
           "static_activation", "channel_mask", "dense_input_index", "DenseColumns", "check_conv", "check_activation",
           "ACTIVATIONS"]
