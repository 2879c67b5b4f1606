"""The official AnySR release's checkpoints (CrispyFeSo4/AnySR): key map, model spec, mean shifts.

What the release's checkpoints are (its code as of commit 201f773, read, not copied):

* Only ``sronet`` (SRNO) with an ``edsr-anysr-baseline`` (or ``rdn-anysr``) encoder is released.
* EDSR block keys ``encoder.body.{i}.conv1|conv2|fc1|fc2.{weight,bias}``; ``fc1`` / ``fc2``
  are 1x1 convolutions, weights ``(128, 72, 1, 1)`` and ``(64, 128, 1, 1)``.  Ours keep the
  upstream names ``body.{i}.body.0`` / ``body.2`` and hold the gate as ``nn.Linear`` under
  ``body.{i}.anysr_gate.fc1`` / ``fc2`` (weights ``(128, 72)`` / ``(64, 128)``).  The
  interleave (a scale pair after every 16 of 64 channels = lambda 4, only after complete
  chunks, ``fc1`` columns a prefix, ``fc2`` rows ``[:n]``, GAP on the pre-ReLU ``conv1``
  output, ``sigmoid``) is the paper's, i.e. our ``gate="paper"``.
* Its ``test.py`` builds a checkpoint with ``models[spec['name']](**spec['args'])`` and a
  strict ``load_state_dict(spec['sd'])``; the ``sronet`` constructor first builds the
  encoder with ``make(encoder_spec, load_sd=True)``, which opens ``encoder_spec['path']``
  (an upstream-format checkpoint) -- so that file must exist.  Its registry knows
  ``edsr-anysr-baseline(n_resblocks, n_feats, res_scale, scale, no_upsampling, rgb_range)``
  and ``rdn-anysr(G0, RDNkSize, RDNconfig, scale, no_upsampling, rgb_range)``, not the
  plain ``edsr-baseline`` / ``rdn`` (:func:`release_spec` writes its spec).
* ``rdn-anysr`` checkpoints: the gate keys are ``RDBs.{i}.fc1`` / ``fc2`` (1x1 convolutions,
  ``(256, 144, 1, 1)`` / ``(128, 256, 1, 1)``) -> ``RDBs.{i}.anysr_gate.fc1`` / ``fc2``;
  the release's RDN also holds a trainable ``sub_mean`` (applied to the encoder's input) and
  an unused ``add_mean``, which LIIF/SRNO's RDN lacks: they become the encoder's
  ``anysr_sub_mean`` / ``anysr_add_mean`` (created by :func:`prepare_official_model`), so
  the round trip is lossless.

Running release weights (the compatibility mode itself, ``compat="official"``) is
``anysr_plugin/glue/official.py``; this module only knows the release's files and layout.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..glue.official import OFFICIAL_ENCODERS, official_config, release_block_family
from ..runtime.blocks import OfficialRDB
from ..runtime.config import AnySRConfig
from ..runtime.control import get_state
from ..runtime.errors import AnySRError, CheckpointError
from ..runtime.methods import get_adapter

#: the release's key layouts by block type: EDSR blocks (``body.N.fc1``) or RDN's RDBs (``RDBs.N.fc1``)
_KIND = {"edsr": "edsr", "rdb": "rdn"}
#: the release's encoders that run (its edsr-anysr crashes at width 1.0)
RELEASE_RUNS = ("edsr-anysr-baseline", "rdn-anysr")

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
    """``"edsr"`` / ``"rdn"`` (its key layout) for a release encoder name, else None."""
    return _KIND.get(release_block_family(encoder_name)) if encoder_name in OFFICIAL_ENCODERS else None


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
    if enc_name not in RELEASE_RUNS:
        raise CheckpointError(f"release encoder {enc_name!r}: only edsr-anysr-baseline and rdn-anysr are supported "
                              "(edsr-anysr crashes at width 1.0 in the release)")
    enc_args = {k: v for k, v in (enc.get("args") or {}).items()}
    enc_args["no_upsampling"] = True
    if official_encoder_family(enc_name) == "rdn":
        if enc_args.get("RDNconfig", "B") != "B":
            raise CheckpointError(f"release encoder rdn-anysr with RDNconfig={enc_args['RDNconfig']!r}: only config "
                                  "'B' works in the release (its RDB layout hard-codes 8 dense layers)")
        enc_args.pop("rgb_range", None)  # LIIF/SRNO's rdn takes no rgb_range (it has no mean shift)
    args["encoder_spec"] = {"name": OFFICIAL_ENCODERS[enc_name], "args": enc_args}
    out = {k: v for k, v in spec.items() if k not in ("sd", "path", "args")}
    out["args"] = args
    out["anysr"] = official_config(enc_name).to_dict()
    return out



# ---------------------------------------------------------------------------
# ours -> the release's own checkpoint (anysr convert-checkpoint --to-official)

#: our upstream encoder name -> the release's registry name
RELEASE_ENCODER_NAMES = {OFFICIAL_ENCODERS[name]: name for name in RELEASE_RUNS}
#: keyword arguments the release's factories accept
RELEASE_ENCODER_ARGS = {
    "edsr-anysr-baseline": ("n_resblocks", "n_feats", "res_scale", "scale", "no_upsampling", "rgb_range"),
    "rdn-anysr": ("G0", "RDNkSize", "RDNconfig", "scale", "no_upsampling", "rgb_range"),
}
RELEASE_SRONET_ARGS = ("encoder_spec", "width", "blocks")
#: args our look-alike encoders accept that the release's do not: dropped when they hold these values
_DROPPABLE_ARGS = {"edsr-baseline": {"shared_act": False}, "rdn": {"D": 16, "C": 8, "G": 64}}
#: AnySR config fields that decide what the weights compute (reset_prob, seed, rdb_gate and
#: fallback_scale do not: compat mode never resets, always builds the release's RDB layout,
#: and the release always has a scale)
_COMPAT_FIELDS = ("compat", "widths", "scale_bounds", "lam", "gate", "interweave")
#: gate weight shapes of the release's blocks (fc1, fc2)
_RELEASE_GATE_SHAPES = {"edsr": ((128, 72), (64, 128)), "rdn": ((256, 144), (128, 256))}


class OfficialCompatError(CheckpointError):
    """The checkpoint cannot become a release checkpoint; ``differences`` lists each reason."""

    def __init__(self, source, differences):
        self.differences = list(differences)
        super().__init__(f"{source}: the official release cannot run this checkpoint as trained: "
                         + "; ".join(self.differences)
                         + ". Only a model fine-tuned in compatibility mode converts (AnySRConfig = "
                           "anysr_plugin.official.official_config(encoder); with convert-config: --compat official "
                           "--gate paper, for RDN also --widths 0.7,0.8,0.9,1.0 --lam 8); keep this one in our format")


def _gated_blocks(sd: Mapping[str, torch.Tensor], family: str) -> dict:
    """{block prefix: (fc1 weight shape, fc2 weight shape)} of the gates in `sd` (ours)."""
    pattern = re.compile(r"^(?P<p>(?:.*\.)?(?:body|RDBs)\.\d+\.)anysr_gate\.(?P<l>fc1|fc2)\.weight$")
    out = {}
    for k, v in sd.items():
        if (m := pattern.match(k)) is not None:
            shapes = out.setdefault(m["p"], [None, None])
            shapes[0 if m["l"] == "fc1" else 1] = tuple(v.shape[:2])
    return {k: tuple(v) for k, v in out.items()}


def release_differences(spec: Mapping, sd: Mapping[str, torch.Tensor]) -> list:
    """Every way `spec` (ours, with its ``anysr:`` entry) and `sd` (our key names) differ from
    what the release's ``sronet`` + ``edsr-anysr-baseline`` / ``rdn-anysr`` runs; [] when none."""
    diffs = []
    if not isinstance(spec, Mapping):
        return ["no model spec ({'model': {'name', 'args', 'anysr'}})"]
    if spec.get("name") != "sronet":
        diffs.append(f"model name: found {spec.get('name')!r}, the release has only 'sronet'")
    args = spec.get("args") if isinstance(spec.get("args"), Mapping) else {}
    enc = args.get("encoder_spec") if isinstance(args.get("encoder_spec"), Mapping) else {}
    enc_name, enc_args = enc.get("name"), enc.get("args") if isinstance(enc.get("args"), Mapping) else {}
    family = official_encoder_family(RELEASE_ENCODER_NAMES.get(enc_name))
    if family is None:
        diffs.append(f"encoder: found {enc_name!r}, the release fine-tunes 'edsr-baseline' (as edsr-anysr-baseline) "
                     "or 'rdn' (as rdn-anysr) only")
    for k in sorted(set(args) - set(RELEASE_SRONET_ARGS)):
        diffs.append(f"sronet arg {k!r}: the release's sronet takes only {', '.join(RELEASE_SRONET_ARGS)}")
    if family is not None:
        release_name = RELEASE_ENCODER_NAMES[enc_name]
        droppable = _DROPPABLE_ARGS[enc_name]
        for k in sorted(set(enc_args) - set(RELEASE_ENCODER_ARGS[release_name])):
            if k in droppable and enc_args[k] == droppable[k]:
                continue
            need = f"must be {droppable[k]!r} (the release's)" if k in droppable else "is not one of its arguments"
            diffs.append(f"encoder arg {k}={enc_args[k]!r}: {need} for the release's {release_name}")
        required = {"no_upsampling": True}
        required.update({"n_feats": 64, "res_scale": 1} if family == "edsr" else {"G0": 64, "RDNconfig": "B"})
        for k, v in required.items():
            found = enc_args.get(k, v if k != "no_upsampling" else False)
            if found != v:
                diffs.append(f"encoder arg {k}: found {found!r}, the release needs {v!r}")
    section = spec.get("anysr")
    if section is None:
        diffs.append("the spec has no `anysr:` entry (not an AnySR checkpoint written by anysr_plugin)")
        cfg = None
    else:
        try:
            cfg = AnySRConfig.from_dict(section)
        except AnySRError as exc:
            diffs.append(f"anysr entry: {exc}")
            cfg = None
    if cfg is not None and family is not None:
        want = official_config(enc_name)
        block_family = release_block_family(enc_name)
        for field in _COMPAT_FIELDS:
            found, need = getattr(cfg, field), getattr(want, field)
            if field == "lam":
                found, need = cfg.lam_for(block_family), want.lam_for(block_family)
            if found != need:
                diffs.append(f"anysr.{field}: found {found!r}, the release needs {need!r}")
    if family is not None:
        gates = _gated_blocks(sd, family)
        fc1, fc2 = _RELEASE_GATE_SHAPES[family]
        if not gates:
            diffs.append("the weights hold no anysr_gate tensors")
        for prefix, shapes in sorted(gates.items()):
            if shapes != (fc1, fc2):
                layout = "RDB layout" if family == "rdn" else "gate"
                diffs.append(f"{layout} of {prefix.rstrip('.')}: gate weights {shapes[0]} / {shapes[1]}, the release's "
                             f"are {fc1} / {fc2}")
                break
        unit = r"body\.\d+\.body\.0\.weight$" if family == "edsr" else r"RDBs\.\d+\.LFF\.weight$"
        blocks = {k[:k.rindex("body.0.weight" if family == "edsr" else "LFF.weight")] for k in sd
                  if re.search(unit, k)}
        if gates and blocks - set(gates):
            diffs.append(f"gated blocks: {len(blocks & set(gates))} of {len(blocks)} "
                         f"{'residual blocks' if family == 'edsr' else 'RDBs'}, the release gates every one")
        if family == "rdn" and not any(k.endswith("anysr_sub_mean.weight") for k in sd):
            diffs.append("the RDN has no anysr_sub_mean (the release's RDN applies a trainable sub_mean; "
                         "compat-mode models get one from prepare_official_model)")
    return diffs


def release_spec(spec: Mapping, path: str) -> dict:
    """The release's own model spec (no ``sd``) for our compat-mode `spec`: ``sronet`` with an
    ``edsr-anysr-baseline`` / ``rdn-anysr`` encoder and the release's arguments only.  Both
    ``path`` entries name `path`: the release's ``sronet`` constructor opens
    ``encoder_spec['path']`` (its contents do not end up in the model), and its
    ``make(load_sd=True)`` (resume, demo.py) reloads ``path``: pointing both at the file
    itself makes those load these weights.  Call :func:`release_differences` first."""
    args = dict(spec["args"])
    enc = args["encoder_spec"]
    name = RELEASE_ENCODER_NAMES[enc["name"]]
    enc_args = {k: v for k, v in (enc.get("args") or {}).items() if k in RELEASE_ENCODER_ARGS[name]}
    args["encoder_spec"] = {"name": name, "path": str(path), "args": enc_args}
    return {"name": "sronet", "path": str(path), "args": args}


def to_release_checkpoint(spec: Mapping, sd: Mapping[str, torch.Tensor], path, source="checkpoint"):
    """(release spec, release state dict) for our compat-mode checkpoint that will be written to
    `path`; :class:`OfficialCompatError` naming every difference otherwise."""
    diffs = release_differences(spec, sd)
    if diffs:
        raise OfficialCompatError(source, diffs)
    return release_spec(spec, str(Path(path).resolve())), ours_to_official(sd)

__all__ = ["OFFICIAL_ENCODERS", "prepare_official_model", "official_to_ours", "ours_to_official",
           "is_official_state_dict", "official_state_dict_kind", "official_encoder_family", "convert_official_spec",
           "release_mean_shift", "OfficialCompatError", "release_differences", "release_spec",
           "to_release_checkpoint"]
