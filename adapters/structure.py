"""Old path of the scale-source machinery and the feature-first deferral; the code lives in the
runtime: ``anysr_plugin.runtime.scale_source`` (where a call's scale comes from, found by
structure) and ``anysr_plugin.runtime.deferral`` (``defer_features``)."""
from ..runtime.deferral import (DeferredFeatures, defer_features, deferred_methods, encoder_attribute,
                                feature_and_query_methods)
from ..runtime.errors import NoScaleSourceError, ScaleSourceError
from ..runtime.scale_source import (AdapterSource, CallableSource, CallBinding, CellSource, ContextSource,
                                    ScaleArgSource, ScaleSource, SetScaleSource, check_read_scale, dry_run,
                                    example_call, explicit_source, find_scale_source, import_scale_function,
                                    no_source_error, scale_from_cell, set_scale_contract, single_input, source_error)

__all__ = ["ScaleSource", "ContextSource", "CellSource", "ScaleArgSource", "SetScaleSource", "AdapterSource",
           "CallableSource", "CallBinding", "find_scale_source", "explicit_source", "single_input", "NoScaleSourceError",
           "scale_from_cell", "defer_features", "DeferredFeatures", "deferred_methods", "dry_run", "check_read_scale",
           "import_scale_function", "ScaleSourceError", "example_call", "no_source_error", "source_error",
           "set_scale_contract", "feature_and_query_methods", "encoder_attribute"]
