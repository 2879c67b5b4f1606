"""Adapter for SRNO (``sronet``, 2y7c3/Super-Resolution-Neural-Operator), also the model
the official AnySR release fine-tunes.

Same contract as LIIF (docs/upstream.md, "LIIF family"):
``forward(inp, coord, cell)`` with ``coord`` (B, H, W, 2) and ``cell`` (B, 2), so the
per-sample scale is ``2 / (cell * (H_lr, W_lr))`` (see ``adapters/liif.py``); the blocks
live in ``model.encoder`` (EDSR-baseline or RDN: ``conv00`` hard-codes a 64-channel
encoder).  Differences that matter here:

* SRNO's validation uses ``eval_bsize: 500``, i.e. ``batched_predict`` (``gen_feat``
  first, ``query_rgb`` over HR-row chunks with the whole ``cell``): handled by the
  launcher's ``use_scale`` wrapper and ``defer_features`` like LIIF's test path.
* ``test.py --mcell`` / ``demo.py`` clip the cell by ``max(s/4, 1)``: the gates then see
  ``min(s, 4)`` and the width is the full one for every s > 3.25 (see liif.py).
* SRNO's own top-level ``fc1`` / ``fc2`` are decoder layers, never gate parameters:
  gate tensors are recognised by the ``anysr_`` prefix only.
* The official release's checkpoints (``edsr-anysr-baseline`` or ``rdn-anysr`` encoder inside
  ``sronet``) are converted by ``anysr convert-checkpoint --official`` / ``--to-official``
  (``adapters/official_release.py``); in the compat mode (``anysr_plugin/glue/official.py``) the
  gates see the nominal, unclipped scale.
"""
from __future__ import annotations

import torch
from torch import nn

from ..runtime.methods import register_adapter
from ..tools.coords import cell_for, make_coord
from ..tools.reference.registry import SRNO_ENCODERS
from .liif import LIIFAdapter, looks_srno

SRNO_NAMES = ("sronet",)
SRNO_CLASS_NAMES = ("SRNO", "SRNONet", "SRONet")
#: encoders SRNO's ``conv00`` (266 = (64 + 2) * 4 + 2 inputs) accepts (the one table: reference/registry.py)
SRNO_ENCODER_NAMES = SRNO_ENCODERS


class SRNOAdapter(LIIFAdapter):
    name = "srno"
    upstream_names = SRNO_NAMES
    class_names = SRNO_CLASS_NAMES
    train_script = "train.py"
    encoder_names = SRNO_ENCODER_NAMES
    fresh_on_missing_resume = True  # train.py: `resume` None or a missing file is a fresh run
    repository = "SRNO (2y7c3/Super-Resolution-Neural-Operator)"
    train_patch = 128  # SRNO's LR patch (TrainConfig.patch: 48 LIIF, 50 Meta-SR / ArbSR, 128 SRNO)

    def query_layout(self, model: nn.Module) -> str:
        """SRNO's trainer call takes an HR grid: ``coord`` (B, H, W, 2)."""
        return "grid"

    def slim_decoder(self, model: nn.Module):
        """SRNO's pointwise decoder ``fc2(gelu(fc1(x)))`` (two 1x1 convolutions; ``conv00`` and the
        Galerkin attention stay full)."""
        if all(isinstance(getattr(model, a, None), nn.Module) for a in ("fc1", "fc2")):
            return ("pointwise", ("fc1", "fc2"))
        return None

    def detect(self, model: nn.Module) -> bool:
        return type(model).__name__ in self.class_names or looks_srno(model)

    def query_grid(self, hr_size, batch: int, like: torch.Tensor) -> tuple:
        """SRNO queries the whole HR grid at once: coord (B, H, W, 2), cell (B, 2)."""
        H, W = int(hr_size[0]), int(hr_size[1])
        coord = make_coord((H, W), flatten=False).to(like).unsqueeze(0).expand(batch, H, W, 2)
        return coord, cell_for((H, W), batch).to(like)

    def query_image(self, model: nn.Module, coord, cell, hr_size, chunk: int) -> torch.Tensor:
        # the Galerkin attention mixes all query positions, so the HR grid is one pass (as
        # upstream SRNO's test does); chunking would change the result
        return model.query_rgb(coord, cell)


ADAPTER = SRNOAdapter()


register_adapter(ADAPTER, "srno", "sronet")

__all__ = ["SRNOAdapter", "ADAPTER", "SRNO_NAMES"]
