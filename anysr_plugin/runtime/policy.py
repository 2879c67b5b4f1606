"""The width/scale policy: how a call's scale becomes its widths and the scale its gates see.

Why an object: the paper's rule is the default, and a compatibility mode (``AnySRConfig.compat``)
replaces parts of it (``compat="official"``: the official release's 0.1-grid lookup, sign flip,
nominal call scale and RDB layout).  The runtime must not know those modes, so the model's state
holds a policy object (``AnySRState.policy``) and ``plan.py`` / ``control.py`` / the block planner
ask it.  A mode's policy is defined by the layer that knows the mode and registered here by
name (``glue/official.py`` registers ``"official"``); :func:`policy_for` attaches it at conversion.
"""
from __future__ import annotations

import torch

from .errors import ConfigError
from .registry import Registry


class PaperPolicy:
    """The paper's rule: the scale group's width (``config.width_for_scale(max(s_h, s_w))``),
    Algorithm 1's reset in ``train()``, the call's scale as read and as the gates see it, and
    every block type as registered."""

    #: the ``AnySRConfig.compat`` value this policy implements
    compat = None

    def call_scale(self, state, args: tuple, kwargs: dict, scale: torch.Tensor) -> torch.Tensor:
        """The per-sample scale (B, 2) of a call, from what its scale source read."""
        return scale

    def widths(self, state, scale: torch.Tensor, training: bool) -> list:
        """Per-sample widths for `scale` (B, 2) (Algorithm 1 line 4 in training: reset to the full
        width with ``reset_prob``, per sample or, with ``reset="batch"``, once per call)."""
        cfg = state.config
        group = [cfg.width_for_scale(float(s)) for s in scale.max(dim=1).values.tolist()]
        if training and cfg.reset_prob > 0:
            draws = 1 if cfg.reset == "batch" else len(group)
            reset = (torch.rand(draws, generator=state.generator) < cfg.reset_prob).tolist() * (len(group) // draws)
            group = [1.0 if r else w for w, r in zip(group, reset)]
        return group

    def gate_scale(self, scale: torch.Tensor) -> torch.Tensor:
        """The scale pair (B, 2) the gates see for a call at `scale`."""
        return scale

    def block_type(self, cls: type) -> type:
        """The class anysrify builds where block type `cls` converts a module."""
        return cls

    def __repr__(self) -> str:
        return f"<{type(self).__name__} compat={self.compat!r}>"


PAPER = PaperPolicy()

#: policies of the compatibility modes by their ``AnySRConfig.compat`` name
POLICIES = Registry("compatibility policy", ConfigError)


def policy_for(compat) -> PaperPolicy:
    """The policy of ``AnySRConfig.compat`` (None: the paper's)."""
    return PAPER if compat is None else POLICIES.get(compat)


__all__ = ["PaperPolicy", "PAPER", "POLICIES", "policy_for"]
