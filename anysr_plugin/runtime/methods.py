"""The contract every method adapter fulfils, the generic fallback, and the adapter registry.

Why adapters: the core converts blocks by structure and needs no knowledge of a
method; what differs per method is (1) how to recognise its models, (2) which
sub-module holds the blocks (the encoder), (3) how the per-sample scale reaches
the model (LIIF's ``cell``, Meta-SR's ``set_scale``) and (4) how its configs,
checkpoints and trainers look.  Adapters own exactly those four things.

Why here, in the runtime: ``anysrify`` and the tools find a model's adapter by asking this
registry (the table is ``registry.ADAPTERS``); they never import an adapter.  The method
adapters (``anysr_plugin.adapters``, beside the upstream glue) register into it when the
package is imported.  The generic adapter reads the scale by structure (``scale_source.py``).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .control import unwrap
from .errors import AdapterError
from .registry import ADAPTERS
from .scale_source import find_scale_source


class MethodAdapter:
    """Base class; the base itself is the generic adapter (scale source by structure)."""

    #: registry name ("liif", "srno", ...)
    name: str = "generic"
    #: model names in the upstream registry this adapter serves
    upstream_names: tuple = ()
    #: the upstream repository, in words (messages that point at a checkout)
    repository: str = ""
    #: whether :meth:`build_spec` builds the checkpoints' model specs (``--repo`` tools)
    builds_specs: bool = False
    #: LR patch of the method's own fine-tuning recipe (``anysr finetune``'s default; None: the trainer's)
    train_patch: "int | None" = None

    def detect(self, model: nn.Module) -> bool:
        """True if `model` is one this adapter knows (used when adapter=None)."""
        return False

    def block_root(self, model: nn.Module) -> nn.Module:
        """The sub-module whose blocks are converted (e.g. ``model.encoder``)."""
        return model

    def scale_source(self, model: nn.Module):
        """Where the scale of `model`'s calls comes from (a ``scale_source.ScaleSource``),
        or None.  Decided from the structure (forward signature, ``set_scale``); a method
        adapter overrides this only to *add* knowledge."""
        return find_scale_source(model)

    def scale_from_call(self, module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
        """Per-sample scale, a float (B, 2) tensor of (s_h, s_w), read from a call of the
        model's ``forward``; None when this call carries no scale.

        One row per sample: in ``train()`` Algorithm 1's reset is drawn once per row, so a
        (1, 2) tensor means one draw for the whole batch."""
        return None

    # -- what the tools ask (cost, bench, eval, demo, finetune) ------------------
    # The tools never guess a model's kind: they ask its adapter for the arguments of one
    # super-resolution forward and for a whole SR image.

    def sr_inputs(self, model: nn.Module, inp: torch.Tensor, hr_size) -> tuple:
        """``(args, kwargs)`` of one ``model(*args, **kwargs)`` call that super-resolves
        ``inp`` (B, C, h, w) to ``hr_size`` (H, W).  Generic: the model is an encoder that
        takes the LR image alone (its output is features, not an image)."""
        return (inp,), {}

    def super_resolve(self, model: nn.Module, lr: torch.Tensor, hr_size, scale=None,
                      chunk: int = 30000) -> torch.Tensor:
        """SR image (B, C, H, W) in [0, 1] from ``lr`` (B, C, h, w) in [0, 1], through the
        method's own inference path.  ``scale`` is what the gates see (default: HR / LR
        sizes).  The generic adapter has no super-resolution call."""
        raise AdapterError(f"{type(model).__name__} has no super-resolution call known to adapter {self.name!r} "
                           "(an encoder alone, or a model no adapter recognises): pass an SR model, "
                           "or adapter=... naming its method")

    def query_layout(self, model: nn.Module) -> "str | None":
        """How the trainer lays out the HR queries of ``model(inp, coord, cell)``: ``"points"``
        (``coord`` (B, Q, 2)), ``"grid"`` (``coord`` (B, H, W, 2)), or None when the method has no
        such call (the generic adapter: the trainer cannot drive the model)."""
        return None

    def call_sizes(self, args: tuple, kwargs: dict) -> "list | None":
        """``[((h, w) LR size, (H, W) HR size), ...]`` per sample of a super-resolution call of the
        model, or None when the call does not say (read by the official release's policy, which
        snaps the scale to the release's nominal one)."""
        return None

    def slim_decoder(self, model: nn.Module) -> "tuple | None":
        """Where ``decoder="slim"`` finds the implicit decoder: ``("mlp", attr)`` (an MLP with
        ``layers``), ``("pointwise", (attr1, attr2))`` (two 1x1 convolutions) or None."""
        return None

    def build_spec(self, ctx, make, spec, args=None, load_sd: bool = False, top_level: bool = True):
        """``make(spec)`` with AnySR (the model a checkpoint's spec describes, converted and loaded);
        only adapters whose upstream builds models from specs have one."""
        raise AdapterError(f"adapter {self.name!r} builds no model specs")

    def install(self, ctx) -> None:
        """Hook this method into an upstream process before its script runs (the launcher).

        ``ctx`` is an :class:`anysr_plugin.glue.launch.LaunchContext`.  The generic adapter has
        nothing to install."""
        raise AdapterError(f"adapter {self.name!r} has no launcher integration")

    def convert_config(self, upstream: "str | None", out: str, anysr_config, **options) -> str:
        """Write an upstream training config (or a template) carrying the AnySR settings;
        returns the path written (``anysr convert-config --method NAME``)."""
        raise AdapterError(f"adapter {self.name!r} has no config conversion")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


GENERIC = ADAPTERS.register("generic", MethodAdapter())


def sizes_scale(lr: torch.Tensor, hr_size) -> tuple:
    """``(H / h, W / w)``: the scale a super-resolution from ``lr`` to ``hr_size`` performs."""
    return (int(hr_size[0]) / lr.shape[-2], int(hr_size[1]) / lr.shape[-1])


def find_tensor_arg(args: tuple, kwargs: dict, position: int, name: str) -> Any:
    """Argument `name` of a forward call, passed by position or keyword (None if absent)."""
    if name in kwargs:
        return kwargs[name]
    if len(args) > position:
        return args[position]
    return None


# ---------------------------------------------------------------------------
# the registry


def register_adapter(adapter: MethodAdapter, *names: str) -> MethodAdapter:
    """Register `adapter` under each of `names` (default: ``adapter.name``); a name already
    registered is refused (AdapterError naming its adapter; ``unregister_adapter`` it first)."""
    if not isinstance(adapter, MethodAdapter):
        raise AdapterError(f"register_adapter expects a MethodAdapter, got {adapter!r}")
    names = names or (adapter.name,)
    return ADAPTERS.register(names[0], adapter, aliases=names[1:])


def unregister_adapter(*names: str) -> None:
    """Remove the adapters registered under `names`."""
    for name in names:
        ADAPTERS.unregister(name)


def available_adapters() -> list:
    return ADAPTERS.names()


def get_adapter(name: "str | MethodAdapter | None") -> MethodAdapter:
    if isinstance(name, MethodAdapter):
        return name
    if name is None:
        return GENERIC
    return ADAPTERS.get(name)


def all_adapters() -> list:
    """Every registered adapter once (aliases folded), in registration order."""
    return ADAPTERS.values()


def detect_adapter(model: nn.Module) -> MethodAdapter:
    """The first registered adapter that recognises `model`, else the generic one."""
    return next((a for a in all_adapters() if a.detect(model)), GENERIC)


def adapter_for_upstream(name: str) -> "MethodAdapter | None":
    """The adapter serving upstream registry name `name` (a checkpoint spec's ``name``): the one
    registered under `name` when its ``upstream_names`` hold it, else the first registered one
    whose ``upstream_names`` do; None when none does."""
    own = ADAPTERS.get(name) if name in ADAPTERS else None
    if own is not None and name in own.upstream_names:
        return own
    return next((a for a in ADAPTERS.values() if name in a.upstream_names), None)


def adapter_for(model: nn.Module) -> MethodAdapter:
    """The adapter a converted model was converted with, else the detected one."""
    state = getattr(unwrap(model), "_anysr_state", None)
    return state.adapter if state is not None else detect_adapter(unwrap(model))


__all__ = ["MethodAdapter", "GENERIC", "sizes_scale", "find_tensor_arg", "register_adapter", "unregister_adapter",
           "available_adapters", "get_adapter", "all_adapters", "detect_adapter", "adapter_for_upstream", "adapter_for"]
