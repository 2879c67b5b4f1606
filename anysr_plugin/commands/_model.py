"""The model arguments of ``anysr flops / bench / eval / export``: a reference look-alike by name
(``--model``, ``--model-arg``) or the user's upstream model built by its checkout (``--repo``),
with ``--checkpoint`` weights and an ``--config`` for the conversion."""
from __future__ import annotations

from ..glue.upstream import check_reference_checkpoint, checkpoint_spec, load_fitting, load_repo_cli_model
from ..runtime.checkpoint import extract_state_dict, load_file, strip_wrapper_prefix
from ..runtime.config import AnySRConfig
from ..runtime.errors import ConfigError, shorten
from ..runtime.export import safe_deepcopy
from ..runtime.injection import anysrify
from ..runtime.limits import MAX_MODEL_ELEMENTS, build_within
from ..runtime.safe_yaml import load_yaml
from ..tools.cost import build_model, builtin_names
from ._args import seed


def add_model_arguments(p, default: str = "edsr-baseline") -> None:
    """``--model NAME``, ``--checkpoint PATH``, ``--config YAML`` and ``--model-arg K=V`` (CLI)."""
    p.add_argument("--model", default=default,
                   help=f"built-in reference model (default {default}): {', '.join(builtin_names())}")
    p.add_argument("--model-arg", action="append", default=[], metavar="K=V",
                   help="argument of the reference model, e.g. n_resblocks=4 (repeatable; values parsed as YAML)")
    p.add_argument("--checkpoint", default=None,
                   help="weights to load (.pth/.safetensors): an AnySR checkpoint (with anysr_* keys) "
                        "or the vanilla upstream weights of the model")
    p.add_argument("--config", default=None, help="AnySR config YAML (default: the paper's settings)")
    p.add_argument("--seed", type=seed, default=0, help="initialisation seed of the reference model")
    p.add_argument("--repo", default=None, metavar="DIR",
                   help="run the upstream model itself: build the --checkpoint's model spec with the LIIF / LTE / "
                        "SRNO checkout DIR's own registry (--model is then not used)")


def load_cli_model(args, anysrify_it: bool = True):
    """``(original, anysr_model)`` from the model arguments; checkpoints load into the
    AnySR model (upstream weights: into both)."""
    import yaml

    if getattr(args, "repo", None):
        return load_repo_cli_model(args, anysrify_it)
    kwargs = {}
    for item in getattr(args, "model_arg", []) or []:
        if "=" not in item:
            raise ConfigError(f"--model-arg takes K=V, got {shorten(item)}")
        k, v = item.split("=", 1)
        try:
            kwargs[k.strip()] = load_yaml(v, f"--model-arg {shorten(k.strip())}")
        except yaml.YAMLError as exc:
            raise ConfigError(f"--model-arg {shorten(item)}: not a YAML value ({' '.join(str(exc).split())})") from None
    original = build_within(MAX_MODEL_ELEMENTS, f"model {args.model} {shorten(kwargs)}", build_model, args.model,
                            seed=getattr(args, "seed", 0), **kwargs).eval()
    args.model_source = {"source": "reference", "name": args.model, "args": kwargs, "seed": getattr(args, "seed", 0)}
    sd = spec_name = None
    if getattr(args, "checkpoint", None):
        obj = load_file(args.checkpoint)
        check_reference_checkpoint(args.model, obj, args.checkpoint)
        spec_name = (checkpoint_spec(obj, args.checkpoint) or {}).get("name")
        sd = strip_wrapper_prefix(extract_state_dict(obj))
    is_anysr_ckpt = sd is not None and any("anysr_" in k for k in sd)
    if sd is not None and not is_anysr_ckpt:
        load_fitting(original, sd, args.checkpoint, args.model, spec_name)
    if not anysrify_it:
        return original, None
    cfg = AnySRConfig.from_yaml(args.config) if getattr(args, "config", None) else AnySRConfig()
    model = anysrify(safe_deepcopy(original), cfg).eval()
    if is_anysr_ckpt:
        load_fitting(model, sd, args.checkpoint, f"AnySR {args.model}", spec_name)
        # the unconverted model gets the shared (non-gate) weights
        original.load_state_dict({k: v for k, v in sd.items() if "anysr_" not in k})
    return original, model


__all__ = ["add_model_arguments", "load_cli_model"]
