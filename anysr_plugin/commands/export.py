"""``anysr export``: a static sub-network (physically smaller weights, no AnySR modules).

Examples::

    anysr export --width 0.7 --scale 2 -o edsr_w07_x2.pt            # TorchScript (traced)
    anysr export --model liif-edsr-baseline --checkpoint ft.pth --width 0.7 --part encoder -o enc.onnx
    anysr export --width 0.5 -o sub.safetensors                     # state dict of the plain model

The format follows the suffix: ``.pt`` / ``.ts`` TorchScript (``torch.jit.trace``),
``.pt2`` ``torch.export`` program, ``.onnx`` ONNX (needs the ``onnx`` package),
``.pth`` / ``.safetensors`` the state dict.  With ``--scale`` the scale folds into the
gates' ``fc1`` bias and the traced model keeps the original call signature; without it
the traced model takes the scale as a last ``(B, 2)`` input.  Whole LIIF / SRNO models
trace with their ``(inp, coord, cell)`` example at ``--lr-size`` x scale.
"""
from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..cost import add_model_arguments

    p = subparsers.add_parser("export", help="export a static sub-network (TorchScript, torch.export, ONNX, weights)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p)
    p.add_argument("--width", type=float, required=True, help="sub-network width (one of the config's widths)")
    p.add_argument("--scale", default=None, help="fold this scale (2, 2.5, 1.5x3) into the gates")
    p.add_argument("--part", choices=("model", "encoder"), default="model", help="export the whole model or the encoder")
    p.add_argument("--lr-size", default="48x48", help="example LR size HxW for tracing (default 48x48)")
    p.add_argument("-o", "--out", required=True, help="output file (.pt/.ts, .pt2, .onnx, .pth, .safetensors)")
    p.add_argument("--no-check", action="store_true", help="skip comparing the export with the slimmable model")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    import os

    import torch

    from ..checkpoint import atomic_save, save_safetensors
    from ..control import use_scale, use_width
    from ..cost import call_inputs, count_params, encoder_of, load_cli_model, parse_size
    from ..errors import ConfigError
    from ..evaluate import parse_scale
    from ..export import export_subnet

    _, model = load_cli_model(args)
    scale = parse_scale(args.scale) if args.scale is not None else None
    src = encoder_of(model) if args.part == "encoder" else model
    sub = export_subnet(src, args.width, scale=scale)
    h, w = parse_size(args.lr_size)
    s_example = scale or (2.0, 2.0)
    if args.part == "encoder":
        inputs = (torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)),)
    else:
        inputs = call_inputs(model, (h, w), (round(h * s_example[0]), round(w * s_example[1])),
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
    ext = os.path.splitext(args.out)[1].lower()
    if ext in (".pt", ".ts"):
        with torch.no_grad():
            traced = torch.jit.trace(sub, call, check_trace=False)
        tmp = args.out + ".tmp"
        torch.jit.save(traced, tmp)
        os.replace(tmp, args.out)
    elif ext == ".pt2":
        program = torch.export.export(sub, call)
        torch.export.save(program, args.out)
    elif ext == ".onnx":
        try:
            import onnx  # noqa: F401
        except ImportError:
            raise ConfigError("ONNX export needs the onnx package: pip install 'anysr_plugin[onnx]'") from None
        torch.onnx.export(sub, call, args.out)
    elif ext == ".pth":
        atomic_save(sub.state_dict(), args.out)
    elif ext == ".safetensors":
        save_safetensors(sub.state_dict(), args.out)
    else:
        raise ConfigError(f"unknown output format {ext!r}; use .pt/.ts, .pt2, .onnx, .pth or .safetensors")
    print(f"wrote {args.out}: width {args.width:g}, scale {'input' if scale is None else scale}, "
          f"{count_params(sub):,} parameters (slimmable: {count_params(src):,})")
    return 0
