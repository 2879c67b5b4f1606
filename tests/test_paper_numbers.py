"""Numbers the paper states for EDSR-baseline (Tables IV and V), computed on our look-alike."""
import torch
from torch.utils.flop_counter import FlopCounterMode

import anysr_plugin as anysr
from anysr_plugin.reference import make_edsr_baseline


def conv_macs(model, x):
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(x)
    counts = counter.get_flop_counts()["Global"]
    return sum(v for k, v in counts.items() if "convolution" in str(k)) // 2


def test_table_v_parameters_per_block_and_table_iv_encoder_size():
    model = make_edsr_baseline()
    assert sum(p.numel() for p in model.parameters()) == 1_220_440  # "1.22 M"
    assert sum(p.numel() for p in model.body[0].parameters()) == 73_856
    anysr.anysrify(model)
    block = model.body[0]
    assert sum(p.numel() for p in block.parameters()) == 91_456  # 73,856 conv + 17,600 gate
    assert sum(p.numel() for p in block.anysr_gate.parameters()) == 17_600
    assert sum(p.numel() for p in model.parameters()) == 1_502_040  # "1.50 M"


def test_table_v_conv_cost_ratios():
    block_model = make_edsr_baseline(n_resblocks=1).eval()
    anysr.anysrify(block_model)
    block = block_model.body[0]
    x = torch.randn(1, 64, 16, 16)
    macs = {}
    for w in (0.5, 0.7, 0.9, 1.0):
        with anysr.use_width(block_model, w), anysr.use_scale(block_model, 2.0):
            macs[w] = conv_macs(block, x)
    assert macs[1.0] == 2 * 64 * 64 * 9 * 16 * 16
    assert macs[0.7] * 64 == macs[1.0] * 44  # x2: 6090 M / 8860 M in Table V
    assert macs[0.9] * 64 == macs[1.0] * 57  # x3: 3500 M / 3920 M
    assert macs[0.5] * 64 == macs[1.0] * 32
    for w, m in macs.items():
        assert m == block.conv_macs_per_pixel(w) * 16 * 16


def test_count_flops_charges_only_the_sliced_convolutions():
    model = anysr.anysrify(make_edsr_baseline(n_resblocks=2).eval())
    x = torch.randn(1, 3, 12, 12)
    full = anysr.count_flops(model, x, width=1.0, scale=4.0)
    half = anysr.count_flops(model, x, width=0.5, scale=1.5)
    per_pixel_saved = 2 * (model.body[0].conv_macs_per_pixel(1.0) - model.body[0].conv_macs_per_pixel(0.5))
    gate_diff = 2 * ((128 * 72 + 64 * 128) - (128 * 36 + 32 * 128))  # fc1 and fc2 slices of two gates
    assert full - half == per_pixel_saved * 144 + gate_diff
