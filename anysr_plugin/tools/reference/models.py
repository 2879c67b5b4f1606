"""Builders of the reference look-alike models by name, and LIIF's coordinate helpers.

Written here from the documented upstream facts (docs/upstream.md); no upstream code
is copied.  Upstream builds every model through a
registry from a spec ``{'name': ..., 'args': {...}}``; :func:`make` (``registry.py``) mirrors
that for the encoders and wrappers defined in this package, and :func:`build_reference` is the
convenient front door::

    model = build_reference("liif-edsr-baseline", n_resblocks=4, n_feats=32)
    model = build_reference("srno-rdn", D=2, C=3, G=16, width=64, blocks=8)

Coordinates follow LIIF's ``make_coord``: pixel centres in [-1, 1], last axis
(row / H, col / W), so ``cell = (2 / H_hr, 2 / W_hr)``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Mapping

import torch
from torch import nn

from ...runtime.errors import ConfigError, shorten
from ..coords import cell_for, make_coord  # noqa: F401  (re-exported: the reference API)
from .registry import ENCODER_NAMES, SRNO_ENCODERS, make

# ----------------------------------------------------------------------------- coordinates


def to_pixel_samples(img: torch.Tensor):
    """``(coord (H*W, 2), rgb (H*W, C))`` of a ``(C, H, W)`` image, row-major (as LIIF)."""
    if img.dim() != 3:
        raise ConfigError(f"to_pixel_samples needs a (C, H, W) image, got {tuple(img.shape)}")
    coord = make_coord(img.shape[-2:])
    rgb = img.reshape(img.shape[0], -1).transpose(0, 1)
    return coord, rgb


# ----------------------------------------------------------------------------- names

#: reference model prefix (``liif-...``, ``srno-...``) -> the upstream model name it computes
WRAPPER_UPSTREAM_NAMES = {"liif": "liif", "srno": "sronet"}


_ENCODER_KEYS = {
    "edsr-baseline": {"n_resblocks", "n_feats", "res_scale", "rgb_range", "shared_act"},
    "edsr": {"n_resblocks", "n_feats", "res_scale", "rgb_range", "shared_act"},
    "rdn": {"G0", "RDNkSize", "RDNconfig", "D", "C", "G"},
    "rcan": {"n_resgroups", "n_resblocks", "n_feats", "reduction", "rgb_range"},
}
_WRAPPER_KEYS = {
    "liif": {"local_ensemble", "feat_unfold", "cell_decode", "hidden_list", "imnet"},
    "srno": {"width", "blocks"},
}

_POSITIVE_INTS = {"n_resblocks", "n_feats", "G0", "D", "C", "G", "RDNkSize", "n_resgroups", "reduction", "width",
                  "blocks"}
_POSITIVE_NUMBERS = {"res_scale", "rgb_range"}
_BOOLS = {"shared_act", "local_ensemble", "feat_unfold", "cell_decode", "imnet"}
#: the largest size argument (channels, blocks, hidden units): beyond it a model cannot be built anyway
MAX_SIZE_ARG = 2**20


def check_model_args(name: str, kwargs: Mapping[str, Any], allowed: set) -> None:
    """ConfigError naming the first unknown or ill-typed size argument of model `name`
    (``--model-arg n_resblocks=abc`` must not reach a constructor)."""
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise ConfigError(f"{name}: unknown argument(s) {shorten(unknown)}; it takes {sorted(allowed)}")
    for k, v in kwargs.items():
        if k in _POSITIVE_INTS:
            ok = isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIZE_ARG
            what = f"a positive integer (at most {MAX_SIZE_ARG})"
        elif k in _POSITIVE_NUMBERS:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and v <= 1e30
            what = "a positive number (at most 1e30)"
        elif k in _BOOLS:
            ok, what = isinstance(v, bool), "true or false"
        elif k == "RDNconfig":
            ok, what = v in ("A", "B"), "'A' or 'B'"
        elif k == "hidden_list":
            ok = isinstance(v, (list, tuple)) and len(v) <= 1024 and all(
                isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= MAX_SIZE_ARG for x in v)
            what = f"a list of positive integers (at most {MAX_SIZE_ARG}), e.g. [256,256]"
        else:
            continue
        if not ok:
            raise ConfigError(f"{name}: argument {k}={shorten(v)} must be {what}")


REFERENCE_NAMES = tuple(f"{w}-{e}" for w in ("liif", "srno") for e in ENCODER_NAMES
                        if not (w == "srno" and e not in SRNO_ENCODERS))


@contextlib.contextmanager
def _seeded(seed: int | None):
    """Initialisation from `seed` (when given) without touching the global RNG."""
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def build_encoder(name: str, seed: int | None = None, **kwargs) -> nn.Module:
    """A bare reference encoder by its registry name (``edsr-baseline``, ``edsr``, ``rdn``, ``rcan``),
    its size arguments checked."""
    if name not in ENCODER_NAMES:
        raise ConfigError(f"unknown reference encoder {shorten(name)}; known: {', '.join(ENCODER_NAMES)}")
    check_model_args(name, kwargs, _ENCODER_KEYS[name])
    with _seeded(seed):
        return make({"name": name, "args": kwargs})


def build_reference(name: str, seed: int | None = None, **kwargs) -> nn.Module:
    """A reference model by name: ``"<liif|srno>-<edsr-baseline|edsr|rdn|rcan>"``.

    Keyword arguments go to the encoder (``n_resblocks``, ``n_feats``, ``res_scale``;
    RDN ``G0``, ``D``, ``C``, ``G``, ``RDNconfig``; RCAN ``n_resgroups``...) or to the
    wrapper (LIIF ``hidden_list``, ``local_ensemble``, ``feat_unfold``, ``cell_decode``,
    ``imnet=False`` for no MLP; SRNO ``width``, ``blocks``).  ``seed`` makes the
    initialisation reproducible without touching the global RNG.
    """
    if not isinstance(name, str) or "-" not in name:
        raise ConfigError(f"reference model name must look like 'liif-edsr-baseline'; got {name!r}")
    wrapper, encoder = name.split("-", 1)
    if wrapper not in _WRAPPER_KEYS or encoder not in ENCODER_NAMES:
        raise ConfigError(f"unknown reference model {name!r}; known: {', '.join(REFERENCE_NAMES)}")
    if wrapper == "srno" and encoder not in SRNO_ENCODERS:
        raise ConfigError(f"SRNO is defined upstream for 64-channel encoders (edsr-baseline, rdn), not {encoder!r}")
    enc_keys, wrap_keys = _ENCODER_KEYS[encoder], _WRAPPER_KEYS[wrapper]
    unknown = sorted(set(kwargs) - enc_keys - wrap_keys)
    if unknown:
        raise ConfigError(f"build_reference({name!r}): unknown argument(s) {unknown}; encoder takes "
                          f"{sorted(enc_keys)}, {wrapper} takes {sorted(wrap_keys)}")
    check_model_args(name, kwargs, enc_keys | wrap_keys)
    enc_spec = {"name": encoder, "args": {"no_upsampling": True,
                                          **{k: v for k, v in kwargs.items() if k in enc_keys}}}
    wargs = {k: v for k, v in kwargs.items() if k in wrap_keys}
    with _seeded(seed):
        if wrapper == "liif":
            hidden = list(wargs.pop("hidden_list", [256, 256, 256, 256]))
            use_imnet = wargs.pop("imnet", True)
            imnet_spec = {"name": "mlp", "args": {"out_dim": 3, "hidden_list": hidden}} if use_imnet else None
            model = make({"name": "liif", "args": {"encoder_spec": enc_spec, "imnet_spec": imnet_spec, **wargs}})
        else:
            model = make({"name": "sronet", "args": {"encoder_spec": enc_spec, **wargs}})
    model.reference_name = name
    return model


__all__ = ["make_coord", "to_pixel_samples", "cell_for", "make", "build_reference", "build_encoder", "REFERENCE_NAMES",
           "ENCODER_NAMES", "WRAPPER_UPSTREAM_NAMES"]
