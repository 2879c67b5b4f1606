"""Lay out a few real images the way Meta-SR's and ArbSR's loaders expect (CPU smoke runs).

    python examples/metasr/make_toy_data.py --out DIR [--arbsr] [--train-size 192] [--test-size 96]

Images: scikit-image's bundled colour photos (``skimage.data``): astronaut, coffee, chelsea,
rocket for training (``DIR/DIV2K``) and astronaut, coffee, chelsea, immunohistochemistry, rocket
for testing (``DIR/benchmark/Set5``; other crops than the training ones, so they overlap
only partly -- a smoke test, not a benchmark).
Each HR image is a centre crop (``--train-size`` / ``--test-size`` pixels square, chosen
divisible by every scale so no MATLAB pre-crop is needed), and each LR image is made with
``anysr_plugin.imresize.imresize_matlab`` -- a re-implementation of MATLAB's
``imresize(HR, 1/s, 'bicubic')`` on uint8 images, the protocol that made the upstream LR
folders (bit-exact to the Meta-SR Set5 LR PNGs at x2/x3/x4).  For asymmetric pairs
(``--arbsr``) the LR size is ``[round(h/s), round(w/s2)]`` as ArbSR's ``gen_training_data.m``.

Folders (names ``0001.png`` ... like DIV2K, same name in HR and LR)::

    DIR/DIV2K/HR/0001.png
    DIR/DIV2K/LR_bicubic/X2.00/0001.png          (Meta-SR and ArbSR, s == s2)
    DIR/DIV2K/LR_bicubic/X1.50_X3.00/0001.png    (ArbSR, s != s2)
    DIR/benchmark/Set5/HR/0001.png, DIR/benchmark/Set5/LR_bicubic/X.../0001.png
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from anysr_plugin.imresize import imresize_matlab

TRAIN = ("astronaut", "coffee", "chelsea", "rocket")
TEST = ("astronaut", "coffee", "chelsea", "immunohistochemistry", "rocket")
SYM = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
ASYM = ((1.5, 3.0), (2.0, 4.0), (3.0, 1.5))


def _image(name: str) -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    return img[..., :3]


def _crop(img: np.ndarray, size: int, offset: float) -> np.ndarray:
    h, w = img.shape[:2]
    side = min(h, w)
    big = img[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    # downscale the square to 2*size (so a crop shows real content, not one texture), then crop
    t = torch.from_numpy(big).permute(2, 0, 1).float() / 255
    t = imresize_matlab(t, size=(2 * size, 2 * size))
    y0 = int(offset * size)
    return (t[:, y0:y0 + size, y0:y0 + size].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _lr(hr: np.ndarray, s: float, s2: float) -> np.ndarray:
    h, w = hr.shape[:2]
    t = torch.from_numpy(hr).permute(2, 0, 1).float() / 255
    lr = imresize_matlab(t, size=(round(h / s), round(w / s2)))
    return (lr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def write_set(root: Path, names, size: int, offset: float, pairs) -> None:
    (root / "HR").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names, 1):
        hr = _crop(_image(name), size, offset)
        stem = f"{i:04d}"
        Image.fromarray(hr).save(root / "HR" / f"{stem}.png")
        for s, s2 in pairs:
            sub = f"X{s:.2f}" if s == s2 else f"X{s:.2f}_X{s2:.2f}"
            (root / "LR_bicubic" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(_lr(hr, s, s2)).save(root / "LR_bicubic" / sub / f"{stem}.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--arbsr", action="store_true", help="also write asymmetric X{s}_X{s2} folders")
    p.add_argument("--train-size", type=int, default=192)
    p.add_argument("--test-size", type=int, default=96)
    a = p.parse_args(argv)
    pairs = [(s, s) for s in SYM] + (list(ASYM) if a.arbsr else [])
    write_set(a.out / "DIV2K", TRAIN, a.train_size, 0.5, pairs)
    write_set(a.out / "benchmark" / "Set5", TEST, a.test_size, 0.25, pairs)
    n = sum(1 for _ in a.out.rglob("*.png"))
    print(f"wrote {n} PNGs under {a.out} (scales {', '.join(f'{s:g}x{s2:g}' for s, s2 in pairs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
