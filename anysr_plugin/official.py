"""The official AnySR release (CrispyFeSo4/AnySR): checkpoint key map and opt-in compatibility.

Facts from research/upstream-liif-family.md section 7 (release commit 201f773):

* Only ``sronet`` with an ``edsr-anysr-baseline`` (or ``rdn-anysr``) encoder is released.
* EDSR block keys ``encoder.body.{i}.conv1|conv2|fc1|fc2.{weight,bias}``; ``fc1`` / ``fc2``
  are 1x1 convolutions, weights ``(128, 72, 1, 1)`` and ``(64, 128, 1, 1)``.  Ours keep the
  upstream names ``body.{i}.body.0`` / ``body.2`` and hold the gate as ``nn.Linear`` under
  ``body.{i}.anysr_gate.fc1`` / ``fc2`` (weights ``(128, 72)`` / ``(64, 128)``).  The
  interleave (a scale pair after every 16 of 64 channels = lambda 4, only after complete
  chunks, ``fc1`` columns a prefix, ``fc2`` rows ``[:n]``, GAP on the pre-ReLU ``conv1``
  output, ``sigmoid``) is the paper's, i.e. our ``gate="paper"``.

Compatibility mode (``AnySRConfig(compat="official")``, never the default) reproduces the
release's *inference* semantics where they differ from the paper:

1. width lookup on the 0.1 grid: ``max(s_h, s_w)`` in 1.1-1.7 -> widths[0], 1.8-2.5 ->
   widths[1], 2.6-3.2 -> widths[2]; anything else, **including scales off the 0.1 grid**
   (1.75, 2.05, 1.0, 4.1, x6 ...), the full network; no training-time reset (the
   release's reset is dead code);
2. the gate's scale pair is **negated** when the first decimal of ``max(s_h, s_w)`` is odd
   (1.1, 1.3, ..., 3.9, 4.1); off-grid scales keep the sign;
3. the encoder applies ``sub_mean`` to its input (the release's EDSR does; LIIF/SRNO's
   EDSR has the module but skips it);
4. RDN widths 0.7 / 0.8 / 0.9 / 1.0 (:data:`OFFICIAL_RDN_WIDTHS`) and the release's RDB
   layout (``blocks/official_rdb.py``: dense layers 4-7 sliced with prefix inputs, the gate
   on the last ``2g`` channels of the dense concatenation, ``fc1`` 144 -> 256, ``fc2``
   256 -> 128), which anysrify builds for RDBs in compat mode only.

``rdn-anysr`` checkpoints: the gate keys are ``RDBs.{i}.fc1`` / ``fc2`` (1x1 convolutions,
``(256, 144, 1, 1)`` / ``(128, 256, 1, 1)``) -> ``RDBs.{i}.anysr_gate.fc1`` / ``fc2``;
the release's RDN also holds a trainable ``sub_mean`` (applied to the encoder's input) and
an unused ``add_mean``, which LIIF/SRNO's RDN lacks: they become the encoder's
``anysr_sub_mean`` / ``anysr_add_mean`` (created by :func:`prepare_official_model`), so
the round trip is lossless.

A scale is "on the grid" when ``|10 s - round(10 s)| < 1e-3``: the release compares
float32 values against the list [1.1, ..., 4.0]; ours come from ``cell`` and carry
float error, hence the tolerance.  The release rounds the *training* scale to 0.1 before
the lookup; our scale is the effective one read from ``cell`` (``round(L s) / L``), so
compat mode is meant for running and evaluating release weights, not for retraining
them bug-for-bug.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import nn

from .config import AnySRConfig
from .errors import CheckpointError

OFFICIAL_EDSR_WIDTHS = (0.5, 0.7, 0.9, 1.0)
OFFICIAL_RDN_WIDTHS = (0.7, 0.8, 0.9, 1.0)
#: scale groups of the release in tenths: 1.1-1.7, 1.8-2.5, 2.6-3.2
OFFICIAL_GROUPS_TENTHS = ((11, 17), (18, 25), (26, 32))
GRID_TOLERANCE = 1e-3

#: release encoder names -> the plain upstream encoder they were fine-tuned from
OFFICIAL_ENCODERS = {"edsr-anysr-baseline": "edsr-baseline", "edsr-anysr": "edsr", "rdn-anysr": "rdn"}

_BLOCK_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?body\.\d+\.)(?P<layer>conv1|conv2|fc1|fc2)\.(?P<kind>weight|bias)$")
_OUR_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?body\.\d+\.)(?P<layer>body\.0|body\.2|anysr_gate\.fc1|anysr_gate\.fc2)"
                      r"\.(?P<kind>weight|bias)$")
_RDB_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?RDBs\.\d+\.)(?P<layer>fc1|fc2)\.(?P<kind>weight|bias)$")
_OUR_RDB_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?RDBs\.\d+\.)anysr_gate\.(?P<layer>fc1|fc2)\.(?P<kind>weight|bias)$")
_MEAN_KEY = re.compile(r"^(?P<prefix>(?:.*\.)?)(?P<anysr>anysr_)?(?P<layer>sub_mean|add_mean)\.(?P<kind>weight|bias)$")
#: the release's RDN mean shifts, held by our (mean-shift-less) RDN encoder under these names
RDN_MEAN_MODULES = {"sub_mean": "anysr_sub_mean", "add_mean": "anysr_add_mean"}
_TO_OURS = {"conv1": "body.0", "conv2": "body.2", "fc1": "anysr_gate.fc1", "fc2": "anysr_gate.fc2"}
_TO_OFFICIAL = {v: k for k, v in _TO_OURS.items()}


def official_encoder_family(encoder_name: str):
    """``"edsr"`` / ``"rdn"`` for a release encoder name, else None."""
    return {"edsr-anysr-baseline": "edsr", "edsr-anysr": "edsr", "rdn-anysr": "rdn"}.get(encoder_name)


def official_config(encoder: str = "edsr-baseline", **changes) -> AnySRConfig:
    """The AnySRConfig that reproduces the release (``compat="official"``)."""
    rdn = encoder.startswith("rdn")
    base = dict(widths=OFFICIAL_RDN_WIDTHS if rdn else OFFICIAL_EDSR_WIDTHS, scale_bounds=(1.75, 2.55, 3.25),
                lam=8 if rdn else 4, reset_prob=0.0, gate="paper", interweave="interleave", compat="official")
    base.update(changes)
    return AnySRConfig(**base)


# ---------------------------------------------------------------------------
# runtime semantics (called from control.py when config.compat == "official")


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


def _sub_mean_pre_hook(module: nn.Module, args: tuple):
    return (module.sub_mean(args[0]),) + tuple(args[1:])


def _anysr_sub_mean_pre_hook(module: nn.Module, args: tuple):
    return (module.anysr_sub_mean(args[0]),) + tuple(args[1:])


def release_mean_shift(sign: int, rgb_range: float = 1.0, device=None, dtype=None) -> nn.Conv2d:
    """A 1x1 conv initialised as the release's (RCAN-style) ``MeanShift``: DIV2K mean, std 1."""
    conv = nn.Conv2d(3, 3, 1, device=device, dtype=dtype)
    mean = torch.tensor((0.4488, 0.4371, 0.4040))
    with torch.no_grad():
        conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        conv.bias.copy_(sign * rgb_range * mean)
    return conv


def prepare_official_model(model: nn.Module, adapter=None) -> nn.Module:
    """Compat item 3: make the encoder apply ``sub_mean`` to its input, as the release does.

    An encoder without ``sub_mean`` that holds the release's RDB layout (LIIF/SRNO's RDN)
    gets the release RDN's mean shifts as ``anysr_sub_mean`` (trainable, applied to the
    input) and ``anysr_add_mean`` (unused in forward, frozen; kept so release checkpoints
    round-trip).  Call after anysrify and before loading converted weights."""
    from .adapters import get_adapter
    from .blocks import OfficialRDB

    from .control import get_state

    if adapter is None:
        adapter = get_state(model).adapter
    enc = get_adapter(adapter).block_root(model)
    if getattr(enc, "_anysr_official_sub_mean", False):
        return model
    if isinstance(getattr(enc, "sub_mean", None), nn.Module):
        enc.register_forward_pre_hook(_sub_mean_pre_hook)
        enc._anysr_official_sub_mean = True
    elif any(isinstance(m, OfficialRDB) for m in enc.modules()):
        param = next(enc.parameters())
        enc.anysr_sub_mean = release_mean_shift(-1, device=param.device, dtype=param.dtype)
        enc.anysr_add_mean = release_mean_shift(+1, device=param.device, dtype=param.dtype).requires_grad_(False)
        enc.register_forward_pre_hook(_anysr_sub_mean_pre_hook)
        enc._anysr_official_sub_mean = True
    return model


# ---------------------------------------------------------------------------
# checkpoint key map


def _gate_weight_to_linear(k: str, v: torch.Tensor) -> torch.Tensor:
    if v.dim() == 4:
        if tuple(v.shape[2:]) != (1, 1):
            raise CheckpointError(f"{k}: a gate weight must be a 1x1 convolution, got shape {tuple(v.shape)}")
        v = v.reshape(v.shape[0], v.shape[1])
    return v


def _rdn_encoder_prefixes(keys, pattern) -> set:
    """Prefixes (e.g. ``encoder.``) of the RDNs whose RDBs hold gate keys matching `pattern`."""
    return {m["prefix"].rsplit("RDBs.", 1)[0] for k in keys if (m := pattern.match(k))}


def official_to_ours(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Rename a release state dict to ours: ``body.{i}.conv1/conv2`` -> ``body.{i}.body.0/body.2``,
    ``body.{i}.fc1/fc2`` and ``RDBs.{i}.fc1/fc2`` (1x1 conv) -> ``... .anysr_gate.fc1/fc2``
    (Linear), an RDN's ``sub_mean`` / ``add_mean`` -> ``anysr_sub_mean`` / ``anysr_add_mean``;
    others unchanged."""
    rdn_prefixes = _rdn_encoder_prefixes(state_dict, _RDB_KEY)
    out = {}
    for k, v in state_dict.items():
        m = _BLOCK_KEY.match(k)
        if m is not None:
            layer = m["layer"]
            if layer in ("fc1", "fc2") and m["kind"] == "weight":
                v = _gate_weight_to_linear(k, v)
            out[f"{m['prefix']}{_TO_OURS[layer]}.{m['kind']}"] = v
        elif (m := _RDB_KEY.match(k)) is not None:
            if m["kind"] == "weight":
                v = _gate_weight_to_linear(k, v)
            out[f"{m['prefix']}anysr_gate.{m['layer']}.{m['kind']}"] = v
        elif (m := _MEAN_KEY.match(k)) is not None and not m["anysr"] and m["prefix"] in rdn_prefixes:
            out[f"{m['prefix']}{RDN_MEAN_MODULES[m['layer']]}.{m['kind']}"] = v
        else:
            out[k] = v
    return out


def ours_to_official(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """The inverse of :func:`official_to_ours` (blocks holding an ``anysr_gate`` only)."""
    gated = {m["prefix"] for k in state_dict if (m := _OUR_KEY.match(k)) and "anysr_gate" in m["layer"]}
    rdn_prefixes = _rdn_encoder_prefixes(state_dict, _OUR_RDB_KEY)
    out = {}
    for k, v in state_dict.items():
        if (r := _OUR_RDB_KEY.match(k)) is not None:
            if r["kind"] == "weight" and v.dim() == 2:
                v = v.reshape(v.shape[0], v.shape[1], 1, 1)
            out[f"{r['prefix']}{r['layer']}.{r['kind']}"] = v
            continue
        if (r := _MEAN_KEY.match(k)) is not None and r["anysr"] and r["prefix"] in rdn_prefixes:
            out[f"{r['prefix']}{r['layer']}.{r['kind']}"] = v
            continue
        m = _OUR_KEY.match(k)
        if m is None or m["prefix"] not in gated:
            out[k] = v
            continue
        if m["layer"].startswith("anysr_gate") and m["kind"] == "weight" and v.dim() == 2:
            v = v.reshape(v.shape[0], v.shape[1], 1, 1)
        out[f"{m['prefix']}{_TO_OFFICIAL[m['layer']]}.{m['kind']}"] = v
    return out


def official_state_dict_kind(state_dict: Mapping[str, torch.Tensor]):
    """``"edsr"`` (``body.N.fc1`` gate keys), ``"rdn"`` (``RDBs.N.fc1``) or None."""
    if any(_BLOCK_KEY.match(k) and k.rsplit(".", 2)[-2] == "fc1" for k in state_dict):
        return "edsr"
    if any((m := _RDB_KEY.match(k)) and m["layer"] == "fc1" for k in state_dict):
        return "rdn"
    return None


def is_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> bool:
    return official_state_dict_kind(state_dict) is not None


def convert_official_spec(spec: Mapping) -> dict:
    """An upstream model spec for a release checkpoint's ``model`` entry (without ``sd``):
    the encoder name mapped back to the plain upstream one, ``path`` keys dropped, and the
    compat AnySR config under ``anysr``."""
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise CheckpointError("the release checkpoint has no model spec ({'model': {'name', 'args', 'sd'}})")
    if spec["name"] != "sronet":
        raise CheckpointError(f"release model {spec['name']!r}: only `sronet` checkpoints are released/supported")
    args = dict(spec.get("args") or {})
    enc = dict(args.get("encoder_spec") or {})
    enc_name = enc.get("name")
    if enc_name not in OFFICIAL_ENCODERS:
        raise CheckpointError(f"release encoder {enc_name!r} is not one of {sorted(OFFICIAL_ENCODERS)}")
    if enc_name == "edsr-anysr":
        raise CheckpointError(f"release encoder {enc_name!r}: only edsr-anysr-baseline and rdn-anysr are supported "
                              "(edsr-anysr crashes at width 1.0 in the release)")
    enc_args = {k: v for k, v in (enc.get("args") or {}).items()}
    enc_args["no_upsampling"] = True
    if enc_name == "rdn-anysr":
        if enc_args.get("RDNconfig", "B") != "B":
            raise CheckpointError(f"release encoder rdn-anysr with RDNconfig={enc_args['RDNconfig']!r}: only config "
                                  "'B' works in the release (its RDB layout hard-codes 8 dense layers)")
        enc_args.pop("rgb_range", None)  # LIIF/SRNO's rdn takes no rgb_range (it has no mean shift)
    args["encoder_spec"] = {"name": OFFICIAL_ENCODERS[enc_name], "args": enc_args}
    out = {k: v for k, v in spec.items() if k not in ("sd", "path", "args")}
    out["args"] = args
    out["anysr"] = official_config(enc_name).to_dict()
    return out


__all__ = ["OFFICIAL_EDSR_WIDTHS", "OFFICIAL_RDN_WIDTHS", "official_config", "official_group", "official_widths",
           "official_sign", "official_gate_scale", "prepare_official_model", "official_to_ours", "ours_to_official",
           "is_official_state_dict", "official_state_dict_kind", "official_encoder_family", "convert_official_spec",
           "release_mean_shift"]
