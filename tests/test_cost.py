"""Cost tables: hand-computed MACs for small models, Table IV/V figures for EDSR-baseline."""
from __future__ import annotations

import copy
import json

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.cost import (PAPER_HR_SIZE, MacCounter, block_costs, blocks_to_markdown, cost_table, count_flops,
                               count_params, rows_to_markdown, sizes_for, to_json)
from anysr_plugin.errors import ConfigError, ScaleError
from anysr_plugin.reference import make_edsr_baseline

from conftest import tiny_edsr, tiny_rdn


def test_hand_computed_macs_tiny_edsr():
    # 2 blocks, C = 16, 3x3 convs, input 5x7 (35 pixels)
    o = tiny_edsr()
    m = anysr.anysrify(copy.deepcopy(o))
    x = torch.rand(1, 3, 5, 7)
    P = 35
    head, tail = 3 * 16 * 9, 16 * 16 * 9
    block_full = 2 * 16 * 16 * 9
    assert count_flops(o, x) == P * (head + 2 * block_full + tail)
    for w, n in ((0.5, 8), (0.7, 11), (0.9, 14), (1.0, 16)):
        conv = P * (head + tail + 2 * (16 * n * 9 + n * 16 * 9))
        # gate per block: fc1 (n + 2*pairs) x 32, fc2 32 x n; lambda 4 -> chunk 4
        pairs = n // 4
        gate = (n + 2 * pairs) * 32 + 32 * n
        assert count_flops(m, x, width=w, scale=2.0) == conv + 2 * gate, w


def test_hand_computed_rdb_block_macs():
    m = anysr.anysrify(tiny_rdn(D=1, C=3, G0=16, G=16))
    rows = {r.width: r for r in block_costs(m, (4, 5))}
    # growth g: layer k reads 16 + k*g, writes g (3x3); LFF reads 16 + 3g -> 16 (1x1)
    for w, g in ((0.5, 8), (1.0, 16)):
        per_px = sum((16 + k * g) * g * 9 for k in range(3)) + (16 + 3 * g) * 16
        assert rows[w].conv_macs == 20 * per_px
        assert rows[w].channels == g


def test_table_v_edsr_baseline_block():
    m = anysr.anysrify(make_edsr_baseline())
    rows = block_costs(m, (200, 300))
    first = [r for r in rows if r.name == rows[0].name]
    by_w = {r.width: r for r in first}
    assert len({r.name for r in rows}) == 16
    for r in first:
        assert r.conv_params == 73_856 and r.gate_params == 17_600 and r.params == 91_456
    assert by_w[0.7].conv_macs * 64 == by_w[1.0].conv_macs * 44      # x2 sub-network: 44/64
    assert by_w[0.9].conv_macs * 64 == by_w[1.0].conv_macs * 57      # x3 sub-network: 57/64
    assert by_w[1.0].conv_macs == 73_728 * 60_000                    # 4423.68 M MACs (8.86 G FLOPs with bias)
    # Table V's ReLU / GAP columns: 3.84 M at full width, 2.64 M at w = 0.7 on 60,000 pixels
    assert by_w[1.0].act_ops == 3_840_000 and by_w[0.7].gap_ops == 2_640_000
    # FC: 0.035 M FLOPs at full width, 0.024 M at x2 (2 x MACs)
    assert round(2 * by_w[1.0].gate_macs / 1e6, 3) == 0.035
    assert round(2 * by_w[0.7].gate_macs / 1e6, 3) == 0.024
    assert "91,456" in blocks_to_markdown(rows)


def test_table_iv_edsr_baseline_encoder():
    o = make_edsr_baseline()
    m = anysr.anysrify(copy.deepcopy(o))
    assert round(count_params(o) / 1e6, 2) == 1.22 and round(count_params(m) / 1e6, 2) == 1.50
    assert count_params(m) - count_params(o) == 16 * 17_600
    rows = cost_table(m, [2, 3, 4], widths="policy", original=o)
    anysr_rows = [r for r in rows if r.model == "anysr"]
    assert [r.width for r in anysr_rows] == [0.7, 0.9, 1.0]
    assert [r.lr_size for r in anysr_rows] == [(200, 300), (133, 200), (100, 150)]
    P = 200 * 300
    per_px_orig = 3 * 64 * 9 + 16 * 73_728 + 64 * 64 * 9
    assert rows[0].model == "original" and rows[0].macs == P * per_px_orig
    ratios = [round(r.ratio, 4) for r in anysr_rows]
    assert ratios[0] == pytest.approx(0.6974, abs=2e-4)   # Table IV: 69.25-72.28 % at x2
    assert ratios[1] == pytest.approx(0.8941, abs=2e-4)   # Table IV: 85.30-91.85 % at x3
    assert anysr_rows[2].ratio == pytest.approx(1.0, abs=1e-4)  # x4: the full network (+gates)
    md = rows_to_markdown(rows)
    assert "69.74%" in md and "| x3 | anysr | 0.9 |" in md
    data = json.loads(to_json(rows))
    assert data["rows"][1]["width"] == 0.7 and data["rows"][1]["lr_size"] == [200, 300]


def test_meta_counting_equals_real_counting():
    m = anysr.anysrify(tiny_edsr())
    x = torch.rand(1, 3, 6, 6)
    meta = MacCounter(m, use_meta=True)
    real = MacCounter(m, use_meta=False)
    for w in (0.5, 1.0):
        assert meta(x, width=w, scale=2.0) == real(x, width=w, scale=2.0) == count_flops(m, x, width=w, scale=2.0)


def test_sizes_for_consistent_pixel_size():
    assert sizes_for(2, hr_size=PAPER_HR_SIZE) == ((200, 300), (400, 600))
    assert sizes_for((1.5, 3), hr_size=(30, 30)) == ((20, 10), (30, 30))
    assert sizes_for(2.5, lr_size=(10, 11)) == ((10, 11), (25, 28))
    with pytest.raises(ConfigError):
        sizes_for(2, hr_size=(4, 4), lr_size=(2, 2))
    with pytest.raises(ScaleError):
        sizes_for(100, hr_size=(4, 4))
    with pytest.raises(ScaleError):
        sizes_for(-1, hr_size=(4, 4))


def test_cost_table_all_widths_and_lr_size():
    m = anysr.anysrify(tiny_edsr())
    rows = cost_table(m, [(2, 3)], widths="all", lr_size=(8, 8))
    assert [r.width for r in rows] == [0.5, 0.7, 0.9, 1.0]
    assert rows[-1].ratio == 1.0 and rows[0].ratio < rows[1].ratio < rows[2].ratio < 1.0
    assert rows[0].hr_size == (16, 24) and rows[0].scale == (2.0, 3.0)


def test_cost_split_whole_model_encoder_and_blocks():
    from anysr_plugin.cost import call_inputs, cost_split, encoder_path, split_to_markdown
    from anysr_plugin.reference import build_reference

    o = build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16, hidden_list=[16])
    m = anysr.anysrify(copy.deepcopy(o))
    assert encoder_path(o) == encoder_path(m) == "encoder"  # the LIIF adapter's block root
    rows = cost_split(m, o, [2.0, 4.0], widths="all", hr_size=(12, 16))
    assert [(r.scale[0], r.width) for r in rows] == [(s, w) for s in (2.0, 4.0) for w in (0.5, 0.7, 0.9, 1.0)]
    for r in rows:
        lr, hr = sizes_for(r.scale, hr_size=(12, 16))
        x = torch.rand(1, 3, *lr)
        # independent counts: the encoder alone on the LR image, the whole call as the adapter builds it
        assert r.original_encoder_macs == count_flops(o.encoder, x)
        assert r.encoder_macs == count_flops(m.encoder, x, width=r.width, scale=r.scale)
        assert r.original_macs == count_flops(o, *call_inputs(o, lr, hr))
        assert r.macs == count_flops(m, *call_inputs(m, lr, hr), width=r.width, scale=r.scale)
        decoder = r.original_macs - r.original_encoder_macs
        assert r.macs - r.encoder_macs == decoder  # AnySR leaves the decoder's cost alone
        head_tail = lr[0] * lr[1] * (3 * 16 * 9 + 16 * 16 * 9)
        assert r.original_blocks_macs == r.original_encoder_macs - head_tail
        assert r.encoder_share == pytest.approx(r.original_encoder_macs / r.original_macs)
        assert r.model_ratio == pytest.approx(r.macs / r.original_macs)
    x2 = [r for r in rows if r.scale[0] == 2.0]
    assert x2[0].model_ratio < x2[1].model_ratio < x2[2].model_ratio < 1.0 < x2[3].model_ratio  # gates cost a bit
    assert rows[0].encoder_share > rows[4].encoder_share  # the decoder runs on HR pixels: share falls with scale
    assert "| x2 | 0.5 |" in split_to_markdown(rows)
    bare = cost_split(anysr.anysrify(tiny_edsr()), tiny_edsr(), [2.0], hr_size=(8, 8))[0]
    assert bare.encoder_share == 1.0 and bare.model_ratio == bare.encoder_ratio < 1.0


def test_cli_flops_prints_the_split(capsys):
    from anysr_plugin.cli import main

    args = ["flops", "--model", "liif-edsr-baseline", "--model-arg", "n_resblocks=1", "--model-arg", "n_feats=8",
            "--model-arg", "hidden_list=[8]", "--hr-size", "12x12", "--no-blocks"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "where AnySR pays off" in out and "encoder share" in out
    assert main(args + ["--format", "json"]) == 0
    split = json.loads(capsys.readouterr().out)["split"]
    assert [s["width"] for s in split] == [0.7, 0.9, 1.0] and all(0 < s["encoder_share"] < 1 for s in split)
