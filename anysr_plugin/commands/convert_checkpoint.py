"""``anysr convert-checkpoint IN -o OUT [--official]``

* ``IN.pth`` (a checkpoint the upstream trainer wrote under ``anysr launch``: ``{'model':
  spec + sd, 'optimizer', 'epoch'}``) -> ``OUT.safetensors`` (the state dict) plus
  ``OUT.yaml`` (the model spec with its ``anysr:`` entry, no weights): a standalone model.
* ``IN.safetensors`` (+ ``IN.yaml`` beside it, or ``--spec FILE``) -> ``OUT.pth`` in the
  upstream format ``{'model': spec + sd, 'epoch'}``, which upstream ``test.py`` / ``demo.py``
  load under ``anysr launch`` (it has no optimizer state, so it cannot ``resume``).
* ``--official``: ``IN.pth`` is an official AnySR release checkpoint (``sronet`` +
  ``edsr-anysr-baseline``, keys ``body.{i}.conv1/conv2/fc1/fc2``, or ``sronet`` + ``rdn-anysr``,
  keys ``RDBs.{i}.fc1/fc2`` plus ``sub_mean``/``add_mean``); it is renamed to ours
  (``body.{i}.body.0/body.2/anysr_gate.fc1/fc2``, ``RDBs.{i}.anysr_gate.fc1/fc2``, 1x1-conv
  gate weights as Linear, the RDN's mean shifts as ``anysr_sub_mean``/``anysr_add_mean``)
  with a ``compat: official`` AnySR config (RDN: widths 0.7/0.8/0.9/1.0 and the release's
  RDB layout) and a plain ``edsr-baseline`` / ``rdn`` encoder spec, written as ``OUT.pth``
  (upstream format, runs in an SRNO checkout) or ``OUT.safetensors`` + yaml.
  ``--to-official`` goes back: ``OUT.pth`` is the release's own checkpoint (its encoder names
  ``edsr-anysr-baseline`` / ``rdn-anysr``, its arguments, its key names; ``path`` and
  ``encoder_spec.path`` name OUT itself, which the release's ``sronet`` constructor opens), so
  its ``test.py --model OUT.pth`` runs it.  Only a model fine-tuned in compatibility mode
  converts; anything else is refused with every difference named.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..adapters import official_release as official
from ..runtime.checkpoint import atomic_save, atomic_write_text, extract_state_dict, load_file, save_safetensors
from ..runtime.errors import CheckpointError
from ..runtime.safe_yaml import read_yaml_file
from ._args import output_path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "convert-checkpoint", help="AnySR checkpoint <-> standalone safetensors + YAML; official release -> ours",
        description=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="checkpoint to convert (.pth/.pt or .safetensors)")
    p.add_argument("-o", "--out", type=output_path, required=True, help="output (.safetensors or .pth)")
    p.add_argument("--spec", type=Path, default=None, help="model spec YAML for a .safetensors input "
                   "(default: the input's .yaml sibling)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files (never the input)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--official", action="store_true", help="the input is an official AnySR release checkpoint")
    g.add_argument("--to-official", action="store_true", help="write our checkpoint with the release's key names")
    p.set_defaults(run=run)
    return p


def _is_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def read_checkpoint(path: Path, spec_path: Path | None = None):
    """(spec without sd, state dict) from an upstream-format .pth or a safetensors + YAML pair."""
    import yaml


    if _is_safetensors(path):
        sd = load_file(path)
        spec_path = spec_path or path.with_suffix(".yaml")
        if not spec_path.is_file():
            raise CheckpointError(f"{path}: its model spec {spec_path} is missing (pass --spec FILE)")
        try:
            data = read_yaml_file(spec_path)
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise CheckpointError(f"{spec_path}: not a readable YAML model spec ({type(exc).__name__})") from None
        spec = data.get("model", data) if isinstance(data, dict) else None
        if not isinstance(spec, dict) or "name" not in spec:
            raise CheckpointError(f"{spec_path}: expected a model spec ({{model: {{name, args, anysr}}}})")
        return dict(spec), sd
    obj = load_file(path)
    sd = extract_state_dict(obj)
    spec = obj.get("model") if isinstance(obj, dict) else None
    if not isinstance(spec, dict) or "name" not in spec:
        raise CheckpointError(f"{path}: no upstream model spec ({{'model': {{'name', 'args', 'sd'}}}}); "
                              "convert-checkpoint handles LIIF/LTE/SRNO-format checkpoints")
    return {k: v for k, v in spec.items() if k != "sd"}, sd


def write_checkpoint(out: Path, spec: dict, sd: dict) -> list:
    import yaml


    if _is_safetensors(out):
        save_safetensors(sd, out, metadata={"anysr_model_spec": json.dumps(spec)})
        side = out.with_suffix(".yaml")
        atomic_write_text(side, "# model spec of " + out.name + " (anysr convert-checkpoint)\n"
                          + yaml.safe_dump({"model": spec}, sort_keys=False))
        return [out, side]
    atomic_save({"model": {**spec, "sd": sd}, "epoch": 0}, out)
    return [out]


def output_paths(out: Path) -> list:
    """Every file :func:`write_checkpoint` writes for `out` (a .safetensors gets a .yaml beside it)."""
    return [out, out.with_suffix(".yaml")] if _is_safetensors(out) else [out]


def check_outputs(args) -> None:
    """Refuse to write over the input (or its spec) ever, and over any existing file without --force."""
    import os


    inputs = [p for p in (args.input, args.spec or (args.input.with_suffix(".yaml") if _is_safetensors(args.input)
                                                    else None)) if p is not None and p.exists()]
    for out in output_paths(args.out):
        if out.exists() and out.is_dir():
            raise CheckpointError(f"output {out} is a folder; give a file name (.safetensors or .pth)")
        same = [p for p in inputs if out.resolve() == p.resolve() or (out.exists() and os.path.samefile(out, p))]
        if same:
            raise CheckpointError(f"output {out} is the input file {same[0]}; writing it would destroy the input "
                                  "(its optimizer state and epoch): choose another -o")
        if out.exists() and not args.force:
            raise CheckpointError(f"output {out} already exists; choose another -o or pass --force to overwrite it")


def run(args) -> int:
    check_outputs(args)
    spec, sd = read_checkpoint(args.input, args.spec)
    if args.official:
        kind = official.official_state_dict_kind(sd)
        if kind is None:
            raise CheckpointError(f"{args.input}: no `body.N.fc1` / `RDBs.N.fc1` gate keys; not an official AnySR "
                                  "release checkpoint")
        enc_name = ((spec.get("args") or {}).get("encoder_spec") or {}).get("name")
        family = official.official_encoder_family(enc_name)
        if family is not None and family != kind:
            raise CheckpointError(f"{args.input}: the spec's encoder is {enc_name!r} but the weights hold "
                                  f"{'RDBs.N' if kind == 'rdn' else 'body.N'}.fc1 gate keys ({kind})")
        spec = official.convert_official_spec(spec)
        sd = official.official_to_ours(sd)
    elif args.to_official:
        if _is_safetensors(args.out):
            raise CheckpointError(f"-o {args.out}: the release's test.py reads torch.save files only; "
                                  "write a .pth with --to-official")
        spec, sd = official.to_release_checkpoint(spec, sd, args.out, source=str(args.input))
    else:
        if "anysr" not in spec:
            raise CheckpointError(f"{args.input}: the model spec has no `anysr:` entry; it is not an AnySR "
                                  "checkpoint written under `anysr launch` (use --official for release files)")
        if not any("anysr_" in k for k in sd):
            raise CheckpointError(f"{args.input}: the spec says AnySR but the weights hold no anysr_* tensors")
    for path in write_checkpoint(args.out, spec, sd):
        print(f"wrote {path}")
    return 0
