"""Where should the gate sit in an RDN block?  Measure it (docs/design.md, RDB).

One pretrained reference LIIF-RDN is fine-tuned with Algorithm 1 in four ways and every
variant is evaluated as AnySR-dagger (the width each scale selects) at x1.5 / x2 / x3 / x4:

* ``first``  (default): the gate on dense layer 0, whose output feeds every later layer and LFF;
* ``last``:  the gate on the last dense layer (feeds LFF only);
* ``none``:  no gate at all (the "w/o ASE" ablation), the lower bound.

The official release's layout (only dense layers 4-7 sliced, prefix inputs, gate on the last
two dense outputs) is not trained here: its compatibility mode keeps the release's 0.1-grid
width lookup, which sends every off-grid training scale to the full network; its gate costs
70,016 parameters per RDB at G = 64 against 18,624 for ``first`` / ``last``.

It prints a markdown table of PSNR (benchmark protocol, held-apart scikit-image photos),
encoder cost ratio per scale and gate parameters per block, and writes it to ``--out``.
At CPU size (default: 3 RDBs x 8 layers, G0 = G = 32) differences below ~0.05 dB are noise.

    python examples/rdb_gate_placement.py [--pretrain-steps 1200] [--finetune-steps 500]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import anysr_plugin as anysr
from anysr_plugin.config import AnySRConfig
from anysr_plugin.data import make_lr, skimage_photos
from anysr_plugin.demo import TEST_PHOTOS, TRAIN_PHOTOS, model_cost, predict
from anysr_plugin.metrics import psnr
from anysr_plugin.reference.models import build_reference
from anysr_plugin.train import TrainConfig, Trainer
from anysr_plugin.files import write_text  # atomic: a stopped run never leaves half a file

SCALES = (1.5, 2.0, 3.0, 4.0)


def variants(seed: int) -> dict:
    return {
        "first (default)": AnySRConfig(seed=seed, rdb_gate="first"),
        "last": AnySRConfig(seed=seed, rdb_gate="last"),
        "none (w/o ASE)": AnySRConfig(seed=seed, interweave="none"),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrain-steps", type=int, default=1200)
    p.add_argument("--finetune-steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-size", type=int, default=128)
    p.add_argument("--out", default=str(Path(__file__).parent / "rdb_gate_placement"))
    a = p.parse_args(argv)
    model_args = dict(G0=32, D=3, C=8, G=32, hidden_list=[64, 64])
    photos = skimage_photos(TRAIN_PHOTOS + TEST_PHOTOS)
    train = [photos[n] for n in TRAIN_PHOTOS]
    tests = [photos[n] for n in TEST_PHOTOS]

    def fit(model, steps, lr):
        cfg = TrainConfig(patch=24, batch_size=8, sample_q=576, steps=steps, lr=lr, lr_step_epochs=10**9,
                          seed=a.seed, progress=True)
        Trainer(model, train, cfg, None).run()

    def evaluate(model, scale):
        vals = []
        for img in tests:
            H, W = img.shape[-2:]
            s = min(a.eval_size, H, W)
            hr_img = img[:, (H - s) // 2:(H - s) // 2 + s, (W - s) // 2:(W - s) // 2 + s]
            lr, hr = make_lr(hr_img, scale)
            vals.append(float(psnr(predict(model, lr, hr.shape[-2:], scale=scale), hr, "benchmark", scale)))
        return sum(vals) / len(vals)

    t0 = time.perf_counter()
    pretrained = build_reference("liif-rdn", seed=a.seed, **model_args)
    print(f"== pretraining LIIF-RDN for {a.pretrain_steps} steps", flush=True)
    fit(pretrained, a.pretrain_steps, 5e-4)
    rows = {}
    original = build_reference("liif-rdn", seed=a.seed, **model_args)
    original.load_state_dict(pretrained.state_dict())
    print(f"== original: {a.finetune_steps} more plain steps", flush=True)
    fit(original, a.finetune_steps, 1e-4)
    base_cost = {s: model_cost(original, (64, 64), (round(64 * s),) * 2, s)["encoder_gflops"] for s in SCALES}
    rows["original"] = {"psnr": {s: evaluate(original, s) for s in SCALES}, "cost": {s: 1.0 for s in SCALES},
                        "gate_params": 0}
    for name, cfg in variants(a.seed).items():
        model = build_reference("liif-rdn", seed=a.seed, **model_args)
        model.load_state_dict(pretrained.state_dict())
        anysr.anysrify(model, cfg)
        print(f"== fine-tuning {name!r}", flush=True)
        fit(model, a.finetune_steps, 1e-4)
        width = {s: anysr.active_widths(model, s)[0] for s in SCALES}
        cost = {s: model_cost(model, (64, 64), (round(64 * s),) * 2, s, width=width[s])["encoder_gflops"]
                / base_cost[s] for s in SCALES}
        gate = model.encoder.RDBs[0].anysr_gate
        rows[name] = {"psnr": {s: evaluate(model, s) for s in SCALES}, "cost": cost, "width": width,
                      "gate_params": sum(p.numel() for p in gate.parameters()) if gate is not None else 0}
    lines = [f"# RDB gate placement (LIIF-RDN {model_args}, pretrain {a.pretrain_steps}, fine-tune "
             f"{a.finetune_steps} steps, {time.perf_counter() - t0:.0f} s)", "",
             "Command: `python examples/rdb_gate_placement.py" +
             (f" --pretrain-steps {a.pretrain_steps}" if a.pretrain_steps != 1200 else "") +
             (f" --finetune-steps {a.finetune_steps}" if a.finetune_steps != 500 else "") + "`", "",
             "PSNR (dB, AnySR-dagger: the width each scale selects) and encoder cost relative to the original.", "",
             "| variant | gate params / RDB | " + " | ".join(f"x{s:g} PSNR (width, cost)" for s in SCALES) + " |",
             "|---|---|" + "---|" * len(SCALES)]
    for name, r in rows.items():
        cells = []
        for s in SCALES:
            w = r.get("width", {}).get(s)
            cells.append(f"{r['psnr'][s]:.2f}" + (f" ({w:g}, {r['cost'][s]:.3f})" if w is not None else ""))
        lines.append(f"| {name} | {r['gate_params']:,} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.md", text)
    write_text(out / "results.json", json.dumps({k: {kk: {str(s): v for s, v in vv.items()} if isinstance(vv, dict)
                                                       else vv for kk, vv in r.items()} for k, r in rows.items()},
                                                 indent=1))
    print(text)


if __name__ == "__main__":
    main()
