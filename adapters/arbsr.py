"""ArbSR (LongguangWang/ArbSR: ArbRCAN) adapter.

* Blocks: the RCABs inside ``body.{g}.body.{b}``; the scale-aware plug-ins ``sa_adapt.*``
  (``SA_adapt`` / ``SA_conv``) and ``sa_upsample`` (``SA_upsample``) are left untouched
  (their class names match no block family, and they are checked to be unchanged).
* Scale: the trainer calls ``net.set_scale(scale, scale2)`` (floats; ``scale`` = height,
  ``scale2`` = width) right before ``net(x)``; :func:`~anysr_plugin.runtime.scale_source.wrap_set_scale`
  records the pair, :meth:`ArbSRAdapter.scale_from_call` returns it as the (1, 2) tensor
  ``(s_h, s_w)`` per sample of the batch, asymmetric scales included (the width group uses
  ``max(s_h, s_w)``; Algorithm 1's reset is drawn per sample, docs/design.md item 6).
  Fallback: the ``scale`` / ``scale2`` attributes upstream's ``set_scale`` writes.
* Launcher: the shims of the EDSR-PyTorch family (see ``adapters/metasr.py``) with the
  replacement loader seeded as ``sys.modules['data.dataloader']`` (first-epoch integer
  scales honoured) and ``matplotlib.use('TKAgg')`` in ``trainer.py`` neutralised.
* Checkpoints: bare state dicts.  ``--resume 0 --pre_train FILE`` keeps the file's keys
  the model has and loads strictly, so upstream ``RCAN_BIX4.pt`` / ``model_150.pt`` load
  into the anysrified net with the gates at their identity initialisation, and an AnySR
  ``model_N.pt`` loads completely (``--resume N`` uses ``strict=False``; same result).
  ``--resume -1`` loads nothing upstream (no such branch).
"""
from __future__ import annotations

import torch
from torch import nn

from ..runtime.control import unwrap
from ..runtime.methods import MethodAdapter, register_adapter
from ..runtime.scale_source import AdapterSource
from .metasr import install_edsr_family, per_sample, recorded_scale, wrap_set_scale, write_template


class ArbSRAdapter(MethodAdapter):
    name = "arbsr"
    upstream_names = ("arbrcan",)

    def describe_expected(self) -> str:
        return "expected a net with sa_adapt, sa_upsample and set_scale(scale, scale2)"

    def detect(self, model: nn.Module) -> bool:
        net = unwrap(model)
        return (isinstance(getattr(net, "sa_adapt", None), nn.Module)
                and isinstance(getattr(net, "sa_upsample", None), nn.Module)
                and callable(getattr(net, "set_scale", None)))

    def block_root(self, model: nn.Module) -> nn.Module:
        # forward indexes body[i] and body[-1] (the Sequential `body` itself is never called),
        # so the plan is written by the root hook, which sees every call
        return model

    def prepare(self, model: nn.Module) -> nn.Module:
        """Hook ``set_scale(scale, scale2)`` so the scale reaches the blocks (done by the
        launcher; call it yourself when you drive an ArbSR net outside ``anysr launch``)."""
        return wrap_set_scale(model, "pair")

    def scale_source(self, model: nn.Module):
        return AdapterSource(self.name, "scale from set_scale(scale, scale2) as (s_h, s_w)", kind="set_scale",
                             contract="pair")

    def scale_from_call(self, module: nn.Module, args: tuple, kwargs: dict):
        scale = recorded_scale(module)
        if scale is None:
            s_h, s_w = getattr(module, "scale", None), getattr(module, "scale2", None)
            try:
                scale = torch.tensor([[float(s_h), float(s_w)]]) if s_h is not None and s_w is not None else None
            except (TypeError, ValueError):
                scale = None
        return per_sample(scale, args)

    def install(self, ctx) -> None:
        install_edsr_family(ctx, self, loader_module="data.dataloader", contract="pair", flavor="arbsr")

    def convert_config(self, upstream, out, anysr_config, **options) -> str:
        return write_template(self, out, anysr_config, upstream, "ArbRCAN",
                              "--scale '' --scale2 '' --n_GPUs 1 --data_train DIV2K --resume 0 "
                              "--pre_train model/RCAN_BIX4.pt",
                              "LongguangWang/ArbSR", options, notes=(
                                  "ArbSR's trainer overrides the learning rate itself (epoch 1: 5e-5 on integer "
                                  "scales only; then lr * 2**-(epoch // 30)); --lr_decay is unused upstream",
                                  "boolean flags are type=bool upstream: pass --cpu True / --test_only True, "
                                  "never False",
                                  "evaluate with the same launcher: ... -- main.py ... --test_only True --resume N "
                                  "(anysr launch arbsr --width 0.5|0.7|0.9|1.0 ... fixes the sub-network)"))


ARBSR = register_adapter(ArbSRAdapter(), "arbsr", "arbrcan")

__all__ = ["ArbSRAdapter", "ARBSR"]
