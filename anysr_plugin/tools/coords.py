"""LIIF-style query coordinates and cells, shared by the adapters, the tools and the references.

Pixel centres in [-1, 1] with the last axis (row / H, col / W), so the cell of an HR
grid is ``(2 / H, 2 / W)``: the convention of every LIIF-derived code base.
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..runtime.errors import ConfigError


def make_coord(shape: Sequence[int], ranges=None, flatten: bool = True) -> torch.Tensor:
    """Coordinates of the pixel centres of a grid of ``shape``.

    Each axis of size ``n`` over the range ``(v0, v1)`` (default (-1, 1)) gets the centres
    ``v0 + (2i + 1) (v1 - v0) / (2n)``.  Returns ``(*shape, len(shape))``, flattened to
    ``(prod(shape), len(shape))`` when ``flatten``.
    """
    axes = []
    for i, n in enumerate(shape):
        n = int(n)
        if n < 1:
            raise ConfigError(f"make_coord: axis {i} has size {n}; sizes must be >= 1")
        v0, v1 = (-1.0, 1.0) if ranges is None else (float(ranges[i][0]), float(ranges[i][1]))
        half = (v1 - v0) / (2 * n)
        axes.append(v0 + half + 2 * half * torch.arange(n, dtype=torch.float32))
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, grid.shape[-1]) if flatten else grid


def cell_for(hr_size: Sequence[int], batch: int = 1, queries: int | None = None) -> torch.Tensor:
    """The cell of an HR grid: ``(B, 2)`` (SRNO) or ``(B, Q, 2)`` (LIIF) filled with (2/H, 2/W)."""
    cell = torch.tensor([2.0 / hr_size[0], 2.0 / hr_size[1]])
    if queries is None:
        return cell.expand(batch, 2).clone()
    return cell.expand(batch, queries, 2).clone()


__all__ = ["make_coord", "cell_for"]
