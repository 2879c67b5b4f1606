"""The reference look-alikes by upstream registry name, and the one table of encoder names.

Upstream LIIF, LTE and SRNO build every model through a registry from a spec
``{'name': ..., 'args': {...}}``; :func:`make` mirrors that for the look-alikes, each of which
registers its builder in :data:`MODELS` under the upstream name when its module is imported
(``encoders.py``, ``liif.py``, ``srno.py``).

:data:`ENCODER_BLOCKS` is the one table of the encoders those registries know, by name, with the
block type their residual blocks convert to.  The look-alike encoders register under these
names; the cost tools, the LIIF / SRNO adapters (``convert-config``) and the official release's
checkpoint format read the same table.
"""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from ...runtime.errors import ConfigError
from ...runtime.registry import Registry

#: upstream registry name -> the look-alike's builder (``fn(**args) -> nn.Module``)
MODELS = Registry("reference model", ConfigError)

#: the encoders of the LIIF-family registries -> the block type their residual blocks convert to
ENCODER_BLOCKS = {"edsr-baseline": "edsr", "edsr": "edsr", "rdn": "rdb", "rcan": "rcab"}
ENCODER_NAMES = tuple(ENCODER_BLOCKS)
#: the encoders SRNO takes: its ``conv00`` reads a 64-channel feature map (EDSR-baseline, RDN)
SRNO_ENCODERS = ("edsr-baseline", "rdn")


def encoder_channels(name: str, args: Mapping[str, Any]) -> int:
    """The channels a gate sees in encoder `name` built with spec `args` (the upstream defaults:
    EDSR-baseline 64, EDSR 256 features; RDN config A 32, B 64; RCAN 64)."""
    if name == "edsr":
        return int(args.get("n_feats", 256))
    if name == "rdn":
        return {"A": 32, "B": 64}.get(str(args.get("RDNconfig", "B")), 64)
    return int(args.get("n_feats", 64))  # edsr-baseline, rcan


def make(spec: Mapping[str, Any], args: Mapping[str, Any] | None = None) -> nn.Module:
    """Build ``spec['name']`` with ``spec['args']`` (updated by ``args``), as upstream ``models.make``."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ConfigError(f"a model spec is a mapping with a 'name' key, got {spec!r}")
    kwargs = dict(spec.get("args") or {})
    kwargs.update(args or {})
    return MODELS.get(spec["name"])(**kwargs)


__all__ = ["MODELS", "ENCODER_BLOCKS", "ENCODER_NAMES", "SRNO_ENCODERS", "encoder_channels", "make"]
