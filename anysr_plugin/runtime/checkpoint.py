"""Checkpoints: safe loading, atomic saving, and vanilla upstream weights into AnySR models.

* Loading is safe by default (``torch.load(weights_only=True)``; safetensors too).
* Every file is written through ``files.write_atomic`` (a temporary file in the same
  folder, fsync, rename), so an interrupted save never destroys the previous checkpoint.
* Because ``anysrify`` keeps every upstream key, a vanilla upstream state dict loads
  into a converted model with only the new ``anysr_*`` keys missing; anything else
  missing, unexpected or mis-shaped is an error that lists the keys.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from .control import unwrap
from .errors import CheckpointError
from .files import write_atomic, write_bytes, write_text

ANYSR_KEY = "anysr_"


def atomic_save(obj, path: str | Path) -> Path:
    """``torch.save`` to `path` atomically (``files.write_atomic``: never a half-written file,
    a full disk is a typed error and the previous file stays)."""
    return write_atomic(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """`text` to `path` atomically (UTF-8)."""
    return write_text(path, text)


def save_safetensors(tensors: Mapping[str, torch.Tensor], path: str | Path, metadata: dict | None = None) -> Path:
    """A ``.safetensors`` file, atomically (serialized in memory, then written by us)."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return write_bytes(path, save(tensors, metadata=metadata))


def load_file(path: str | Path, weights_only: bool = True):
    """Load a ``.pth``/``.pt`` (safely by default) or ``.safetensors`` file onto the CPU."""
    path = Path(path)
    if not path.is_file():  # a folder or a device (/dev/zero would be read forever) is no checkpoint either
        raise CheckpointError(f"checkpoint {path} " + ("is not a regular file" if path.exists() else "does not exist"))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file as load_st

        try:
            return load_st(str(path))
        except Exception as exc:  # header / truncation errors (SafetensorError), OSError
            raise CheckpointError(f"cannot read safetensors file {path}: {type(exc).__name__}: {exc}") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # pickle errors, unsafe globals, truncated files
        hint = (" (it holds non-tensor objects: pass weights_only=False only if you trust the file)"
                if weights_only and "weights_only" in str(exc) else "")
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}{hint}") from None


def extract_state_dict(obj) -> dict:
    """The model state dict inside a checkpoint: bare (Meta-SR/ArbSR), LIIF-style
    ``{'model': {'sd': ...}}``, or ``{'state_dict'|'model_state_dict': ...}``."""
    if isinstance(obj, Mapping):
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        model = obj.get("model")
        if isinstance(model, Mapping) and isinstance(model.get("sd"), Mapping):
            return dict(model["sd"])
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping) and all(isinstance(v, torch.Tensor) for v in obj[key].values()):
                return dict(obj[key])
    raise CheckpointError("no model state dict found in the checkpoint (expected a bare state dict, "
                          "{'model': {'sd': ...}} or {'state_dict': ...})")


_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefix(state_dict: Mapping[str, torch.Tensor]) -> dict:
    """Keys as the plain model names them: leading ``module.`` (DataParallel / DDP) and
    ``_orig_mod.`` (torch.compile) dropped in any order and nesting (``_orig_mod.module.``,
    ``module._orig_mod.module.`` ...), and ``_orig_mod.`` inside a key (a compiled submodule,
    ``encoder._orig_mod.head.0.weight``).  An inner ``module.`` is kept: it may be a real
    attribute name."""
    out = {}
    for k, v in state_dict.items():
        while k.startswith(_WRAPPER_PREFIXES):
            k = k.split(".", 1)[1]
        while "._orig_mod." in k:
            k = k.replace("._orig_mod.", ".")
        out[k] = v
    return out


def fit_problems(model: nn.Module, state_dict: Mapping[str, torch.Tensor], allow_missing: str | None = None,
                 shown: int = 4) -> str:
    """"" when `state_dict` loads into `model`, else one line naming a few missing, unexpected and
    mis-shaped keys (with shapes).  Keys containing `allow_missing` may be missing."""
    own = unwrap(model).state_dict()
    mismatched = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state_dict.items()
                  if k in own and hasattr(v, "shape") and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state_dict and not (allow_missing and allow_missing in k)]
    unexpected = [k for k in state_dict if k not in own]
    parts = []
    for title, keys in (("shape mismatch", mismatched), ("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{title}: " + ", ".join(keys[:shown]) + (f", ... ({len(keys)} in all)" if len(keys) > shown
                                                                   else ""))
    return "; ".join(parts)


def load_upstream_checkpoint(model: nn.Module, source, strict: bool = True):
    """Load vanilla upstream weights (a path or a state dict) into an anysrified model.

    Only ``anysr_*`` keys may be missing (they keep their fresh, function-preserving
    initialisation).  With ``strict`` any other missing key, any unexpected key or any
    shape mismatch raises :class:`CheckpointError` listing them.  Returns the
    ``(missing, unexpected)`` key lists.
    """
    if not isinstance(source, (Mapping, str, os.PathLike)):
        raise CheckpointError(f"load_upstream_checkpoint needs a checkpoint path or a state dict, got "
                              f"{type(source).__name__}")
    sd = source if isinstance(source, Mapping) else extract_state_dict(load_file(source))
    sd = strip_wrapper_prefix(sd)
    target = unwrap(model)
    own = target.state_dict()
    mismatched = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
                  for k, v in sd.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    bad_missing = [k for k in missing if ANYSR_KEY not in k]
    if strict and (bad_missing or unexpected or mismatched):
        parts = []
        for title, keys in (("missing", bad_missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{title}: {shown}")
        raise CheckpointError("checkpoint does not fit the model; " + "; ".join(parts))
    target.load_state_dict({k: v for k, v in sd.items() if k in own and k not in
                            {m.split(':')[0] for m in mismatched}}, strict=False)
    return missing, unexpected


__all__ = ["atomic_save", "atomic_write_text", "save_safetensors", "load_file", "extract_state_dict",
           "strip_wrapper_prefix", "load_upstream_checkpoint", "fit_problems"]
