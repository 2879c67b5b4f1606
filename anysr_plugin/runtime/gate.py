"""The scale-aware interweaving gate (paper Sec. III-C, Eq. 6-8).

Pool the first sub-block's output (n = floor(C*w) channels), insert the scale pair
(s_h, s_w) after every complete chunk of C/lambda features, and run a two-layer
MLP ``fc1: C + 2*lambda -> 2C``, ReLU, ``fc2: 2C -> C`` whose activation weights the
features channel-wise.  Sub-network ``w`` uses ``fc1.weight[:, :n + 2*floor(n*lambda/C)]``
and ``fc2`` rows ``[:n]`` (Eq. 8): because the pair always follows a *complete* chunk,
the interleaved vector at width w is a prefix of the full-width one, so the columns
that read the scale are the same for every width.

Layout helpers return column indices so the interleaved vector is built by one
scatter (works for a whole batch and for per-sample widths alike):

    full width, C=64, lambda=4:  [f0..f15, sh, sw, f16..f31, sh, sw, ..., f48..f63, sh, sw]
    w=0.9 (n=57):                [f0..f15, sh, sw, ..., f32..f47, sh, sw, f48..f56]   (63 = prefix)

``interweave="concat"`` is the "w/o FI" ablation: ``[f0..f(n-1), sh, sw]`` with
``fc1: C + 2 -> 2C`` sliced to ``n + 2`` columns (Eq. 6).  ``"none"`` ("w/o ASE")
means no gate at all; blocks then hold no ``anysr_gate``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import native_gate
from .errors import ConfigError, ScaleError


def chunk_bounds(channels: int, lam: int) -> list:
    """Feature counts after which a scale pair goes (Eq. 7): ``floor(C * i / lambda)`` for
    ``i = 1..lambda``.  Equal chunks of ``C / lambda`` when lambda divides C; otherwise the
    paper's positions give chunks whose sizes differ by one (C = 147, lambda = 4: after
    36, 73, 110, 147), so any channel count converts with the configured lambda."""
    lam = max(1, min(lam, channels))
    return [channels * i // lam for i in range(1, lam + 1)]


def describe_chunks(channels: int, lam: int) -> str:
    """``"lambda=4 (chunk 16)"``, or the uneven chunking actually used."""
    if channels % lam == 0:
        return f"lambda={lam} (chunk {channels // lam})"
    bounds = chunk_bounds(channels, lam)
    return f"lambda={len(bounds)} (pairs after features {', '.join(map(str, bounds))} of {channels})"


def interleave_layout(channels: int, n: int, lam: int, interweave: str = "interleave"):
    """Column indices of the gate input at width ``n`` (of ``channels``).

    Returns ``(feature_cols, scale_cols, length)``: feature ``j`` goes to column
    ``feature_cols[j]``; scale pair ``i`` occupies ``scale_cols[i]`` and ``+1``.
    """
    if interweave == "concat":
        return list(range(n)), [n], n + 2
    bounds = [b for b in chunk_bounds(channels, lam) if b <= n]  # only complete chunks get a pair (Eq. 7)
    feature_cols, pair = [], 0
    for j in range(n):
        while pair < len(bounds) and j >= bounds[pair]:
            pair += 1
        feature_cols.append(j + 2 * pair)
    scale_cols = [b + 2 * i for i, b in enumerate(bounds)]
    return feature_cols, scale_cols, n + 2 * len(bounds)


def gate_input_length(channels: int, width_channels: int, lam: int, interweave: str = "interleave") -> int:
    return interleave_layout(channels, width_channels, lam, interweave)[2]


#: above this many feature elements a multi-threaded run keeps the eager gate (ATen spreads the
#: pooling and the product over the threads; the native call is one thread)
NATIVE_MAX_ELEMENTS = 1 << 18

#: how many Python dispatch modes are active (FlopCounterMode, recorders); 0 when unknown
_dispatch_depth = getattr(torch._C, "_len_torch_dispatch_stack", lambda: 0)


def eager_no_grad() -> bool:
    """True for a plain eager call without gradients: not traced, not compiled.  Only then do
    blocks and gates take their no-grad forms (in place, fewer ops): a trace or a compile must
    record the one graph that serves both grad modes."""
    # torch._C._is_tracing is what torch.jit.is_tracing returns outside TorchScript, without its two
    # Python frames (this runs several times per block); a compile stops at is_compiling first
    return not torch.is_grad_enabled() and not torch.compiler.is_compiling() and not torch._C._is_tracing()


class InterweavingGate(nn.Module):
    """Gate of one AnySR block; parameters ``fc1.{weight,bias}``, ``fc2.{weight,bias}``.

    ``kind="identity"``: ``2*sigmoid`` with ``fc2`` zero-initialised, so the gate is
    exactly 1 at conversion and the converted model computes what the original did.
    ``kind="paper"``: ``sigmoid`` with PyTorch's default init (the paper's form).
    """

    def __init__(self, channels: int, lam: int, interweave: str = "interleave", kind: str = "identity",
                 device=None, dtype=None):
        super().__init__()
        if interweave not in ("interleave", "concat"):
            raise ConfigError(f"InterweavingGate: interweave={interweave!r} has no gate")
        if interweave == "interleave" and lam < 1:
            raise ConfigError(f"lam={lam} must be a positive integer")
        self.channels, self.lam, self.interweave, self.kind = channels, lam, interweave, kind
        in_full = channels + (2 if interweave == "concat" else 2 * len(chunk_bounds(channels, lam)))
        self.fc1 = nn.Linear(in_full, 2 * channels, device=device, dtype=dtype)
        self.fc2 = nn.Linear(2 * channels, channels, device=device, dtype=dtype)
        if kind == "identity":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)
        # per-width column layouts, cached as tensors keyed by (n, device)
        self._layouts: dict = {}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, lam={self.lam}, interweave={self.interweave!r}, kind={self.kind!r}"

    def _apply(self, fn, *args, **kwargs):
        # a move or a cast gives the parameters new memory: drop the caches that point into the old
        self._layouts = {}
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):  # keep pickles/deepcopies free of device-bound caches
        state = self.__dict__.copy()
        state["_layouts"] = {}
        return state

    def _layout(self, n: int, device: torch.device):
        key = (n, device)
        if key not in self._layouts:
            feat, scale, length = interleave_layout(self.channels, n, self.lam, self.interweave)
            with torch.inference_mode(False):  # a cache made in inference mode must serve training too
                self._layouts[key] = (torch.tensor(feat, dtype=torch.long, device=device),
                                      torch.tensor(scale, dtype=torch.long, device=device), length)
        return self._layouts[key]

    def activation(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z) * 2.0 if self.kind == "identity" else torch.sigmoid(z)

    def gate_input(self, pooled: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
        """Interleaved vector (B, L_n) for pooled features (B, n) and scales (B, 2)."""
        if self.interweave == "interleave" and self.channels % self.lam == 0:
            # equal chunks: [chunk features, s_h, s_w] * k, then the incomplete chunk (a few views and
            # two cats, cheaper than scattering into a zero vector)
            chunk = self.channels // self.lam
            k = n // chunk
            b = pooled.shape[0]
            pairs = scale.to(pooled.dtype).reshape(b, 1, 2).expand(b, k, 2)
            x = torch.cat((pooled[:, : k * chunk].reshape(b, k, chunk), pairs), 2).reshape(b, k * (chunk + 2))
            return x if k * chunk == n else torch.cat((x, pooled[:, k * chunk:]), 1)
        feat, pairs, length = self._layout(n, pooled.device)
        x = pooled.new_zeros(pooled.shape[0], length)
        x[:, feat] = pooled
        if pairs.numel():
            s = scale.to(pooled.dtype)
            x[:, pairs] = s[:, :1].expand(-1, pairs.numel())
            x[:, pairs + 1] = s[:, 1:2].expand(-1, pairs.numel())
        return x

    def fc1_parts(self, n: int):
        """``fc1`` at width n split by what its columns read: ``W_feat`` (2C, n), the feature
        columns, and ``W_scale`` (2C, 2), the sums of the s_h and of the s_w columns (zeros when
        no pair is in use).  The interleaved input enters ``fc1`` linearly, so
        ``fc1(interleave(f, s)) = f W_feat^T + s W_scale^T + b1``: the sliced product without
        building the vector (the export's :class:`StaticGate`)."""
        w1 = self.fc1.weight.detach()
        feat, pairs, _ = self._layout(n, w1.device)
        return w1[:, feat], torch.stack((w1[:, pairs].sum(1), w1[:, pairs + 1].sum(1)), 1)

    def native_step(self, scale: torch.Tensor, n: int, batch: int):
        """What :func:`run_native_step` needs to run this gate natively (native_gate.py) in this
        call at width n, or None when the call cannot: not a plain eager call without
        gradients, a dispatch mode active (FLOP counting sees the paper's form), no native
        function, parameters or scale not on the CPU as float32.  A block makes it once per call
        (through :meth:`_native_step`), so it does only what one call needs: the C arguments are
        kept per width and their parameter addresses compared (in-place updates need nothing; a
        changed memory, a new parameter, rebuilds them)."""
        return self._native_step(scale, n, batch) if eager_no_grad() else None

    def _native_step(self, scale: torch.Tensor, n: int, batch: int):
        """:meth:`native_step` for a caller that has checked :func:`eager_no_grad` (a block's
        no-grad call, which checks it once for all of its steps)."""
        if _dispatch_depth():
            return None
        fn = native_gate.kernel()
        if fn is None:
            return None
        fc1, fc2 = self._modules["fc1"]._parameters, self._modules["fc2"]._parameters
        w1, b1, w2, b2 = fc1["weight"], fc1["bias"], fc2["weight"], fc2["bias"]
        key = (w1.data_ptr(), b1.data_ptr(), w2.data_ptr(), b2.data_ptr())
        cached = self._layouts.get(("native", n))
        if cached is None or cached[0] != key:
            cached = self._native_args(n, key, w1, b1, w2, b2)
        address = cached[1]
        if address is None or scale.dim() != 2 or scale.shape[1] != 2:
            return None
        rows = scale.shape[0]
        if rows != batch and rows != 1:
            return None
        if not (scale.is_cpu and scale.dtype is torch.float32 and scale.is_contiguous()):
            scale = scale.to("cpu", torch.float32).contiguous()
        return fn, address, n, batch, scale, 2 if rows == batch else 0

    def _native_args(self, n: int, key: tuple, w1, b1, w2, b2) -> tuple:
        """``(key, C arguments' address or None, what must stay alive)`` of this gate at width n
        (native_gate.gate_args), kept in ``_layouts``; `key`: the parameters' addresses, which
        the next call compares; no address when the parameters are not contiguous float32 on
        the CPU."""
        address = keep = None
        if all(p.is_cpu and p.dtype is torch.float32 and p.is_contiguous() for p in (w1, b1, w2, b2)):
            cols, pairs, length = self._layout(n, w1.device)
            address, keep = native_gate.gate_args(n, w1.detach(), b1.detach(), w2.detach(), b2.detach(), cols, pairs,
                                                  length, 2.0 if self.kind == "identity" else 1.0)
        cached = self._layouts[("native", n)] = (key, address, keep)
        return cached

    def forward(self, feat: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
        """Gate (B, n, 1, 1) for features (B, n, H, W) of one width n (Eq. 8)."""
        pooled = feat.mean(dim=(2, 3))
        x = self.gate_input(pooled, scale, n)
        h = F.relu(F.linear(x, self.fc1.weight[:, : x.shape[1]], self.fc1.bias))
        z = F.linear(h, self.fc2.weight[:n], self.fc2.bias[:n])
        return self.activation(z)[:, :, None, None]

    def forward_masked(self, feat: torch.Tensor, scale: torch.Tensor, ns: list, mask: torch.Tensor) -> torch.Tensor:
        """Gate (B, C, 1, 1) for full-size features whose channels >= n_b are zero.

        Builds each sample's width-n_b interleaved vector inside the full-length
        layout (unused columns stay zero), so ``fc1`` over the full matrix gives
        exactly the sliced product; rows of ``fc2`` beyond n_b are masked out.
        """
        pooled = feat.mean(dim=(2, 3))
        full = self.fc1.weight.shape[1]
        x = pooled.new_zeros(pooled.shape[0], full)
        for n in sorted(set(ns)):
            rows = torch.tensor([b for b, nb in enumerate(ns) if nb == n], device=feat.device)
            part = self.gate_input(pooled[rows, :n], scale[rows], n)
            x[rows, : part.shape[1]] = part
        h = F.relu(F.linear(x, self.fc1.weight, self.fc1.bias))
        z = F.linear(h, self.fc2.weight, self.fc2.bias)
        return self.activation(z)[:, :, None, None] * mask


class _GatedActivation(torch.autograd.Function):
    """``act(h * g)`` for a gate ``g > 0`` and ``act`` ReLU or LeakyReLU, saving only its
    output and ``g``: autograd's ``act(h * g)`` also keeps ``h`` (for ``dL/dg``), one extra
    feature map per gated block.  Both activations are positively homogeneous, so with
    ``z = h * g``: ``dL/dh = act'(z) dy g`` and ``dL/dg = sum_hw act'(z) dy z / g`` with
    ``z`` read back from the output (``y`` where ``y > 0``, ``y / slope`` elsewhere)."""

    @staticmethod
    def forward(ctx, h, g, slope):
        z = h * g
        y = torch.where(z > 0, z, z * slope) if slope else torch.relu(z)
        ctx.slope = slope
        ctx.save_for_backward(y, g)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, g = ctx.saved_tensors
        slope = ctx.slope
        pos = y > 0
        if slope:
            dz = torch.where(pos, dy, dy * slope)
            z = torch.where(pos, y, y / slope)
        else:
            dz = dy * pos
            z = y
        dh = dz * g
        dg = (dz * z).sum(dim=tuple(range(2, y.dim())), keepdim=True)
        # g == 0 only where a sigmoid underflowed: its derivative there is 0, so 0 is exact
        dg = torch.where(g > 0, dg / torch.where(g > 0, g, torch.ones_like(g)), torch.zeros_like(dg))
        return dh, dg.sum_to_size(g.shape), None


def gated_activation(h: torch.Tensor, gate: torch.Tensor, act, apply=None) -> torch.Tensor:
    """``act(h * gate)``; with gradients recorded and ``act`` a ReLU / LeakyReLU module, the
    memory-lean :class:`_GatedActivation` (same values, same gradients, one feature map less
    saved for backward).  ``apply(act, z)`` runs any other activation (default ``act(z)``).
    While tracing: plain out-of-place ops, one graph whatever the grad mode."""
    apply = apply or (lambda a, z: a(z))
    if torch.jit.is_tracing():
        return apply(act, h * gate)
    if torch.is_grad_enabled() and (h.requires_grad or gate.requires_grad):
        if type(act) is nn.ReLU:
            return _GatedActivation.apply(h, gate, 0.0)
        if type(act) is nn.LeakyReLU and act.negative_slope > 0:
            return _GatedActivation.apply(h, gate, float(act.negative_slope))
        return apply(act, h * gate)
    return apply(act, h.mul_(gate))


def run_native_step(step: tuple, feat: torch.Tensor, act: int = native_gate.ACT_NONE, slope: float = 0.0) -> bool:
    """``feat <- act(feat * gate(feat))`` in place by one native call, with `step` from
    :meth:`InterweavingGate.native_step`; True when done, False (feat untouched) for features
    the C function does not take (not contiguous float32 CPU of the step's width and batch, or
    a large map in a multi-threaded run, which the eager ops spread over the threads)."""
    fn, address, n, batch, scale, stride = step
    shape = feat.shape
    if len(shape) != 4 or shape[1] != n or shape[0] != batch or feat.dtype is not torch.float32 \
            or not feat.is_cpu or not feat.is_contiguous() \
            or (feat.numel() > NATIVE_MAX_ELEMENTS and torch.get_num_threads() > 1):
        return False
    ptr = feat.data_ptr()
    return fn(ptr, ptr, batch, shape[2] * shape[3], scale.data_ptr(), stride, act, slope, address) == 0


def gate_macs(channels: int, n: int, lam: int, hidden: int, interweave: str = "interleave") -> int:
    """MACs of one gate call at ``n`` channels (per image): ``fc1`` over the interleaved vector and
    ``fc2`` back to n (Table V's FC column: 0.035 M FLOPs at full width, 0.024 M at x2)."""
    if interweave == "none":
        return 0
    return gate_input_length(channels, n, lam, interweave) * hidden + hidden * n


def gate_param_count(channels: int, lam: int, interweave: str = "interleave") -> int:
    """Parameters of one gate: fc1 (2C x (C + 2*lam) + 2C) and fc2 (C x 2C + C)."""
    if interweave == "none":
        return 0
    extra = 2 if interweave == "concat" else 2 * len(chunk_bounds(channels, lam))
    return 2 * channels * (channels + extra) + 2 * channels + channels * 2 * channels + channels



class StaticGate(nn.Module):
    """The gate of one width in closed form, for exported sub-networks:
    ``act(fc2(relu(fc1(gap(h)) + fc1_scale(s))))``, multiplied onto ``h``.

    The interleaved gate input enters ``fc1`` linearly, so
    ``fc1(interleave(f, s)) = W_feat f + W_scale s + b1`` with ``W_feat`` the feature
    columns and ``W_scale`` the sums of the s_h and of the s_w columns: exactly the
    sliced computation without a scatter.  ``fc1``: n -> 2C (plus the folded scale term
    in its bias when ``scale`` is a fixed ``(s_h, s_w)`` pair); ``fc1_scale``: 2 -> 2C
    without bias, absent when folded (else the exported model's root sets
    ``scale_input`` per call); ``fc2``: 2C -> n (the first n rows).
    """

    def __init__(self, gate: InterweavingGate, n: int, scale=None):
        super().__init__()
        w_feat, w_scale = gate.fc1_parts(n)
        w1 = gate.fc1.weight
        b1 = gate.fc1.bias.detach().clone()
        hidden = w1.shape[0]
        self.kind = gate.kind
        self.channels = n
        self.fc1 = nn.Linear(n, hidden, device=w1.device, dtype=w1.dtype)
        with torch.no_grad():
            self.fc1.weight.copy_(w_feat)
        self.folded_scale = None
        if scale is not None:
            pair = torch.as_tensor(scale, dtype=torch.float32).flatten()
            if pair.numel() != 2:
                raise ScaleError(f"a folded scale must be one (s_h, s_w) pair, got {scale!r}")
            # the runtime gate sees the float32 plan scale cast to the block's dtype: fold the same value
            s = pair.to(device=w1.device, dtype=w1.dtype)
            b1 = b1 + (w_scale @ s)
            self.folded_scale = tuple(float(v) for v in pair.tolist())
            self.fc1_scale = None
        else:
            self.fc1_scale = nn.Linear(2, hidden, bias=False, device=w1.device, dtype=w1.dtype)
            with torch.no_grad():
                self.fc1_scale.weight.copy_(w_scale)
        with torch.no_grad():
            self.fc1.bias.copy_(b1)
        self.fc2 = nn.Linear(hidden, n, device=w1.device, dtype=w1.dtype)
        with torch.no_grad():
            self.fc2.weight.copy_(gate.fc2.weight.detach()[:n])
            self.fc2.bias.copy_(gate.fc2.bias.detach()[:n])
        # the exported model's root sets this per call when the scale is not folded
        self.scale_input = None

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kind={self.kind!r}, folded_scale={self.folded_scale}"

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        pooled = h.mean(dim=(2, 3))
        z = self.fc1(pooled)
        if self.fc1_scale is not None:
            s = self.scale_input
            if s is None:
                raise ScaleError("this exported sub-network was exported without a fixed scale: call it "
                                 "with scale=(s_h, s_w) (or export with export_subnet(..., scale=s))")
            z = z + self.fc1_scale(s.to(z.dtype))
        z = self.fc2(F.relu(z))
        a = 2.0 * torch.sigmoid(z) if self.kind == "identity" else torch.sigmoid(z)
        return h * a[:, :, None, None]
