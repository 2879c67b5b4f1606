"""Cost of a (sub-)network: multiply-accumulates and parameters.

MACs are counted as the paper counts FLOPs for Tables IV/V: one multiply-add of every
convolution and linear layer that actually runs (so a sliced sub-network is charged
for its sliced convolutions only).  Counting uses PyTorch's FlopCounterMode on a real
forward, which sees the ``F.conv2d`` calls of the sliced path, and halves its FLOP
count (it counts a multiply-add as two).
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .control import use_scale, use_width


def count_flops(model: nn.Module, *inputs, width: float | None = None, scale=None, **kwargs) -> int:
    """Multiply-accumulates of convolutions and linears for one forward of ``model(*inputs)``.

    ``width`` fixes the sub-network, ``scale`` gives the scale explicitly (both only for
    AnySR models).  Runs in eval mode without gradients; the model's mode is restored.
    """
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
        return counter.get_total_flops() // 2
    finally:
        model.train(was_training)


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["count_flops", "count_params"]
