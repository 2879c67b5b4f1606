"""Blocks are recognised by what they compute: every layout in lookalike_blocks converts with no
code per layout, runs the original function at full width, really slices its inner convolutions
(seen on the convolution calls themselves), mixes widths exactly and exports; what the patterns
do not explain is skipped or refused with the reason."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig
from anysr_plugin.blocks import AnySRBlock
from anysr_plugin.errors import NoBlocksError

import lookalike_blocks as L
from conftest import assert_mixed_batch_equals_each_sample, randomize_gates

VARIANTS = L.variants()
X2 = 2.0  # width 0.7 under the default scale groups


class ConvRecorder(TorchDispatchMode):
    """Records the weight shape (out, in) of every convolution that really runs."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            self.weights.append(tuple(args[1].shape[:2]))
        return func(*args, **(kwargs or {}))


def _net(name, seed=0, c=16):
    torch.manual_seed(seed)
    return L.Net(VARIANTS[name][0], c).eval()


def _blocks(model):
    return [m for m in model.modules() if isinstance(m, AnySRBlock)]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_layout_converts_and_keeps_the_function(name):
    model = _net(name)
    x = torch.randn(2, 3, 8, 7)
    with torch.no_grad():
        before = model(x)
    anysr.anysrify(model)
    blocks = _blocks(model)
    assert len(blocks) == 2 and {b.family for b in blocks} == {VARIANTS[name][1]}
    with torch.no_grad(), anysr.use_scale(model, 4.0):
        assert (model(x) - before).abs().max() <= 1e-5


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_x2_runs_fewer_channels_in_the_inner_convolutions(name):
    model = anysr.anysrify(_net(name))
    x = torch.randn(1, 3, 8, 8)
    runs = {}
    for scale in (4.0, X2):
        with torch.no_grad(), anysr.use_scale(model, scale), ConvRecorder() as rec:
            model(x)
        runs[scale] = rec.weights
    full, slim = runs[4.0], runs[X2]
    assert len(full) == len(slim) and all(s[0] <= f[0] and s[1] <= f[1] for f, s in zip(full, slim))
    block = _blocks(model)[0]
    kept = set(block.counts(block.width_channels(0.7)))
    fewer_out = [s[0] for f, s in zip(full, slim) if s[0] < f[0]]
    fewer_in = [s for f, s in zip(full, slim) if s[1] < f[1]]
    assert fewer_out and set(fewer_out) <= kept and fewer_in, (full, slim)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_mixed_widths_equal_each_sample_and_export_equals_the_model(name):
    model = anysr.anysrify(_net(name), AnySRConfig(gate="paper"))
    randomize_gates(model)
    x = torch.randn(4, 3, 7, 6)
    assert_mixed_batch_equals_each_sample(model, x)
    with torch.no_grad(), anysr.use_scale(model, X2):
        want = model(x)
    exported = anysr.export_subnet(model, 0.7, scale=X2)
    assert not _blocks(exported)
    with torch.no_grad():
        assert (exported(x) - want).abs().max() <= 1e-4


@pytest.mark.parametrize("name", sorted(L.REFUSED))
def test_what_the_patterns_do_not_explain_never_converts(name):
    factory, phrase = L.REFUSED[name]
    model = L.Net(factory).eval()
    report = anysr.inspect_targets(model)
    assert not report.targets
    with pytest.raises(NoBlocksError) as info:
        anysr.anysrify(model)
    assert phrase in str(info.value)
    assert not anysr.is_anysr(model)


def test_analysis_and_checks_leave_batch_norm_statistics_alone():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), L.NoBNBlock(16), L.NormBetween(16), L.NormOnInput(16))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    anysr.inspect_targets(model)
    with pytest.warns(anysr.errors.AnySRWarning):
        anysr.anysrify(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_blocks_in_training_mode_convert_too():
    """Converted before training (how trainers do it): a dropout between the convolutions draws the
    same masks in both runs of the full-width check."""
    torch.manual_seed(0)
    model = L.Net(L.MaxPoolAttentionBlock).train()
    anysr.anysrify(model)
    assert {b.family for b in _blocks(model)} == {"rcab"}


def test_a_refused_block_beside_good_ones_is_left_with_a_warning():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), L.NoBNBlock(16), L.NormBetween(16), L.OddNames(16))
    with pytest.warns(anysr.errors.AnySRWarning, match=r"2 \(NormBetween\).*batch norm"):
        anysr.anysrify(model)
    assert [type(m).__name__ for m in model] == ["Conv2d", "AnySRResBlock", "NormBetween", "AnySRResBlock"]


def test_a_transformer_encoder_is_told_attention_blocks_are_not_converted():
    model = L.Net(L.WindowAttention)
    told = r"attention blocks \(.*MultiheadAttention.*\): AnySR slims convolutional residual blocks and does not " \
           r"convert attention"
    with pytest.raises(NoBlocksError, match=told):
        anysr.anysrify(model)
    assert "register" not in str(anysr.inspect_targets(model).why_nothing())
    import re
    assert re.search(told, anysr.inspect_targets(model).why_nothing())  # what convert-config --repo says too


def test_the_conversion_line_names_each_pattern_and_its_count(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), L.NoBNBlock(16), L.OddNames(16), L.LayersRDB(16))
    with caplog.at_level("INFO", logger="anysr_plugin"):
        anysr.anysrify(model)
    line = caplog.records[-1].getMessage()
    assert "converted 3 block(s) (1 LayersRDB, 1 NoBNBlock, 1 OddNames)" in line
    assert "patterns: 2 x edsr [x + s*conv_b(act(conv_a(x))), lambda=4 (chunk 4)]; " \
           "1 x rdb [x + s*fuse(cat(x, g_1..g_k)), g_i = act(conv_i(cat(x, g_1..g_(i-1)))), lambda=8 (chunk 1)]" in line


# --------------------------------------------------------------------------- channel counts lambda does not divide


def paper_pairs(channels, n, lam):
    """Eq. 7 read literally: pair i (1..lambda) follows feature floor(C * i / lambda), when complete."""
    return [math.floor(channels * i / lam) for i in range(1, lam + 1) if math.floor(channels * i / lam) <= n]


@pytest.mark.parametrize("channels, lam", [(147, 4), (36, 8), (64, 4), (48, 8)])
def test_the_gate_interleaves_at_the_papers_positions(channels, lam):
    from anysr_plugin.gate import interleave_layout

    for n in sorted({channels, math.floor(channels * 0.9), math.floor(channels * 0.7), channels // 2}):
        feat, scale, length = interleave_layout(channels, n, lam)
        bounds = paper_pairs(channels, n, lam)
        assert length == n + 2 * len(bounds)
        assert scale == [b + 2 * i for i, b in enumerate(bounds)]
        assert sorted(feat + scale + [c + 1 for c in scale]) == list(range(length))


def test_147_channels_convert_with_the_chunking_named(caplog):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 147, 3, padding=1), L.NoBNBlock(147), L.NoBNBlock(147)).eval()
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        before = model(x)
    with caplog.at_level("INFO", logger="anysr_plugin"):
        anysr.anysrify(model)
    assert "lambda=4 (pairs after features 36, 73, 110, 147 of 147)" in caplog.records[-1].getMessage()
    assert model[1].anysr_gate.fc1.weight.shape == (294, 147 + 8)
    with torch.no_grad(), anysr.use_scale(model, 4.0):
        assert (model(x) - before).abs().max() <= 1e-5
    randomize_gates(model)
    assert_mixed_batch_equals_each_sample(model, torch.randn(4, 3, 6, 5))


def test_where_lambda_divides_the_numbers_stay_the_papers():
    from anysr_plugin.gate import gate_input_length, gate_param_count

    assert [gate_input_length(64, n, 4) for n in (32, 44, 57, 64)] == [36, 48, 63, 72]
    assert gate_param_count(64, 4) == 17_600


# --------------------------------------------------------------------------- the real BasicSR architectures


def _basicsr_arch(name):
    """A BasicSR architecture module loaded from the installed package's file, without importing
    basicsr's data/model stack (which pulls opencv and more)."""
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("basicsr")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("basicsr is not installed (optional: pip install basicsr --no-deps)")
    root = list(spec.submodule_search_locations)[0]
    saved = {k: sys.modules.get(k) for k in ("basicsr", "basicsr.archs", "basicsr.utils", "basicsr.utils.registry",
                                             "basicsr.ops", "basicsr.ops.dcn", "basicsr.archs.arch_util")}
    try:
        for pkg in ("basicsr", "basicsr.archs", "basicsr.utils", "basicsr.ops", "basicsr.ops.dcn"):
            mod = types.ModuleType(pkg)
            mod.__path__ = []
            sys.modules[pkg] = mod
        registry = types.ModuleType("basicsr.utils.registry")
        registry.ARCH_REGISTRY = types.SimpleNamespace(register=lambda *a, **k: (lambda cls: cls))
        sys.modules["basicsr.utils.registry"] = registry
        sys.modules["basicsr.utils"].get_root_logger = lambda *a, **k: None
        sys.modules["basicsr.ops.dcn"].ModulatedDeformConvPack = nn.Module
        sys.modules["basicsr.ops.dcn"].modulated_deform_conv = None
        loaded = {}
        for part in ("arch_util", name):
            file = f"{root}/archs/{part}.py"
            mod_spec = importlib.util.spec_from_file_location(f"basicsr.archs.{part}", file)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[f"basicsr.archs.{part}"] = module
            try:
                mod_spec.loader.exec_module(module)
            except Exception as exc:  # another basicsr version: its imports differ
                pytest.skip(f"basicsr's {part}.py does not load standalone here ({type(exc).__name__}: {exc})")
            loaded[part] = module
        return loaded[name]
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.mark.parametrize("arch, build, family", [
    ("edsr_arch", lambda m: m.EDSR(3, 3, num_feat=16, num_block=2, upscale=2), "edsr"),
    ("rrdbnet_arch", lambda m: m.RRDBNet(3, 3, num_feat=16, num_block=2, num_grow_ch=8), "rrdb"),
    ("rcan_arch", lambda m: m.RCAN(3, 3, num_feat=16, num_group=2, num_block=2, squeeze_factor=4), "rcab"),
])
def test_the_real_basicsr_architectures(arch, build, family):
    torch.manual_seed(0)
    model = build(_basicsr_arch(arch)).eval()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        before = model(x)
    anysr.anysrify(model)
    assert {b.family for b in _blocks(model)} == {family} and len(_blocks(model)) >= 2
    with torch.no_grad(), anysr.use_scale(model, 4.0):
        assert (model(x) - before).abs().max() <= 1e-4
    randomize_gates(model)
    assert_mixed_batch_equals_each_sample(model, torch.rand(4, 3, 8, 8))


def test_conversion_of_a_200_block_encoder_analyses_one_block():
    """The analysis (a trace) and the full-width check run once per block signature."""
    from anysr_plugin.blocks import described

    calls = []
    original = described.analyze
    described.analyze = lambda m: calls.append(type(m)) or original(m)
    try:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *[L.NoBNBlock(8) for _ in range(200)])
        report = anysr.inspect_targets(copy.deepcopy(model))
        assert len(report.targets) == 200 and report.validations == 1
        assert calls.count(L.NoBNBlock) == 1
    finally:
        described.analyze = original


def test_a_pickled_model_runs_and_exports_without_the_original_process_state():
    """Pickles carry the generated programs' sources, not the traced graphs; an export after loading
    traces the upstream module again."""
    import io

    model = anysr.anysrify(_net("RRDB of five-conv dense blocks"), AnySRConfig(gate="paper"))
    randomize_gates(model)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad(), anysr.use_scale(loaded, X2), anysr.use_scale(model, X2):
        want = loaded(x)
        assert (want - model(x)).abs().max() <= 1e-6
        assert (anysr.export_subnet(loaded, 0.7, scale=X2)(x) - want).abs().max() <= 1e-4


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_calls_without_gradients_run_the_same_function_and_leave_the_input_alone(name):
    """Without gradients a block runs its in-place program (a product by 1 dropped, sums into a
    tensor the block just made): the block's input is never written and the values are those of
    the program that runs with gradients."""
    model = anysr.anysrify(_net(name), AnySRConfig(gate="paper"))
    randomize_gates(model)
    block = _blocks(model)[0]
    x = torch.randn(2, 16, 7, 6)
    for scale in (4.0, X2):
        with anysr.use_scale(model, scale):
            want = block(x)
            kept = x.clone()
            with torch.no_grad():
                got = block(x)
        assert torch.equal(x, kept)
        assert (got - want).abs().max() <= 1e-6, scale
