"""anysr_plugin: any-scale *and* any-resource super-resolution, as a plugin.

``anysrify(model)`` converts an upstream arbitrary-scale SR model in place so that
small scales run on a slimmer sub-network of the same weights, with a scale-aware
interweaving gate in each block (AnySR, Sec. III).

The package is layered (docs/design.md, "Layers"): ``runtime`` (the conversion and what a
converted model runs) <- ``tools`` (cost, benchmarks, evaluation, training, reference models)
<- ``glue`` (the launcher, upstream checkouts, the official release's compat mode) and the
method ``adapters`` beside it <- this facade and the CLI.  Importing the package registers
the method adapters and the compat policies.
"""
import importlib

from . import adapters  # noqa: F401  (registers the method adapters)
from .glue import official as _official  # noqa: F401  (registers the compat="official" policy)
from .runtime import errors
from .runtime.blocks import AnySRBlock, block_types, register_block_type, registered_block_type, unregister_block_type
from .runtime.checkpoint import load_upstream_checkpoint
from .runtime.config import AnySRConfig
from .runtime.control import active_widths, set_width, unwrap, use_scale, use_width
from .runtime.export import export_subnet
from .runtime.injection import anysrify, inspect_targets, is_anysr
from .runtime.unload import unanysrify
from .tools.budget import use_budget
from .tools.cost import count_flops

__version__ = "0.1.0"

__all__ = ["AnySRConfig", "anysrify", "unanysrify", "inspect_targets", "is_anysr", "use_width", "use_scale", "set_width",
           "active_widths", "unwrap", "count_flops", "load_upstream_checkpoint", "errors", "__version__",
           "export_subnet", "use_budget", "AnySRBlock", "register_block_type", "unregister_block_type",
           "registered_block_type", "block_types"]

#: modules that lived at the package's top level before the layers: ``anysr_plugin.cost`` and the
#: like still import (an alias module at the old path) and are attributes of the package
OLD_MODULES = ("errors", "limits", "files", "safe_yaml", "config", "gate", "recompute", "plan", "control",
               "injection", "unload", "export", "decoder", "checkpoint", "blocks", "coords", "imresize", "data",
               "metrics", "plots", "runlock", "cost", "budget", "bench", "evaluate", "train", "demo", "reference",
               "checkout", "launch", "upstream", "official")


def __getattr__(name: str):
    """``anysr_plugin.cost`` (and the other old module paths) as attributes, imported on first use."""
    if name in OLD_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
