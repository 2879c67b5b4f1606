"""``anysr export``: a static sub-network (physically smaller weights, no AnySR modules).

Examples::

    anysr export --width 0.7 --scale 2 -o edsr_w07_x2.pt            # TorchScript (traced)
    anysr export --model liif-edsr-baseline --checkpoint ft.pth --width 0.7 --part encoder -o enc.onnx
    anysr export --width 0.5 -o sub.safetensors                     # state dict of the plain model

    anysr export --repo ~/SRNO --checkpoint epoch-last.pth --width 0.7 --part encoder -o enc.pt
    anysr export --repo ~/SRNO --checkpoint epoch-last.pth --width 0.7 -o sub.safetensors

The format follows the suffix: ``.pt`` / ``.ts`` TorchScript (``torch.jit.trace``),
``.pt2`` ``torch.export`` program (height and width dynamic), ``.onnx`` ONNX (height and
width dynamic axes; needs the ``onnx`` package), ``.pth`` / ``.safetensors`` the state
dict (``.safetensors`` carries the spec in its metadata:
``anysr_plugin.upstream.load_export(path)`` rebuilds the sub-network).  With ``--scale``
the scale folds into the gates' ``fc1`` bias and the graph keeps the original call
signature; without it the graph takes the scale as a last ``(B, 2)`` input.

Graphs run at any input size: an encoder is fully convolutional, and the export is
checked at ``--lr-size`` and at a second size.  A whole LIIF / LTE / SRNO call builds its
coordinate grid from the LR size in Python, which a trace would freeze; export its
``--part encoder`` as a graph and run the decoder in PyTorch (docs/export.md).
"""
from __future__ import annotations

import argparse

from ..glue.upstream import export_metadata
from ..runtime.checkpoint import atomic_save, save_safetensors
from ..runtime.control import get_state, unwrap, use_scale, use_width
from ..runtime.errors import ConfigError
from ..runtime.export import export_subnet
from ..runtime.files import refuse_existing, write_bytes
from ..tools.cost import call_inputs, count_params, encoder_of, parse_size, sizes_for
from ..tools.evaluate import parse_scale
from ._args import output_file
from ._model import add_model_arguments, load_cli_model


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export a static sub-network (TorchScript, torch.export, ONNX, weights)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--width", type=float, required=True, help="sub-network width (one of the config's widths)")
    p.add_argument("--scale", default=None, help="fold this scale (2, 2.5, 1.5x3) into the gates")
    p.add_argument("--part", choices=("model", "encoder"), default="model", help="export the whole model or the encoder")
    p.add_argument("--lr-size", default="48x48", help="example LR size HxW for tracing (default 48x48)")
    p.add_argument("-o", "--out", type=output_file, required=True, help="output file (.pt/.ts, .pt2, .onnx, .pth, .safetensors)")
    p.add_argument("--no-check", action="store_true", help="skip comparing the export with the slimmable model")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import os

    import torch


    ext = os.path.splitext(args.out)[1].lower()
    if ext not in (".pt", ".ts", ".pt2", ".onnx", ".pth", ".safetensors"):
        raise ConfigError(f"unknown output format {ext!r}; use .pt/.ts, .pt2, .onnx, .pth or .safetensors")
    refuse_existing([args.out], args.force, "-o", inputs=[args.checkpoint, args.config])
    _, model = load_cli_model(args)
    scale = parse_scale(args.scale) if args.scale is not None else None
    graph = ext in (".pt", ".ts", ".pt2", ".onnx")
    if graph and args.part == "model" and encoder_of(model) is not unwrap(model):
        raise ConfigError(f"a traced whole {type(unwrap(model)).__name__} would only run at the traced LR size (its "
                          "query grid is computed from that size in Python): export --part encoder as the graph "
                          "(runs at any size) and -o FILE.safetensors for the decoder weights; docs/export.md shows "
                          "the decoder call in PyTorch")
    src = encoder_of(model) if args.part == "encoder" else model
    sub = export_subnet(src, args.width, scale=scale)
    h, w = parse_size(args.lr_size)
    s_example = scale or (2.0, 2.0)
    if args.part == "encoder":
        inputs = (torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)),)
    else:
        inputs = call_inputs(model, (h, w), sizes_for(s_example, lr_size=(h, w))[1],
                             lr=torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)))
    open_scale = scale is None and type(sub).__name__ == "ScaleInputModel"
    call = inputs + ((torch.tensor([list(s_example)]),) if open_scale else ())
    if not args.no_check:
        with torch.no_grad(), use_width(src, args.width), use_scale(src, s_example):
            ref = src(*inputs)
        with torch.no_grad():
            out = sub(*call)
        diff = float((out - ref).abs().max())
        print(f"max |export - slimmable| = {diff:.3g}")
        if not diff <= 1e-4:
            raise ConfigError(f"the exported sub-network differs from the slimmable one by {diff:.3g}")
    if ext in (".pt", ".ts"):  # graphs serialize in memory: their writers abort the process on a full disk
        with torch.no_grad():
            traced = torch.jit.trace(sub, call, check_trace=False)
        write_bytes(args.out, _serialized(lambda f: torch.jit.save(traced, f)))
    elif ext == ".pt2":
        from torch.export import Dim

        dyn = ({2: Dim("lr_h", min=2, max=16384), 3: Dim("lr_w", min=2, max=16384)},) + (None,) * (len(call) - 1)
        if open_scale:  # ScaleInputModel.forward(*args): one varargs entry
            dyn = (dyn,)
        program = torch.export.export(sub, call, dynamic_shapes=dyn)
        write_bytes(args.out, _serialized(lambda f: torch.export.save(program, f)))
    elif ext == ".onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ConfigError("ONNX export needs the onnx package: pip install 'anysr_plugin[onnx]'") from None
        names = ["lr"] + [f"input{i}" for i in range(1, len(call))]
        write_bytes(args.out, _serialized(lambda f: torch.onnx.export(
            sub, call, f, input_names=names, output_names=["out"], dynamo=False,
            dynamic_axes={"lr": {2: "lr_h", 3: "lr_w"}, "out": {2: "out_h", 3: "out_w"}})))
    elif ext == ".pth":
        atomic_save(sub.state_dict(), args.out)
    elif ext == ".safetensors":
        meta = export_metadata(getattr(args, "model_source", {"source": "unknown"}), get_state(model).config,
                               args.width, scale, args.part)
        save_safetensors(sub.state_dict(), args.out, metadata=meta)
    if graph and not args.no_check:
        _check_other_size(args.out, ext, src, args.width, s_example, open_scale, (h, w))
    print(f"wrote {args.out}: width {args.width:g}, scale {'input' if scale is None else scale}, "
          f"{count_params(sub):,} parameters (slimmable: {count_params(src):,})")
    return 0


def _serialized(save) -> bytes:
    """What ``save(file)`` writes, collected in memory (``files.write_bytes`` then writes it)."""
    import io

    buf = io.BytesIO()
    save(buf)
    return buf.getvalue()


def _check_other_size(path, ext, src, width, scale, open_scale, size) -> None:
    """Run the written graph on another LR size and compare it with the slimmable model."""
    import torch


    h, w = max(2, size[0] * 2 // 3 + 1), max(2, size[1] * 5 // 6 + 2)
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(1))
    call = (x,) + ((torch.tensor([list(scale)]),) if open_scale else ())
    if ext in (".pt", ".ts"):
        run = torch.jit.load(path)
    elif ext == ".pt2":
        run = torch.export.load(path).module()
    else:
        return  # ONNX needs onnxruntime to run
    with torch.no_grad(), use_width(src, width), use_scale(src, scale):
        ref = src(x)
    with torch.no_grad():
        diff = float((run(*call) - ref).abs().max())
    print(f"max |export - slimmable| at LR {h}x{w} = {diff:.3g}")
    if not diff <= 1e-4:
        raise ConfigError(f"the exported graph differs from the slimmable model at LR {h}x{w} by {diff:.3g}")
