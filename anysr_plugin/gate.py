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

from .errors import ConfigError


def interleave_layout(channels: int, n: int, lam: int, interweave: str = "interleave"):
    """Column indices of the gate input at width ``n`` (of ``channels``).

    Returns ``(feature_cols, scale_cols, length)``: feature ``j`` goes to column
    ``feature_cols[j]``; scale pair ``i`` occupies ``scale_cols[i]`` and ``+1``.
    """
    if interweave == "concat":
        return list(range(n)), [n], n + 2
    chunk = channels // lam
    pairs = n // chunk  # only complete chunks get a pair (Eq. 7, C_last < C_fix: no pair)
    feature_cols = [j + 2 * (j // chunk) for j in range(n)]
    scale_cols = [(i + 1) * chunk + 2 * i for i in range(pairs)]
    return feature_cols, scale_cols, n + 2 * pairs


def gate_input_length(channels: int, width_channels: int, lam: int, interweave: str = "interleave") -> int:
    return interleave_layout(channels, width_channels, lam, interweave)[2]


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
        if interweave == "interleave" and (lam < 1 or channels % lam):
            raise ConfigError(
                f"lam={lam} must divide the gated channel count {channels} (chunk C/lambda must be whole)")
        self.channels, self.lam, self.interweave, self.kind = channels, lam, interweave, kind
        in_full = channels + (2 if interweave == "concat" else 2 * lam)
        self.fc1 = nn.Linear(in_full, 2 * channels, device=device, dtype=dtype)
        self.fc2 = nn.Linear(2 * channels, channels, device=device, dtype=dtype)
        if kind == "identity":
            nn.init.zeros_(self.fc2.weight)
            nn.init.zeros_(self.fc2.bias)
        # per-width column layouts, cached as tensors keyed by (n, device)
        self._layouts: dict = {}

    def extra_repr(self) -> str:
        return f"channels={self.channels}, lam={self.lam}, interweave={self.interweave!r}, kind={self.kind!r}"

    def __getstate__(self):  # keep pickles/deepcopies free of device-bound caches
        state = self.__dict__.copy()
        state["_layouts"] = {}
        return state

    def _layout(self, n: int, device: torch.device):
        key = (n, device)
        if key not in self._layouts:
            feat, scale, length = interleave_layout(self.channels, n, self.lam, self.interweave)
            self._layouts[key] = (torch.tensor(feat, dtype=torch.long, device=device),
                                  torch.tensor(scale, dtype=torch.long, device=device), length)
        return self._layouts[key]

    def activation(self, z: torch.Tensor) -> torch.Tensor:
        return 2.0 * torch.sigmoid(z) if self.kind == "identity" else torch.sigmoid(z)

    def gate_input(self, pooled: torch.Tensor, scale: torch.Tensor, n: int) -> torch.Tensor:
        """Interleaved vector (B, L_n) for pooled features (B, n) and scales (B, 2)."""
        feat, pairs, length = self._layout(n, pooled.device)
        x = pooled.new_zeros(pooled.shape[0], length)
        x[:, feat] = pooled
        if pairs.numel():
            s = scale.to(pooled.dtype)
            x[:, pairs] = s[:, :1].expand(-1, pairs.numel())
            x[:, pairs + 1] = s[:, 1:2].expand(-1, pairs.numel())
        return x

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


def gate_param_count(channels: int, lam: int, interweave: str = "interleave") -> int:
    """Parameters of one gate: fc1 (2C x (C + 2*lam) + 2C) and fc2 (C x 2C + C)."""
    if interweave == "none":
        return 0
    extra = 2 if interweave == "concat" else 2 * lam
    return 2 * channels * (channels + extra) + 2 * channels + channels * 2 * channels + channels

