"""A module's signature: what two modules must share to compute the same function of their weights.

Why: conversion analyses (dataflow.py) and checks (the full-width equivalence check) one
representative per signature and reuses the verdict for every block alike, which keeps
converting a 200-block encoder well under a second.

Two modules with equal signatures run the same code (the upstream class and its ``forward``
code object, every submodule's class) on the same structure (module tree, parameter and
buffer shapes, dtypes, devices, plain attributes such as ``res_scale``, negative slopes,
paddings, train/eval mode).  A module with hooks or an instance-level ``forward`` (code
outside the class) has no signature (None): it is analysed and checked alone.
"""
from __future__ import annotations

import torch
from torch import nn

_PRIMITIVES = frozenset((bool, int, float, complex, str, bytes, type(None)))
_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _value_key(value, depth: int = 0):
    """Hashable description of a plain attribute: primitives by value, tensors by shape,
    dtype and device, containers element-wise, anything else by identity (so only the very
    same object, e.g. a shared function, makes two blocks alike)."""
    kind = type(value)
    if kind in _PRIMITIVES:  # exact types: a subclass (an enum, a str subclass) goes by identity
        return kind, value
    if isinstance(value, (torch.dtype, torch.device)):
        return type(value), str(value)
    if isinstance(value, torch.Tensor):
        return "tensor", tuple(value.shape), value.dtype, str(value.device)
    if isinstance(value, (tuple, list)) and depth < 4:
        return type(value), tuple(_value_key(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 4:
        return dict, tuple(sorted((repr(k), _value_key(v, depth + 1)) for k, v in value.items()))
    return "object", id(value)


def _tensor_key(t):
    return None if t is None else (type(t), tuple(t.shape), t.dtype, str(t.device))


def module_signature(module: nn.Module):
    """The signature of `module` (a hashable tuple), or None (see the module docstring)."""
    seen: dict = {}
    parts = []
    for path, sub in module.named_modules(remove_duplicate=False):
        d = sub.__dict__
        if "forward" in d or any(d.get(h) for h in _HOOK_DICTS):
            return None
        if id(sub) in seen:  # a submodule used twice inside the block
            parts.append((path, "alias", seen[id(sub)]))
            continue
        seen[id(sub)] = path
        # attribute order is part of the key: same class built the same way -> same order
        attrs = tuple((k, _value_key(v)) for k, v in d.items() if k[0] != "_" and k != "training")
        params = tuple((k, _tensor_key(p)) for k, p in sub._parameters.items())
        buffers = tuple((k, _tensor_key(b)) for k, b in sub._buffers.items())
        parts.append((path, type(sub), sub.training, attrs, params, buffers))
    forward_code = getattr(type(module).forward, "__code__", None)
    return (type(module), forward_code, tuple(parts))


__all__ = ["module_signature"]
