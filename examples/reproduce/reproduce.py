#!/usr/bin/env python
"""CPU-scale reproduction of AnySR's Tables I, IV, VII and VIII (and the gate kinds).

Runs, from one pretrained reference LIIF-EDSR-baseline:

* **original**   the pretrained model trained on for the same steps (plain L1, scales 1-4):
                 at toy scale this is the fair baseline (same training budget);
* **AnySR**      anysrify + Algorithm 1 (interleave, p = 0.6, identity gate); evaluated as
                 AnySR† (the sub-network the scale selects) and AnySR‡ (the full network);
* **w/o FI**     scale pair concatenated once (interweave="concat");
* **w/o ASE**    no gate (interweave="none");
* **p = 0**      no reset to the full network;
* **paper gate** the paper's sigmoid gate with default init (gate="paper").

and writes ``tables.md`` (Tables I, IV, VII, VIII shaped like the paper's, plus the gate
kinds), ``results.json`` and ``command.txt`` into ``--out``.

Default: a small model on photographs shipped with scikit-image, < 1 hour on 2 CPU cores.
``--quick``: a smoke run in a few minutes.  Paper size (on a GPU, with real data)::

    python examples/reproduce/reproduce.py --paper-size --device cuda \\
        --train-dir load/div2k/DIV2K_train_HR --test-dir Set5=load/benchmark/Set5/HR \\
        --test-dir Urban100=load/benchmark/Urban100/HR --init-from edsr-baseline-liif.pth

(with ``--init-from`` the pretraining step is skipped; the paper fine-tunes 500 epochs at
lr 1e-5 halved every 200 epochs, which ``--paper-size`` selects).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path


from anysr_plugin.config import AnySRConfig
from anysr_plugin.control import get_state
from anysr_plugin.cost import count_params
from anysr_plugin.injection import anysrify
from anysr_plugin.data import ImageFolder, make_lr, skimage_photos
from anysr_plugin.demo import TEST_PHOTOS, TRAIN_PHOTOS, model_cost, predict, prepare_out_dir
from anysr_plugin.metrics import psnr
from anysr_plugin.reference.models import build_reference
from anysr_plugin.train import TrainConfig, Trainer
from anysr_plugin.files import write_text  # atomic: a stopped run never leaves half a file

VARIANTS = {  # name -> AnySR config changes (None: the original model, no conversion)
    "original": None,
    "AnySR": dict(interweave="interleave", reset_prob=0.6, gate="identity"),
    "w/o FI": dict(interweave="concat", reset_prob=0.6, gate="identity"),
    "w/o ASE": dict(interweave="none", reset_prob=0.6, gate="identity"),
    "p = 0": dict(interweave="interleave", reset_prob=0.0, gate="identity"),
    "paper gate": dict(interweave="interleave", reset_prob=0.6, gate="paper"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--quick", action="store_true", help="a smoke run in a few minutes")
    p.add_argument("--paper-size", action="store_true",
                   help="EDSR-baseline 16x64, imnet 4x256, patch 48, batch 16, the paper's schedule")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-dir", default=None, help="HR training folder (default: scikit-image photographs)")
    p.add_argument("--test-dir", action="append", default=[], metavar="NAME=DIR",
                   help="HR test folder(s); LR by PIL bicubic (default: held-apart scikit-image photographs)")
    p.add_argument("--init-from", default=None, help="pretrained vanilla LIIF weights (skips pretraining)")
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None, help="fine-tune epochs (paper-size default 500)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS))
    p.add_argument("--scales", default="1.5,2,3,4,6")
    p.add_argument("--eval-size", type=int, default=None, help="centre crop of each test image (0: whole)")
    p.add_argument("--work", default=None, help="folder for resumable training checkpoints (default: none)")
    p.add_argument("--force", action="store_true")
    return p.parse_args(argv)


def settings(a):
    if a.paper_size:
        s = dict(model=dict(n_resblocks=16, n_feats=64, hidden_list=[256] * 4), patch=48, batch=16, sample_q=2304,
                 pretrain_steps=a.pretrain_steps or 0, pretrain_lr=1e-4, finetune_lr=1e-5,
                 finetune_steps=a.finetune_steps, epochs=a.epochs or 500, eval_size=a.eval_size or 0)
    elif a.quick:
        s = dict(model=dict(n_resblocks=2, n_feats=16, hidden_list=[32]), patch=16, batch=4, sample_q=256,
                 pretrain_steps=a.pretrain_steps or 40, pretrain_lr=5e-4, finetune_lr=1e-4,
                 finetune_steps=a.finetune_steps or 20, epochs=None, eval_size=a.eval_size or 64)
    else:
        s = dict(model=dict(n_resblocks=4, n_feats=32, hidden_list=[64, 64]), patch=24, batch=8, sample_q=576,
                 pretrain_steps=a.pretrain_steps or 1500, pretrain_lr=5e-4, finetune_lr=1e-4,
                 finetune_steps=a.finetune_steps or 600, epochs=None, eval_size=a.eval_size or 128)
    return s


def load_data(a):
    if a.train_dir:
        train = [img for _, img in ImageFolder(a.train_dir)]
    else:
        photos = skimage_photos(TRAIN_PHOTOS)
        train = [photos[n] for n in TRAIN_PHOTOS]
    tests = {}
    for spec in a.test_dir:
        name, _, folder = spec.partition("=")
        tests[name] = dict(ImageFolder(folder))
    if not tests:
        tests["photos"] = skimage_photos(TEST_PHOTOS)
    return train, tests


def train(model, images, s, steps, lr, a, epochs=None, out=None):
    cfg = TrainConfig(patch=s["patch"], batch_size=s["batch"], sample_q=s["sample_q"], steps=steps,
                      epochs=epochs or 1, lr=lr, lr_step_epochs=200 if epochs else 10**9, seed=a.seed,
                      device=a.device, repeat=20 if epochs else 1, progress=True)
    t = Trainer(model, images, cfg, out)
    if out is not None:
        t.resume()
    t.run()
    return t


def crop(img, size):
    if not size:
        return img
    H, W = img.shape[-2:]
    s = min(size, H, W)
    return img[:, (H - s) // 2:(H - s) // 2 + s, (W - s) // 2:(W - s) // 2 + s]


def psnr_of(model, tests, scale, width, eval_size):
    out = {}
    for tname, imgs in tests.items():
        vals = []
        for img in imgs.values():
            lr, hr = make_lr(crop(img, eval_size), scale)
            sr = predict(model, lr, hr.shape[-2:], scale=scale, width=width)
            vals.append(float(psnr(sr, hr, protocol="benchmark", scale=scale)))
        out[tname] = sum(vals) / len(vals)
    return out


def main(argv=None):
    a = parse_args(argv)
    s = settings(a)
    out = prepare_out_dir(a.out, a.force, marker=".anysr_reproduce")
    t_start = time.perf_counter()
    train_imgs, tests = load_data(a)
    scales = [float(x) for x in a.scales.split(",")]
    names = [v.strip() for v in a.variants.split(",")]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")

    def build():
        return build_reference("liif-edsr-baseline", seed=a.seed, **s["model"]).to(a.device)

    work = Path(a.work) if a.work else None
    pretrained = build()
    if a.init_from:
        from anysr_plugin.checkpoint import load_upstream_checkpoint
        load_upstream_checkpoint(pretrained, a.init_from)
    elif s["pretrain_steps"]:
        print(f"== pretraining the original for {s['pretrain_steps']} steps", flush=True)
        train(pretrained, train_imgs, s, s["pretrain_steps"], s["pretrain_lr"], a, out=work / "pretrain" if work else None)
    results = {"settings": s, "scales": scales, "variants": {}}
    for name in names:
        changes = VARIANTS[name]
        model = build()
        model.load_state_dict(pretrained.state_dict())
        if changes is not None:
            model = anysrify(model, AnySRConfig(seed=a.seed, **changes))
        print(f"== fine-tuning {name!r}", flush=True)
        t0 = time.perf_counter()
        train(model, train_imgs, s, s["finetune_steps"], s["finetune_lr"], a, epochs=s["epochs"],
              out=work / name.replace(" ", "_").replace("/", "").replace("=", "") if work else None)
        entry = {"train_s": time.perf_counter() - t0, "params_encoder": count_params(model.encoder),
                 "psnr": {}, "cost": {}}
        for scale in scales:
            if changes is None:
                entry["psnr"][str(scale)] = {"orig": psnr_of(model, tests, scale, None, s["eval_size"])}
                cost_w = [None]
            else:
                w_sel = get_state(model).config.width_for_scale(scale)
                entry["psnr"][str(scale)] = {"dagger": psnr_of(model, tests, scale, None, s["eval_size"]),
                                             "ddagger": psnr_of(model, tests, scale, 1.0, s["eval_size"]),
                                             "width": w_sel}
                cost_w = [w_sel]
            lr_hw = (64, 64)  # cost on a 64x64 LR input (output round(64 s)^2)
            hr_hw = (round(64 * scale), round(64 * scale))
            entry["cost"][str(scale)] = model_cost(model, lr_hw, hr_hw, scale, width=cost_w[0])
        results["variants"][name] = entry
        write_text(out / "results.json", json.dumps(results, indent=1))
    results["total_s"] = time.perf_counter() - t_start
    write_text(out / "results.json", json.dumps(results, indent=1))
    cmd = "python " + " ".join(shlex.quote(x) for x in [os.path.relpath(__file__)] + list(sys.argv[1:] if argv is None else argv))
    write_text(out / "command.txt", cmd + "\n")
    write_text(out / "tables.md", render(results, tests, cmd))
    print((out / "tables.md").read_text())


def _p(results, name, scale, key, tname):
    v = results["variants"].get(name)
    if v is None:
        return None
    return v["psnr"][str(scale)].get(key, {}).get(tname)


def _f(x, spec=".2f"):
    return "–" if x is None else format(x, spec)


def render(results, tests, cmd):
    scales = results["scales"]
    s = results["settings"]
    V = results["variants"]
    L = ["# AnySR reproduction at CPU scale", "",
         f"Command: `{cmd}`", "",
         f"Model: reference LIIF-EDSR-baseline, {s['model']['n_resblocks']} blocks × {s['model']['n_feats']} "
         f"channels, imnet {s['model']['hidden_list']}; patch {s['patch']}, batch {s['batch']}; pretrain "
         f"{s['pretrain_steps']} steps (lr {s['pretrain_lr']:g}); every variant then trains "
         f"{s['finetune_steps'] if s['finetune_steps'] else str(s['epochs']) + ' epochs'} more steps from the "
         f"pretrained weights (lr {s['finetune_lr']:g}); \"original\" trains the same steps without AnySR, the fair "
         "baseline at this scale. Test: " + ", ".join(tests) + f" (centre {s['eval_size'] or 'full'} crops), LR by "
         "PIL bicubic, PSNR on Y with a border of ⌈s⌉. Total time "
         f"{results.get('total_s', 0) / 60:.1f} min.", "",
         "At this size the numbers are noisy (a few hundred steps on a handful of photographs); differences "
         "below ~0.1 dB are not meaningful.", ""]
    tn = list(tests)
    # Table I
    L += ["## Table I — original vs AnySR† (sub-network by scale) and AnySR‡ (full network)", "",
          "| method | " + " | ".join(f"{t} ×{x:g}" for t in tn for x in scales) + " |",
          "|---|" + "---|" * (len(tn) * len(scales))]
    if "original" in V:
        L.append("| original | " + " | ".join(_f(_p(results, "original", x, "orig", t)) for t in tn for x in scales) + " |")
    if "AnySR" in V:
        L.append("| AnySR† | " + " | ".join(_f(_p(results, "AnySR", x, "dagger", t)) for t in tn for x in scales) + " |")
        L.append("| AnySR‡ | " + " | ".join(_f(_p(results, "AnySR", x, "ddagger", t)) for t in tn for x in scales) + " |")
        L.append("| width used by AnySR† | " + " | ".join(f"{V['AnySR']['psnr'][str(x)]['width']:g}" for t in tn
                                                       for x in scales) + " |")
    # Table IV
    if "original" in V and "AnySR" in V:
        o, n = V["original"], V["AnySR"]
        L += ["", "## Table IV — parameters and cost (encoder MACs on a 64×64 LR input)", "",
              "| method | encoder params | " + " | ".join(f"GFLOPs ×{x:g}" for x in scales) + " |",
              "|---|---|" + "---|" * len(scales),
              f"| original | {o['params_encoder'] / 1e6:.4f} M | " +
              " | ".join(f"{o['cost'][str(x)]['encoder_gflops']:.3f}" for x in scales) + " |",
              f"| AnySR† | {n['params_encoder'] / 1e6:.4f} M | " +
              " | ".join(f"{n['cost'][str(x)]['encoder_gflops']:.3f} ({n['cost'][str(x)]['encoder_gflops'] / o['cost'][str(x)]['encoder_gflops']:.3f}×)"
                         for x in scales) + " |",
              "| whole model, AnySR† / original | | " +
              " | ".join(f"{n['cost'][str(x)]['total_gflops'] / o['cost'][str(x)]['total_gflops']:.3f}×" for x in scales) + " |"]
    # Table VII
    abl = [v for v in ("AnySR", "w/o FI", "w/o ASE") if v in V]
    if abl:
        L += ["", "## Table VII — ablation of the feature interweaving (FI) and the scale-aware gate (ASE), AnySR†", "",
              "| variant | " + " | ".join(f"{t} ×{x:g}" for t in tn for x in scales) + " |",
              "|---|" + "---|" * (len(tn) * len(scales))]
        for v in abl:
            L.append(f"| {v} | " + " | ".join(_f(_p(results, v, x, "dagger", t)) for t in tn for x in scales) + " |")
    # Table VIII
    ps = [(v, q) for v, q in (("p = 0", 0.0), ("AnySR", 0.6)) if v in V]
    if ps:
        L += ["", "## Table VIII — reset probability p (AnySR† / AnySR‡)", "",
              "| p | " + " | ".join(f"{t} ×{x:g}" for t in tn for x in scales) + " |",
              "|---|" + "---|" * (len(tn) * len(scales))]
        for v, q in ps:
            L.append(f"| {q} | " + " | ".join(f"{_f(_p(results, v, x, 'dagger', t))} / {_f(_p(results, v, x, 'ddagger', t))}"
                                            for t in tn for x in scales) + " |")
    g = [v for v in ("AnySR", "paper gate") if v in V]
    if len(g) == 2:
        L += ["", "## Gate kinds — identity start (2·sigmoid, fc2 = 0) vs the paper's sigmoid (AnySR† / AnySR‡)", "",
              "| gate | " + " | ".join(f"{t} ×{x:g}" for t in tn for x in scales) + " |",
              "|---|" + "---|" * (len(tn) * len(scales))]
        for v, label in (("AnySR", "identity"), ("paper gate", "paper")):
            L.append(f"| {label} | " + " | ".join(f"{_f(_p(results, v, x, 'dagger', t))} / {_f(_p(results, v, x, 'ddagger', t))}"
                                                for t in tn for x in scales) + " |")
    L += ["", "Training time per variant (s): " + ", ".join(f"{k} {v['train_s']:.0f}" for k, v in V.items()), ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
