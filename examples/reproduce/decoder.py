"""Beyond the paper: encoder-only AnySR vs encoder + slimmable decoder (``decoder="slim"``).

Same CPU-scale setup as ``reproduce.py`` (same model, data, pretraining and fine-tune
budget, so its "original" and "AnySR" rows reproduce that script's): one pretrained
reference LIIF-EDSR-baseline is fine-tuned, with the same steps, as

* **original**        plain continued training (the fair baseline);
* **AnySR**           encoder-only AnySR (the paper);
* **AnySR+dec**       AnySR with the ``imnet`` hidden width chosen by the same scale groups
                      (decoder widths = encoder widths 0.5 / 0.7 / 0.9 / 1);
* **AnySR+dec wide**  the same with wider small-scale decoders (``--wide-widths``, default
                      0.6 / 0.75 / 0.9 / 1: the widest that still meets the 0.75x MACs bar at x2);
* **... sorted**      the same after ``sort_hidden_units`` (most important hidden units first,
                      a function-preserving permutation of the pretrained decoder).

Every AnySR model is evaluated as AnySR-dagger (the width the scale selects).  The issue's
bar: ship ``decoder="slim"`` if at x2 the whole-model MACs are <= 0.75x the original's with
AnySR-dagger PSNR within 0.1 dB of encoder-only AnySR-dagger.  Writes ``decoder.md`` and
``decoder.json`` (and the command) into ``--out``.

    python examples/reproduce/decoder.py            # ~20 min on 2 busy CPU cores
    python examples/reproduce/decoder.py --quick    # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce import load_data, psnr_of, settings, train  # noqa: E402

from anysr_plugin.config import AnySRConfig  # noqa: E402
from anysr_plugin.control import get_state  # noqa: E402
from anysr_plugin.decoder import sort_hidden_units  # noqa: E402
from anysr_plugin.demo import model_cost  # noqa: E402
from anysr_plugin.injection import anysrify  # noqa: E402
from anysr_plugin.reference.models import build_reference  # noqa: E402
from anysr_plugin.files import write_text  # noqa: E402  (atomic: a stopped run leaves no half file)

BAR_RATIO, BAR_DB, BAR_SCALE = 0.75, 0.1, 2.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--finetune-steps", type=int, default=None)
    p.add_argument("--scales", default="1.5,2,3,4")
    p.add_argument("--wide-widths", default="0.6,0.75,0.9,1.0", help="decoder widths of 'AnySR+dec wide'")
    p.add_argument("--eval-size", type=int, default=None)
    p.add_argument("--variants", default=None, help="comma-separated; default: all")
    p.add_argument("--work", default=None, help="folder for resumable checkpoints (pretraining is reused)")
    # reproduce.settings reads these
    p.set_defaults(paper_size=False, train_dir=None, test_dir=[], epochs=None)
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    s = settings(a)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    train_imgs, tests = load_data(a)
    scales = [float(x) for x in a.scales.split(",")]
    wide = tuple(float(x) for x in a.wide_widths.split(","))
    variants = {"original": None, "AnySR": dict(),
                "AnySR+dec": dict(decoder="slim"),
                "AnySR+dec wide": dict(decoder="slim", decoder_widths=wide),
                "AnySR+dec wide sorted": dict(decoder="slim", decoder_widths=wide, sort=True),
                "AnySR+dec sorted": dict(decoder="slim", sort=True)}
    names = [v.strip() for v in a.variants.split(",")] if a.variants else list(variants)
    if [n for n in names if n not in variants] or names[:2] != ["original", "AnySR"]:
        raise SystemExit(f"--variants: 'original,AnySR' first, then any of {list(variants)[2:]}")
    variants = {n: variants[n] for n in names}
    work = Path(a.work) if a.work else None

    def build():
        return build_reference("liif-edsr-baseline", seed=a.seed, **s["model"]).to(a.device)

    pretrained = build()
    print(f"== pretraining the original for {s['pretrain_steps']} steps", flush=True)
    train(pretrained, train_imgs, s, s["pretrain_steps"], s["pretrain_lr"], a,
          out=work / "pretrain" if work else None)
    results = {"settings": s, "scales": scales, "variants": {}, "bicubic": {}}
    previous = {}
    if (out / "decoder.json").is_file():  # a re-run that resumes finished checkpoints keeps their train times
        previous = json.loads((out / "decoder.json").read_text()).get("variants", {})
    for scale in scales:
        results["bicubic"][str(scale)] = bicubic_psnr(tests, scale, s["eval_size"])
    for name, changes in variants.items():
        model = build()
        model.load_state_dict(pretrained.state_dict())
        if changes is not None:
            changes = dict(changes)
            sort = changes.pop("sort", False)
            model = anysrify(model, AnySRConfig(seed=a.seed, **changes))
            if sort:  # most important hidden units first, so the narrow prefixes start useful
                sort_hidden_units(model)
        print(f"== fine-tuning {name!r}", flush=True)
        t0 = time.perf_counter()
        train(model, train_imgs, s, s["finetune_steps"], s["finetune_lr"], a,
              out=work / name.replace(" ", "_").replace("+", "_") if work else None)
        train_s = time.perf_counter() - t0
        if work is not None and train_s < 5 and name in previous:  # nothing left to train: resumed at the end
            train_s = previous[name]["train_s"]
        entry = {"train_s": train_s, "config": None if changes is None else
                 get_state(model).config.to_dict(), "psnr": {}, "cost": {}, "width": {}}
        for scale in scales:
            w = None if changes is None else get_state(model).config.width_for_scale(scale)
            entry["psnr"][str(scale)] = psnr_of(model, tests, scale, None, s["eval_size"])
            if w is not None:
                cfg = get_state(model).config
                entry["width"][str(scale)] = [w, cfg.decoder_width_for(w) if cfg.decoder == "slim" else 1.0]
            hr = (round(64 * scale), round(64 * scale))  # cost on a 64x64 LR input, as reproduce.py
            entry["cost"][str(scale)] = model_cost(model, (64, 64), hr, scale, width=w)
        results["variants"][name] = entry
        print(json.dumps({k: entry[k] for k in ("psnr", "width")}), flush=True)
    results["total_s"] = time.perf_counter() - t_start
    cmd = "python " + " ".join(shlex.quote(x) for x in
                               [os.path.relpath(__file__)] + list(sys.argv[1:] if argv is None else argv))
    results["command"] = cmd
    write_text(out / "decoder.json", json.dumps(results, indent=1))
    write_text(out / "decoder.md", render(results, tests, cmd))
    print((out / "decoder.md").read_text())


def bicubic_psnr(tests, scale, eval_size):
    from anysr_plugin.data import bicubic_upsample, make_lr
    from anysr_plugin.metrics import psnr
    from reproduce import crop

    out = {}
    for tname, imgs in tests.items():
        vals = []
        for img in imgs.values():
            lr, hr = make_lr(crop(img, eval_size), scale)
            vals.append(float(psnr(bicubic_upsample(lr, hr.shape[-2:]), hr, protocol="benchmark", scale=scale)))
        out[tname] = sum(vals) / len(vals)
    return out


def verdict(results, name):
    V = results["variants"]
    k = str(BAR_SCALE)
    ratio = V[name]["cost"][k]["total_gflops"] / V["original"]["cost"][k]["total_gflops"]
    t = next(iter(V[name]["psnr"][k]))
    drop = V["AnySR"]["psnr"][k][t] - V[name]["psnr"][k][t]
    return ratio, drop, ratio <= BAR_RATIO and drop <= BAR_DB


def render(results, tests, cmd):
    V, scales, s = results["variants"], results["scales"], results["settings"]
    tn = list(tests)
    L = ["# Slimmable decoder (beyond the paper) at CPU scale", "", f"Command: `{cmd}`", "",
         f"Model: reference LIIF-EDSR-baseline, {s['model']['n_resblocks']} blocks × {s['model']['n_feats']} "
         f"channels, imnet {s['model']['hidden_list']}; patch {s['patch']}, batch {s['batch']}; pretrain "
         f"{s['pretrain_steps']} steps (lr {s['pretrain_lr']:g}), then every variant fine-tunes "
         f"{s['finetune_steps']} steps from the same pretrained weights (lr {s['finetune_lr']:g}). Test: "
         + ", ".join(tn) + f" (centre {s['eval_size']} crops), PSNR on Y with a border of ⌈s⌉. AnySR rows are "
         f"AnySR† (width by scale). Wall time of this invocation {results['total_s'] / 60:.1f} min (with `--work`, "
         "finished trainings are resumed, not repeated; the training times at the end are those of the run that "
         "trained each variant).", "",
         "## PSNR (dB)", "",
         "| variant | " + " | ".join(f"{t} ×{x:g}" for t in tn for x in scales) + " |",
         "|---|" + "---|" * (len(tn) * len(scales))]
    L.append("| bicubic | " + " | ".join(f"{results['bicubic'][str(x)][t]:.2f}" for t in tn for x in scales) + " |")
    for name, e in V.items():
        L.append(f"| {name} | " + " | ".join(f"{e['psnr'][str(x)][t]:.2f}" for t in tn for x in scales) + " |")
    L += ["", "## Widths (encoder / decoder) and whole-model MACs / original (64×64 LR input)", "",
          "| variant | " + " | ".join(f"×{x:g}" for x in scales) + " |", "|---|" + "---|" * len(scales)]
    o = V["original"]["cost"]
    L.append("| original (GMACs) | " + " | ".join(f"{o[str(x)]['total_gflops']:.3f} (encoder "
                                                  f"{o[str(x)]['encoder_gflops'] / o[str(x)]['total_gflops']:.0%})"
                                                  for x in scales) + " |")
    for name, e in V.items():
        if name == "original":
            continue
        L.append(f"| {name} | " + " | ".join(
            f"{e['width'][str(x)][0]:g} / {e['width'][str(x)][1]:g}: "
            f"{e['cost'][str(x)]['total_gflops'] / o[str(x)]['total_gflops']:.3f}×" for x in scales) + " |")
    L += ["", f"## Verdict (bar: at ×{BAR_SCALE:g} whole-model MACs ≤ {BAR_RATIO}× the original and AnySR† PSNR "
          f"within {BAR_DB} dB of encoder-only AnySR†)", ""]
    for name in V:
        if name.startswith("AnySR+dec"):
            ratio, drop, ok = verdict(results, name)
            L.append(f"- {name}: MACs {ratio:.3f}×, PSNR {-drop:+.2f} dB vs encoder-only AnySR† -> "
                     f"{'meets' if ok else 'fails'} the bar")
    L += ["", "Training time per variant (s): " + ", ".join(f"{k} {v['train_s']:.0f}" for k, v in V.items()), ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
