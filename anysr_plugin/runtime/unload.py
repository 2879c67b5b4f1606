"""unanysrify: the way back from anysrify, in place (as PEFT's ``unload`` is for adapters).

Why in place, like anysrify: the user's trainer, optimizer and references hold the model object
and its ``Parameter`` objects; the way back hands the same object back with every replaced
upstream module in its place again (its very children and parameters, now at full width: the
upstream forward), and nothing of AnySR left behind: no gates, no hooks, no instance patches
(the ``set_scale`` recorder, a reporting ``load_state_dict``), no ``_anysr_*`` attribute, no
``anysr_*`` tensor.  So ``state_dict()`` has exactly the upstream keys again, the outputs are the
upstream model's, and ``anysrify`` can convert the model afresh.

How: every module anysrify put in place of an upstream one (a block, a ``decoder="slim"``
decoder module) keeps that upstream module object in ``module.__dict__["_anysr_upstream"]``
(a plain attribute, never a submodule, so it adds no key).  It goes back into the parent, with
the converted module's current children, direct parameters and buffers re-attached under their
names (a ``.to()`` / ``.double()`` after conversion may have replaced the converted module's
buffers) and its train/eval mode.  Everything is checked before anything changes.
"""
from __future__ import annotations

from torch import nn

from .blocks import AnySRBlock
from .control import unwrap
from .decoder import DECODER_TYPES
from .errors import NotAnySRError
from .errors import AnySRError

#: where anysrify leaves the upstream module on the module that replaced it
UPSTREAM_ATTR = "_anysr_upstream"
#: hook tables a converted model may carry AnySR hooks in, and their bookkeeping tables
_HOOK_TABLES = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")
_HOOK_EXTRAS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


def _ours(obj) -> bool:
    """True for a callable defined by this package (its hooks, its instance patches)."""
    module = getattr(obj, "__module__", None) or type(obj).__module__
    func = getattr(obj, "__func__", None)  # a bound method: where its function lives
    if func is not None:
        module = getattr(func, "__module__", module)
    return isinstance(module, str) and module.split(".")[0] == __name__.split(".")[0]


def _replaced(root: nn.Module) -> list:
    """``(depth, parent, attribute, converted module)`` for every module that replaced an upstream
    one, deepest first (so a converted module inside another is restored before its owner)."""
    found = {}
    for name, parent in root.named_modules(remove_duplicate=False):
        for attr, child in parent._modules.items():
            if child is not None and UPSTREAM_ATTR in child.__dict__:
                found.setdefault((id(parent), attr), (name.count(".") + bool(name), parent, attr, child))
    return sorted(found.values(), key=lambda entry: -entry[0])


def _restored(converted: nn.Module) -> nn.Module:
    """The upstream module of `converted`, holding `converted`'s current children, parameters and
    buffers under their names (``anysr_*`` ones excluded) and its train/eval mode."""
    original = converted.__dict__[UPSTREAM_ATTR]
    for table in ("_modules", "_parameters", "_buffers"):
        mine, theirs = getattr(converted, table), getattr(original, table)
        for name, value in mine.items():
            if not name.startswith("anysr_") and name in theirs:
                theirs[name] = value
    original.training = converted.training
    return original


def strip_anysr(root: nn.Module) -> None:
    """Remove AnySR's plumbing from every module under `root`: ``_anysr_*`` attributes, hooks and
    instance-level patches this package installed, ``anysr_*`` children, parameters and buffers."""
    for module in root.modules():
        d = module.__dict__
        for key in [k for k in d if k.startswith("_anysr_")]:
            del d[key]
        for key in [k for k, v in d.items() if not k.startswith("_") and hasattr(type(module), k) and _ours(v)]:
            del d[key]  # an instance patch shadowing the class's own method (set_scale, load_state_dict)
        for table in ("_modules", "_parameters", "_buffers"):
            for key in [k for k in getattr(module, table) if k.startswith("anysr_")]:
                del getattr(module, table)[key]
                module._non_persistent_buffers_set.discard(key)
        for table in _HOOK_TABLES:
            hooks = getattr(module, table, None) or {}
            for key in [k for k, hook in hooks.items() if _ours(hook)]:
                del hooks[key]
                for extra in _HOOK_EXTRAS:
                    getattr(module, extra, {}).pop(key, None)


def unanysrify(model: nn.Module) -> nn.Module:
    """Undo :func:`anysrify` in place and return the same object (a wrapper's module is changed).

    Every upstream module comes back at full width with its own children and ``Parameter``
    objects, the gates and everything else AnySR added are removed, keys unchanged: the model
    computes what it computed before conversion (with the weights it has now, fine-tuned or not)
    and can be converted again.  ``NotAnySRError`` for a model that was never converted;
    ``AnySRError`` (nothing changed) when a converted module holds no upstream module to restore.
    """
    root = unwrap(model)
    if getattr(root, "_anysr_state", None) is None and not any(isinstance(m, AnySRBlock) for m in root.modules()):
        raise NotAnySRError(f"{type(root).__name__} was not converted by anysrify: there is nothing to undo")
    names = {id(m): n for n, m in root.named_modules()}
    lost = [names.get(id(m), "?") for m in root.modules()
            if isinstance(m, (AnySRBlock, *DECODER_TYPES)) and UPSTREAM_ATTR not in m.__dict__]
    if lost:
        raise AnySRError(f"cannot restore {', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''}: no upstream module "
                         "kept (converted by an older anysr_plugin?); the model was not changed. Build the upstream "
                         "model afresh and load the upstream keys of this model's state_dict into it")
    for _, parent, attr, converted in _replaced(root):
        parent._modules[attr] = _restored(converted)
    strip_anysr(root)
    return model


__all__ = ["unanysrify", "strip_anysr"]
