"""eval harness: numbers against hand computations, modes, JSON shape, LPIPS paths."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.cost import build_model, call_inputs, count_flops
from anysr_plugin.data import bicubic_upsample, make_lr, save_image
from anysr_plugin.errors import AdapterError, AnySRError, ConfigError, ScaleError
from anysr_plugin.evaluate import (evaluate, load_dataset, parse_scale, results_to_json, results_to_markdown,
                                   super_resolve)
from anysr_plugin.metrics import LPIPSMetric

from conftest import tiny_edsr


def _images(n=2, h=30, w=36, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):  # smooth-ish content: a gradient plus noise, quantised to 8 bits
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        base = torch.stack([yy, xx, (yy + xx) / 2]) * 0.6 + 0.2
        img = (base + 0.1 * torch.rand(3, h, w, generator=g)).clamp(0, 1)
        out.append((f"im{i}.png", (img * 255).round() / 255))
    return out


def _hand_psnr_y(sr, hr, shave):
    d = (sr.double() - hr.double()).numpy()
    y = (65.738 * d[0] + 129.057 * d[1] + 25.064 * d[2]) / 256.0
    y = y[shave:-shave, shave:-shave]
    return -10 * math.log10(float(np.mean(y ** 2)))


def _hand_psnr_rgb(sr, hr, shave):
    d = (sr.double() - hr.double()).numpy()[:, shave:-shave, shave:-shave]
    return -10 * math.log10(float(np.mean(d ** 2)))


@pytest.fixture(scope="module")
def liif():
    m = build_model("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=8, hidden_list=[16])
    return anysr.anysrify(m).eval()


def test_bicubic_baseline_against_hand_computation(tmp_path):
    items = _images()
    for name, img in items:
        save_image(img, tmp_path / name)
    data = load_dataset(str(tmp_path))
    res = evaluate(None, data, [2, 3], baseline="bicubic")
    for r, s in zip(res, (2, 3)):
        vals = []
        for _, hr in items:
            lr, crop = make_lr(hr, s)
            sr = bicubic_upsample(lr, crop.shape[-2:])
            vals.append(_hand_psnr_y(sr, crop, s))
        assert r.mode == "bicubic" and r.width is None and r.gflops is None and r.images == 2
        assert r.psnr == pytest.approx(sum(vals) / 2, abs=1e-4)
    div = evaluate(None, data, [2], baseline="bicubic", protocol="div2k", bicubic="matlab")[0]
    vals = []
    for _, hr in items:
        lr, crop = make_lr(hr, 2, method="matlab")
        vals.append(_hand_psnr_rgb(bicubic_upsample(lr, crop.shape[-2:], method="matlab"), crop, 2 + 6))
    assert div.psnr == pytest.approx(sum(vals) / 2, abs=1e-4)


def test_model_modes_widths_psnr_and_gflops(liif):
    items = _images(1, 24, 24)
    res = evaluate(liif, ("hr", items), [2, "1.5x3", 8], modes=("subnet", "full", 0.5), baseline="bicubic")
    got = {(str(r.scale), r.mode): r for r in res}
    assert got[("2.0", "subnet")].width == 0.7            # x2 -> S2 group
    assert got[("[1.5, 3.0]", "subnet")].width == 0.9     # max(s_h, s_w) = 3 -> S3
    assert got[("8.0", "subnet")].width == 1.0            # out of distribution -> full network
    assert got[("2.0", "full")].width == 1.0 and got[("2.0", "width 0.5")].width == 0.5
    hr = items[0][1]
    lr, crop = make_lr(hr, (1.5, 3.0))
    sr = super_resolve(liif, lr, crop.shape[-2:], (1.5, 3.0), 0.9)
    r = got[("[1.5, 3.0]", "subnet")]
    from anysr_plugin.metrics import psnr

    assert r.psnr == pytest.approx(float(psnr(sr[None], crop[None], "benchmark", (1.5, 3.0))), abs=1e-5)
    bic = got[("[1.5, 3.0]", "bicubic")]  # asymmetric: shave ceil(s) per axis = (2, 3)
    d = (bicubic_upsample(lr, crop.shape[-2:]).double() - crop.double())
    y = (65.738 * d[0] + 129.057 * d[1] + 25.064 * d[2]) / 256.0
    assert bic.psnr == pytest.approx(-10 * math.log10(float(y[2:-2, 3:-3].pow(2).mean())), abs=1e-4)
    ins = call_inputs(liif, lr.shape[-2:], crop.shape[-2:])
    assert r.gflops == pytest.approx(2 * count_flops(liif, *ins, width=0.9, scale=(1.5, 3.0)) / 1e9, rel=1e-9)
    assert got[("2.0", "width 0.5")].gflops < got[("2.0", "subnet")].gflops < got[("2.0", "full")].gflops


def test_chunked_queries_equal_one_pass(liif):
    lr = torch.rand(3, 9, 10, generator=torch.Generator().manual_seed(3))
    a = super_resolve(liif, lr, (20, 23), 2.2, None, chunk=37)
    b = super_resolve(liif, lr, (20, 23), 2.2, None, chunk=10_000)
    assert torch.allclose(a, b, atol=1e-6) and a.shape == (3, 20, 23)
    srno = anysr.anysrify(build_model("srno-edsr-baseline", seed=0, n_resblocks=1, width=16, blocks=2)).eval()
    a = super_resolve(srno, lr, (20, 23), 2.2, None, chunk=23 * 3)  # one pass whatever the chunk
    ins = call_inputs(srno, (9, 10), (20, 23), lr=(lr[None] - 0.5) / 0.5)
    with torch.no_grad(), anysr.use_scale(srno, 2.2):
        ref = (srno(*ins)[0] * 0.5 + 0.5).clamp(0, 1)
    assert torch.allclose(a, ref, atol=1e-6)


def test_budget_mode(liif):
    items = _images(1, 24, 24)
    lr, crop = make_lr(items[0][1], 4)
    ins = call_inputs(liif, lr.shape[-2:], crop.shape[-2:])
    g = {w: 2 * count_flops(liif, *ins, width=w, scale=4.0) / 1e9 for w in (0.5, 0.7, 0.9, 1.0)}
    r = evaluate(liif, ("hr", items), [4], modes=("budget",), budget_gflops=(g[0.7] + g[0.9]) / 2)[0]
    assert r.mode == "budget" and r.width == 0.7 and r.gflops == pytest.approx(g[0.7])
    with pytest.raises(ConfigError):
        evaluate(liif, ("hr", items), [4], modes=("budget",))


def test_json_and_markdown(tmp_path, liif):
    res = evaluate(liif, ("hr", _images(1, 64, 64)), [2], modes=("subnet",), baseline="bicubic",
                   lpips_metric=LPIPSMetric(pnet_rand=True))
    path = tmp_path / "r.json"
    results_to_json(res, path)
    data = json.loads(path.read_text())
    assert list(data) == ["results"]
    for row in data["results"]:
        assert list(row) == ["scale", "width", "psnr", "lpips", "gflops", "encoder_gmacs", "mode"]
        assert isinstance(row["lpips"], float) and row["lpips"] >= 0
    assert data["results"][0]["width"] is None and data["results"][1]["width"] == 0.7
    md = results_to_markdown(res)
    assert "| x2 | bicubic | - | - |" in md and "| x2 | subnet | 0.7 | " in md
    # the encoder's multiply-adds at the width that ran: 64x64 HR -> 32x32 LR, every conv of the encoder
    enc = anysr.cost.encoder_of(liif)
    expect = anysr.cost.count_flops(enc, torch.zeros(1, 3, 32, 32), width=0.7, scale=2.0) / 1e9
    assert data["results"][1]["encoder_gmacs"] == pytest.approx(expect, rel=1e-9) and expect > 0
    assert data["results"][0]["encoder_gmacs"] is None
    assert f"| x2 | subnet | 0.7 | {expect:.3f} |" in md


def test_lpips_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(AnySRError) as e:
        evaluate(None, ("hr", _images(1, 64, 64)), [2], baseline="bicubic", lpips=True)
    assert "alexnet-owt-7be5be79.pth" in str(e.value) and "--lpips-weights" in str(e.value)


def test_errors_and_scale_parsing():
    assert parse_scale("2") == (2.0, 2.0) and parse_scale("1.5x3") == (1.5, 3.0) and parse_scale(2.5) == (2.5, 2.5)
    with pytest.raises(ScaleError):
        parse_scale("abc")
    with pytest.raises(ScaleError):
        parse_scale("-2")
    enc = anysr.anysrify(tiny_edsr())
    with pytest.raises(AdapterError, match="encoder"):
        super_resolve(enc, torch.rand(3, 4, 4), (8, 8))
    with pytest.raises(ConfigError):
        evaluate(None, ("hr", _images(1)), [2])


def test_scale_lists_accept_commas_and_spaces():
    from anysr_plugin.evaluate import parse_scales

    assert parse_scales(["2,3", "4", "1.5x3"]) == [(2.0, 2.0), (3.0, 3.0), (4.0, 4.0), (1.5, 3.0)]
    assert parse_scales([2.5]) == [(2.5, 2.5)]
