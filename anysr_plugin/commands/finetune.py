"""``anysr finetune``: Algorithm-1 fine-tuning of a reference model on a folder of HR images.

Single process, or DDP with ``torchrun --nproc_per_node N -m anysr_plugin finetune ...``
(gloo on CPU, nccl on CUDA).  Resumable: rerun the same command and it continues from
``OUT/last.pt``.
"""
from __future__ import annotations

import argparse
import json

from ..adapters import adapter_for
from ..runtime.checkpoint import atomic_save, atomic_write_text, load_upstream_checkpoint
from ..runtime.config import AnySRConfig
from ..runtime.errors import shorten
from ..runtime.errors import ConfigError, RunMismatchError
from ..runtime.injection import anysrify
from ..runtime.limits import MAX_MODEL_ELEMENTS, build_within
from ..tools.reference.models import build_reference
from ..tools.runlock import run_folder_lock
from ..tools.train import PAPER_SCALE_GROUPS, TrainConfig, Trainer, init_distributed
from ._args import device, floats, nonnegative_int, positive_float, positive_int, probability


def _kv(text: str):
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {shorten(text)}")
    k, v = text.split("=", 1)
    try:
        return k, json.loads(v)
    except json.JSONDecodeError:
        return k, v
    except RecursionError:  # thousands of nested brackets
        raise argparse.ArgumentTypeError(f"{shorten(k)}=...: the value nests too deep") from None


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a model with Algorithm 1 on a folder of HR images (resumable, DDP via torchrun)",
        description="Fine-tune with AnySR's Algorithm 1: per sample draw a scale group uniformly, a scale in it, "
                    "reset to the full network with probability p, one forward, L1 loss, Adam. Defaults are the "
                    "paper's schedule (lr 1e-5 halved every 200 epochs, 500 epochs, patch 48, batch 16). "
                    "Checkpoints OUT/last.pt are written atomically every epoch (or --save-every steps); rerunning "
                    "the same command resumes.",
        epilog="examples:\n"
               "  anysr finetune --model liif-edsr-baseline --init-from pretrained.pth --data DIV2K_train_HR --out runs/a\n"
               "  anysr finetune --model liif-edsr-baseline --model-arg n_resblocks=4 --data photos/ --steps 200 "
               "--lr 1e-4 --out runs/small\n"
               "  torchrun --nproc_per_node 2 -m anysr_plugin finetune --data DIV2K_train_HR --out runs/ddp",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="folder of HR training images")
    p.add_argument("--out", required=True, help="folder for last.pt, anysr.yaml and the final weights")
    p.add_argument("--model", default="liif-edsr-baseline",
                   help="reference model name (liif-edsr-baseline, liif-rdn, srno-edsr-baseline, ...)")
    p.add_argument("--model-arg", type=_kv, action="append", default=[], metavar="KEY=VALUE",
                   help="size argument of the reference model, e.g. n_resblocks=4 (repeatable)")
    p.add_argument("--init-from", default=None, metavar="PTH",
                   help="pretrained (vanilla upstream or anysr) weights to start from")
    p.add_argument("--no-anysr", action="store_true", help="train the plain model (upstream-style pretraining)")
    g = p.add_argument_group("schedule (default: the paper's)")
    g.add_argument("--epochs", type=nonnegative_int, default=500)
    g.add_argument("--steps", type=nonnegative_int, default=None, help="total steps; overrides --epochs")
    g.add_argument("--lr", type=positive_float, default=1e-5)
    g.add_argument("--lr-step-epochs", type=positive_int, default=200, help="halve the lr every N epochs")
    g.add_argument("--batch-size", type=positive_int, default=16, help="per process")
    g.add_argument("--patch", type=positive_int, default=None, help="LR patch (default 48 LIIF, 128 SRNO)")
    g.add_argument("--sample-q", type=positive_int, default=2304, help="LIIF queries per sample")
    g.add_argument("--repeat", type=positive_int, default=20, help="dataset repeats per epoch")
    g.add_argument("--save-every", type=positive_int, default=None, help="steps between checkpoints (default: an epoch)")
    g.add_argument("--seed", type=nonnegative_int, default=0)
    g.add_argument("--device", type=device, default="cpu", help="cpu or cuda (under torchrun: cuda:LOCAL_RANK)")
    a = p.add_argument_group("Algorithm 1")
    a.add_argument("--reset-prob", type=probability, default=0.6, help="p (default 0.6)")
    a.add_argument("--gate", choices=("identity", "paper"), default="identity")
    a.add_argument("--interweave", choices=("interleave", "concat", "none"), default="interleave")
    a.add_argument("--widths", type=floats, default=None, help="e.g. 0.5,0.7,0.9,1.0")
    a.add_argument("--scale-bounds", type=floats, default=None, help="e.g. 1.75,2.55,3.25")
    a.add_argument("--scale-groups", type=floats, default=None,
                   help="flat low,high pairs, e.g. 1.1,1.7,1.8,2.5,2.6,3.2,3.3,4.0 (the paper's)")
    a.add_argument("--asymmetric", action="store_true", help="draw s_h and s_w independently in the group")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(run=run)
    return p


def run(args) -> int:
    """Everything (arguments, model, weights, data, the run folder's saved settings) is validated
    before the first file is written, so a refused rerun leaves the run folder as it was."""
    import contextlib
    import os

    import torch


    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError(f"--out {args.out!r} is a file; give a folder (new, or a run folder to resume)")
    device = args.device
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist = init_distributed(device)
    model = build_within(MAX_MODEL_ELEMENTS, f"model {args.model} {shorten(dict(args.model_arg))}", build_reference,
                         args.model, seed=args.seed, **dict(args.model_arg))
    patch = args.patch or adapter_for(model).train_patch  # None: the trainer's default
    cfg = None
    if not args.no_anysr:
        over = {k: v for k, v in dict(widths=args.widths, scale_bounds=args.scale_bounds).items() if v is not None}
        cfg = AnySRConfig(reset_prob=args.reset_prob, gate=args.gate, interweave=args.interweave, seed=args.seed,
                          **over)
        model = anysrify(model, cfg)  # cfg.seed: gate init identical on every rank
        if args.init_from:  # vanilla upstream weights (anysr_* keys keep their identity start) or anysr weights
            load_upstream_checkpoint(model, args.init_from)
    elif args.init_from:
        load_upstream_checkpoint(model, args.init_from)
    groups = PAPER_SCALE_GROUPS
    if args.scale_groups is not None:
        if len(args.scale_groups) % 2:
            raise ConfigError("--scale-groups needs low,high pairs")
        groups = tuple(zip(args.scale_groups[::2], args.scale_groups[1::2]))
    tcfg = TrainConfig(**({"patch": patch} if patch else {}), batch_size=args.batch_size,
                       sample_q=args.sample_q, repeat=args.repeat, epochs=args.epochs, steps=args.steps, lr=args.lr,
                       lr_step_epochs=args.lr_step_epochs, scale_groups=groups, asymmetric=args.asymmetric,
                       seed=args.seed, save_every=args.save_every, device=device, progress=not args.no_progress)
    run_info = {"model": args.model, "model_args": {k: v for k, v in args.model_arg}}
    trainer = Trainer(model, args.data, tcfg, args.out, dist_info=dist, run_info=run_info)
    lock = run_folder_lock(args.out, "anysr finetune") if dist.main else contextlib.nullcontext()
    with lock:  # another run writing this folder is refused; the lock goes when the run ends
        resumed = trainer.resume()  # RunMismatchError when the folder's run was trained with other settings
        yaml_path = os.path.join(args.out, "anysr.yaml")
        if not resumed and os.path.exists(os.path.join(args.out, "final.pt")):  # not a run this command can continue
            raise RunMismatchError(f"{args.out} holds a final.pt but no last.pt to resume from; a new run would "
                                   "overwrite it: give another --out")
        if not resumed and os.path.isfile(yaml_path):  # a run stopped before its first checkpoint
            try:
                saved = AnySRConfig.from_yaml(yaml_path).to_dict()
            except ConfigError as exc:
                raise RunMismatchError(f"{yaml_path} exists but is not a readable AnySR config ({exc}); "
                                       "give another --out for a new run") from None
            now = cfg.to_dict() if cfg is not None else {}
            diffs = [f"anysr.{k}: run {saved.get(k)!r}, now {v!r}" for k, v in now.items() if saved.get(k) != v]
            if args.no_anysr:
                diffs = ["AnySR: run AnySR (anysr.yaml), now plain (--no-anysr)"]
            if diffs:
                raise RunMismatchError(f"{args.out} holds a run with other AnySR settings ({'; '.join(diffs)}); rerun "
                                       "with them, or give another --out for a new run")
        if resumed and dist.main:
            print(f"resumed from {trainer.checkpoint_path} at step {trainer.step}/{trainer.total_steps}")
        if cfg is not None and dist.main and not os.path.isfile(yaml_path):  # validated: the first write
            atomic_write_text(yaml_path, cfg.to_yaml())
        trainer.run()
        if dist.main:
            atomic_save(model.state_dict(), os.path.join(args.out, "final.pt"))
            print(f"done: {os.path.join(args.out, 'final.pt')} (step {trainer.step})")
    if dist.initialized_here:
        import torch.distributed as tdist

        tdist.barrier()  # every rank done before the group goes away (gloo aborts otherwise)
        tdist.destroy_process_group()
    return 0

