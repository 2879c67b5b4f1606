"""The official AnySR release (CrispyFeSo4/AnySR) as a compatibility mode: ``compat="official"``.

What the release does where it differs from the paper (its code as of commit 201f773, read, not
copied) is reproduced opt-in, ``AnySRConfig(compat="official")``, never by default:

1. width lookup on the 0.1 grid: ``max(s_h, s_w)`` in 1.1-1.7 -> widths[0], 1.8-2.5 ->
   widths[1], 2.6-3.2 -> widths[2]; anything else, **including scales off the 0.1 grid**
   (1.75, 2.05, 1.0, 4.1, x6 ...), the full network; no training-time reset (the
   release's reset is dead code);
2. the gate's scale pair is **negated** when the first decimal of ``max(s_h, s_w)`` is odd
   (1.1, 1.3, ..., 3.9, 4.1); off-grid scales keep the sign;
3. the encoder applies ``sub_mean`` to its input (the release's EDSR does; LIIF/SRNO's
   EDSR has the module but skips it): ``prepare_official_model``;
4. RDN widths 0.7 / 0.8 / 0.9 / 1.0 (:data:`OFFICIAL_RDN_WIDTHS`) and the release's RDB
   layout (``blocks/official_rdb.py``: dense layers 4-7 sliced with prefix inputs, the gate
   on the last ``2g`` channels of the dense concatenation, ``fc1`` 144 -> 256, ``fc2``
   256 -> 128), which anysrify builds for RDBs in compat mode only;
5. the scale of a call is the release's nominal one (:func:`release_call_scale`): its gates
   get the **nominal** scale of the test set (``benchmark-2.3`` -> 2.3, ``div2k-6`` -> 6), even
   when ``--mcell`` clips the cell by ``max(s / 4, 1)``, and its test data has
   ``h_lr = floor(H / s)`` and ``h_hr = round(h_lr * s)``, so ``h_hr / h_lr`` is not ``s``: the
   HR size comes from the call (the method adapter's ``call_sizes``: ``coord`` for the LIIF
   family and SRNO), and ``h_hr / h_lr`` snaps to the 0.1-grid scale ``s`` with
   ``round(h_lr * s) == h_hr`` on both axes when there is one.

A scale is "on the grid" when ``|10 s - round(10 s)| < 1e-3``: the release compares
float32 values against the list [1.1, ..., 4.0]; ours carry float error, hence the
tolerance.  The release rounds the *training* scale to 0.1 before the lookup; ours is the
effective one (``round(L s) / L``, snapped as in 5. only when a grid scale fits), so compat
mode is meant for running and evaluating release weights, not for retraining them
bug-for-bug.

The release's checkpoints (its key names, model specs, mean shifts) are method knowledge:
``adapters/official_release.py`` converts them both ways (``anysr convert-checkpoint
--official`` / ``--to-official``).
"""
from __future__ import annotations

import math

import torch

from ..runtime.blocks import AnySRRDB, OfficialRDB
from ..runtime.config import AnySRConfig
from ..runtime.policy import POLICIES, PaperPolicy
from ..tools.reference.registry import ENCODER_BLOCKS

OFFICIAL_EDSR_WIDTHS = (0.5, 0.7, 0.9, 1.0)
OFFICIAL_RDN_WIDTHS = (0.7, 0.8, 0.9, 1.0)
#: scale groups of the release in tenths: 1.1-1.7, 1.8-2.5, 2.6-3.2
OFFICIAL_GROUPS_TENTHS = ((11, 17), (18, 25), (26, 32))
GRID_TOLERANCE = 1e-3

#: the release's encoder registry names -> the plain upstream encoder they were fine-tuned from
OFFICIAL_ENCODERS = {"edsr-anysr-baseline": "edsr-baseline", "edsr-anysr": "edsr", "rdn-anysr": "rdn"}


def release_block_family(encoder: str):
    """The block type (``"edsr"``, ``"rdb"``) of an encoder, by the release's or the plain registry
    name (``rdn-anysr`` or ``rdn``); None for a name neither registry knows."""
    return ENCODER_BLOCKS.get(OFFICIAL_ENCODERS.get(encoder, encoder))


def official_config(encoder: str = "edsr-baseline", **changes) -> AnySRConfig:
    """The AnySRConfig that reproduces the release (``compat="official"``) for `encoder` (the
    release's or the plain registry name; RDN encoders get the release's RDN widths and lambda)."""
    rdn = release_block_family(encoder) == "rdb"
    base = dict(widths=OFFICIAL_RDN_WIDTHS if rdn else OFFICIAL_EDSR_WIDTHS, scale_bounds=(1.75, 2.55, 3.25),
                lam=8 if rdn else 4, reset_prob=0.0, gate="paper", interweave="interleave", compat="official")
    base.update(changes)
    return AnySRConfig(**base)


# ---------------------------------------------------------------------------
# runtime semantics (ReleasePolicy, asked by plan.py and control.py when config.compat == "official")


def _tenths(s: float):
    """round(10 s) if s lies on the 0.1 grid, else None."""
    t = round(s * 10.0)
    return t if abs(s * 10.0 - t) < GRID_TOLERANCE else None


def official_group(s: float) -> int:
    """Index of the release's scale group of ``s`` (3 = full network)."""
    t = _tenths(float(s))
    if t is not None:
        for i, (lo, hi) in enumerate(OFFICIAL_GROUPS_TENTHS):
            if lo <= t <= hi:
                return i
    return len(OFFICIAL_GROUPS_TENTHS)


def official_widths(scale: torch.Tensor, widths: tuple) -> list:
    """Per-sample widths by the release's 0.1-grid lookup (off-grid -> full width)."""
    out = []
    for m in scale.max(dim=1).values.tolist():
        g = official_group(m)
        out.append(widths[g] if g < len(widths) - 1 else widths[-1])
    return out


def official_sign(s: float) -> float:
    """-1 when the first decimal of ``s`` is odd (on the 0.1 grid), else +1."""
    t = _tenths(float(s))
    return -1.0 if (t is not None and t % 2 == 1) else 1.0


def official_gate_scale(scale: torch.Tensor) -> torch.Tensor:
    """The scale pair the release's gate sees: ``(s_h, s_w)`` negated for odd first decimals."""
    signs = torch.tensor([official_sign(m) for m in scale.max(dim=1).values.tolist()],
                         dtype=scale.dtype, device=scale.device)
    return scale * signs[:, None]


def _grid_tenths(lr: int, hr: float) -> set:
    """Tenths ``t`` such that the release's test data (``h_hr = round(h_lr * s)``, ``s = t/10``)
    gives ``hr`` from ``lr``; empty when ``hr`` is not a whole size."""
    if hr != int(hr) or lr < 1:
        return set()
    hr = int(hr)
    lo, hi = math.floor((hr - 0.5) / lr * 10) - 1, math.ceil((hr + 0.5) / lr * 10) + 1
    return {t for t in range(max(lo, 1), hi + 1) if round(lr * (t / 10)) == hr}


def nominal_scale(lr_size, hr_size) -> tuple:
    """The release's nominal ``(s_h, s_w)`` for LR ``(h, w)`` and HR ``(H, W)`` sizes.

    The 0.1-grid scale consistent with both axes (nearest to ``H/h``, ``W/w`` when several
    fit a tiny input); per axis when no single one fits; ``H/h``, ``W/w`` where none does
    (an off-grid scale: the release runs the full network for it anyway)."""
    eff = [hr / lr for lr, hr in zip(lr_size, hr_size)]
    cands = [_grid_tenths(lr, hr) for lr, hr in zip(lr_size, hr_size)]
    mean = sum(eff) / 2

    def nearest(ts, target):
        return min(ts, key=lambda t: (abs(t / 10 - target), t)) / 10

    both = cands[0] & cands[1]
    if both:
        t = nearest(both, mean)
        return t, t
    return tuple(nearest(c, e) if c else e for c, e in zip(cands, eff))


def release_call_scale(adapter, args: tuple, kwargs: dict, call_scale: torch.Tensor) -> torch.Tensor:
    """Compat item 5: the per-sample scale (B, 2) the release's gates see, the nominal scale of the
    LR and HR sizes the method adapter reads from the call (``adapter.call_sizes``: for the LIIF
    family and SRNO, the HR size from ``coord``, which a clipped cell no longer tells);
    `call_scale` (read by the scale source) when the adapter cannot say."""
    sizes = adapter.call_sizes(args, kwargs)
    if sizes is None:
        return call_scale
    return torch.tensor([nominal_scale(lr, hr) for lr, hr in sizes], dtype=call_scale.dtype,
                        device=call_scale.device)


class ReleasePolicy(PaperPolicy):
    """``compat="official"``: the release's width lookup (item 1), gate sign (2), nominal call
    scale (5) and RDB layout (4), attached to a model at conversion (``AnySRState.policy``)."""

    compat = "official"

    def call_scale(self, state, args: tuple, kwargs: dict, scale: torch.Tensor) -> torch.Tensor:
        return release_call_scale(state.adapter, args, kwargs, scale)

    def widths(self, state, scale: torch.Tensor, training: bool) -> list:
        return official_widths(scale, state.config.widths)  # no training-time reset

    def gate_scale(self, scale: torch.Tensor) -> torch.Tensor:
        return official_gate_scale(scale)

    def block_type(self, cls: type) -> type:
        return OfficialRDB if issubclass(cls, AnySRRDB) else cls


RELEASE_POLICY = POLICIES.register(ReleasePolicy.compat, ReleasePolicy())

__all__ = ["ReleasePolicy", "RELEASE_POLICY", "OFFICIAL_EDSR_WIDTHS", "OFFICIAL_RDN_WIDTHS", "OFFICIAL_ENCODERS", "release_block_family", "official_config", "official_group", "official_widths",
           "official_sign", "official_gate_scale", "nominal_scale", "release_call_scale"]
