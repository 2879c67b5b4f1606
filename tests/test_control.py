"""Which sub-network runs: widths from scales, Algorithm 1 in training, controls and their errors."""
import copy
import math
import pickle
import threading
import warnings

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig
from anysr_plugin.errors import AnySRWarning, NotAnySRError, ScaleError, WidthError

from conftest import ChannelRecorder, randomize_gates, tiny_edsr


def converted(**cfg):
    return anysr.anysrify(tiny_edsr(), AnySRConfig(**cfg))


@pytest.mark.parametrize("scale,channels", [(1.5, 8), ((1.2, 1.75), 8), ((2.0, 1.5), 11), (2.55, 11),
                                            ((3.0, 3.25), 14), (4.0, 16), (6.0, 16), ((1.1, 12.0), 16)])
def test_eval_width_comes_from_max_scale(scale, channels):
    model = converted().eval()
    rec = ChannelRecorder(model)
    with anysr.use_scale(model, scale), torch.no_grad():
        model(torch.randn(1, 3, 6, 6))
    assert rec.calls == [[channels], [channels]]


def test_fixed_width_overrides_the_scale_and_restores():
    model = converted().eval()
    rec = ChannelRecorder(model)
    x = torch.randn(1, 3, 6, 6)
    with anysr.use_scale(model, 4.0), torch.no_grad():
        with anysr.use_width(model, 0.5):
            model(x)
        model(x)
    assert rec.calls == [[8], [8], [16], [16]]
    anysr.set_width(model, 0.7)
    with anysr.use_scale(model, 4.0), torch.no_grad():
        model(x)
    anysr.set_width(model, None)
    assert rec.calls[-1] == [11]


def test_unknown_scale_runs_full_width_with_one_warning():
    model = converted().eval()
    rec = ChannelRecorder(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            model(torch.randn(1, 3, 6, 6))
            model(torch.randn(1, 3, 6, 6))
    ours = [w for w in caught if issubclass(w.category, AnySRWarning)]
    assert len(ours) == 1 and "use_scale" in str(ours[0].message)
    assert rec.calls == [[16]] * 4


@pytest.mark.parametrize("bad", [0.0, -2.0, float("nan"), float("inf"), (2.0, 0.0), (2.0,), "2",
                                 torch.ones(3, 3), torch.tensor([[2.0, -1.0]]), True])
def test_bad_scales_raise(bad):
    with pytest.raises(ScaleError):
        with anysr.use_scale(converted(), bad):
            pass


def test_width_not_in_config_raises():
    with pytest.raises(WidthError, match=r"0\.6.*\(0\.5, 0\.7, 0\.9, 1\.0\)"):
        with anysr.use_width(converted(), 0.6):
            pass


def test_controls_on_a_plain_model_raise():
    with pytest.raises(NotAnySRError, match="anysrify"):
        with anysr.use_width(tiny_edsr(), 0.5):
            pass


def test_algorithm1_per_sample_reset_frequencies():
    p = 0.6
    model = converted(reset_prob=p, seed=123).train()
    rec = ChannelRecorder(model)
    scales = torch.tensor([[1.5, 1.5], [2.0, 2.0], [3.0, 3.0], [3.8, 3.8]]).repeat(64, 1)  # 256 samples
    x = torch.randn(256, 3, 4, 4)
    rounds = 8
    for _ in range(rounds):
        with anysr.use_scale(model, scales), torch.no_grad():
            model(x)
    per_call = rec.calls[::2]  # first block of each forward
    assert all(c == d for c, d in zip(rec.calls[::2], rec.calls[1::2]))  # one plan for all blocks
    group = [8, 11, 14, 16]
    n = 0
    full = [0, 0, 0, 0]
    for call in per_call:
        for i, channels in enumerate(call):
            assert channels in (group[i % 4], 16)
            full[i % 4] += channels == 16
        n += len(call) // 4
    # groups 1-3: the full network runs with probability p (binomial, n = 512 draws each)
    sd = math.sqrt(p * (1 - p) / n)
    for g in range(3):
        assert abs(full[g] / n - p) < 4 * sd
    assert full[3] == n


def test_algorithm1_is_seedable_and_eval_is_deterministic():
    def widths(seed):
        model = converted(seed=seed).train()
        rec = ChannelRecorder(model)
        with anysr.use_scale(model, torch.full((32, 2), 1.5)), torch.no_grad():
            model(torch.randn(32, 3, 4, 4))
        return rec.calls

    assert widths(5) == widths(5)
    assert widths(5) != widths(6)
    model = converted(reset_prob=1.0).eval()
    rec = ChannelRecorder(model)
    with anysr.use_scale(model, 1.5), torch.no_grad():
        model(torch.randn(2, 3, 4, 4))
    assert rec.calls == [[8], [8]]  # eval never resets


def test_reset_prob_one_trains_the_full_network_and_zero_the_groups():
    for p, expected in ((1.0, 16), (0.0, 8)):
        model = converted(reset_prob=p).train()
        rec = ChannelRecorder(model)
        with anysr.use_scale(model, torch.full((16, 2), 1.3)):
            model(torch.randn(16, 3, 4, 4))
        assert rec.calls[0] == [expected] * 16


def test_gradients_reach_exactly_the_used_slices():
    model = converted(gate="paper").train()
    randomize_gates(model)
    with anysr.use_width(model, 0.7), anysr.use_scale(model, 2.0):
        model(torch.randn(2, 3, 8, 8)).abs().mean().backward()
    block = model.body[0]
    conv1, conv2 = block.body[0], block.body[2]
    assert (conv1.weight.grad[:11] != 0).any() and (conv1.weight.grad[11:] == 0).all()
    assert (conv1.bias.grad[11:] == 0).all()
    assert (conv2.weight.grad[:, :11] != 0).any() and (conv2.weight.grad[:, 11:] == 0).all()
    gate = block.anysr_gate
    used = 11 + 2 * 2  # n + 2 * floor(lambda * 11 / 16)
    assert (gate.fc1.weight.grad[:, used:] == 0).all() and (gate.fc1.weight.grad[:, :used] != 0).any()
    assert (gate.fc2.weight.grad[11:] == 0).all() and (gate.fc2.weight.grad[:11] != 0).any()


def test_plan_is_cleared_after_each_call_even_on_error():
    model = converted().eval()
    with anysr.use_scale(model, 2.0):
        with pytest.raises(RuntimeError):
            model(torch.randn(1, 5, 6, 6))  # wrong channel count fails inside the head
    from anysr_plugin.plan import active_plan

    assert active_plan(anysr.control.get_state(model)) is None


def test_replicas_are_independent_under_threads():
    """DataParallel-style replicas (deep copies) running concurrently with different scales."""
    model = converted(gate="paper").eval()
    randomize_gates(model)
    x = torch.randn(2, 3, 8, 8)
    expected = {}
    for s in (1.5, 4.0):
        with anysr.use_scale(model, s), torch.no_grad():
            expected[s] = model(x)
    replicas = {s: copy.deepcopy(model) for s in (1.5, 4.0)}
    results = {}

    def run(s):
        for _ in range(5):
            with anysr.use_scale(replicas[s], s), torch.no_grad():
                results[s] = replicas[s](x)

    threads = [threading.Thread(target=run, args=(s,)) for s in replicas]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for s in replicas:
        torch.testing.assert_close(results[s], expected[s])
    assert not torch.allclose(expected[1.5], expected[4.0])


def test_pickle_and_deepcopy_preserve_outputs(tmp_path):
    model = converted(gate="paper").eval()
    randomize_gates(model)
    x = torch.randn(1, 3, 6, 6)
    with anysr.use_scale(model, 2.0), torch.no_grad():
        want = model(x)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        with anysr.use_scale(clone, 2.0), torch.no_grad():
            torch.testing.assert_close(clone(x), want)
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    with anysr.use_scale(loaded, 2.0), torch.no_grad():
        torch.testing.assert_close(loaded(x), want)


def test_state_dict_round_trip_into_a_fresh_model():
    model = converted(gate="paper").eval()
    randomize_gates(model)
    x = torch.randn(1, 3, 6, 6)
    fresh = converted(gate="paper").eval()
    fresh.load_state_dict(model.state_dict())
    for w in (0.5, 0.7, 0.9, 1.0):
        with anysr.use_width(model, w), anysr.use_width(fresh, w), anysr.use_scale(model, 3.0), \
                anysr.use_scale(fresh, 3.0), torch.no_grad():
            torch.testing.assert_close(fresh(x), model(x))


def test_torch_compile_after_anysrify_matches_eager():
    model = converted(gate="paper").eval()
    randomize_gates(model)
    compiled = torch.compile(model, backend="aot_eager")
    x = torch.randn(1, 3, 8, 8)
    for w in (0.5, 1.0, 0.5):
        with anysr.use_width(model, w), anysr.use_scale(model, 2.0), torch.no_grad():
            torch.testing.assert_close(compiled(x), model(x))
    with anysr.use_width(compiled, 0.7), anysr.use_scale(compiled, 2.0), torch.no_grad():
        with anysr.use_width(model, 0.7), anysr.use_scale(model, 2.0):
            torch.testing.assert_close(compiled(x), model(x))


def test_numpy_and_0d_tensor_scales_are_numbers():
    import numpy as np

    from anysr_plugin.control import as_scale_tensor
    from anysr_plugin.errors import ScaleError

    for s in (np.float32(2.0), np.int64(2), torch.tensor(2.0), (np.float64(2.0), torch.tensor(2))):
        assert as_scale_tensor(s).tolist() == [[2.0, 2.0]]
    for bad in (True, np.bool_(True), torch.tensor(True), "2"):
        with pytest.raises(ScaleError):
            as_scale_tensor(bad)


def test_cpu_shim_restores_the_environment(monkeypatch):
    import os

    from anysr_plugin.launch import cpu_shim

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with cpu_shim():
        assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
