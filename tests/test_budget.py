"""use_budget: the largest width that fits, capped by the scale policy; clear errors."""
from __future__ import annotations

import json

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.budget import use_budget
from anysr_plugin.cost import count_flops
from anysr_plugin.errors import BudgetError, ConfigError

from conftest import tiny_edsr


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return anysr.anysrify(tiny_edsr()).eval()


def _gf(m, x, w):
    return 2 * count_flops(m, x, width=w, scale=4.0) / 1e9


def test_picks_largest_fitting_width(model):
    x = torch.rand(1, 3, 12, 12)
    costs = {w: _gf(model, x, w) for w in (0.5, 0.7, 0.9, 1.0)}
    budget = (costs[0.7] + costs[0.9]) / 2
    with use_budget(model, gflops=budget) as b, anysr.use_scale(model, 4.0), torch.no_grad():
        out = model(x)
    assert b.decisions[-1][2] == 0.7
    with torch.no_grad(), anysr.use_width(model, 0.7), anysr.use_scale(model, 4.0):
        ref = model(x)
    assert torch.equal(out, ref)
    # exactly at a width's cost: that width fits
    with use_budget(model, gflops=costs[0.9]) as b, anysr.use_scale(model, 4.0), torch.no_grad():
        model(x)
    assert b.decisions[-1][2] == 0.9


def test_depends_on_input_size(model):
    small, big = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 10, 10)
    budget = _gf(model, small, 1.0) * 1.01  # full fits the small input only
    assert _gf(model, big, 0.5) <= budget < _gf(model, big, 0.7)
    with use_budget(model, gflops=budget) as b, anysr.use_scale(model, 4.0), torch.no_grad():
        model(small)
        model(big)
    assert [d[2] for d in b.decisions] == [1.0, 0.5]
    assert [d[0] for d in b.decisions] == [(8, 8), (10, 10)] and b.decisions[1][3] <= budget


def test_never_above_scale_policy(model):
    x = torch.rand(1, 3, 8, 8)
    with use_budget(model, gflops=1e3) as b, anysr.use_scale(model, 2.0), torch.no_grad():
        model(x)
    assert b.decisions[-1][2] == 0.7  # x2 -> group width 0.7 even with budget to spare
    with use_budget(model, gflops=1e3, allow_above_scale=True) as b, anysr.use_scale(model, 2.0), torch.no_grad():
        model(x)
    assert b.decisions[-1][2] == 1.0
    # mixed scales in a batch: the smallest group width caps
    with use_budget(model, gflops=1e3) as b, anysr.use_scale(model, torch.tensor([[1.5, 1.5], [3.0, 3.0]])), \
            torch.no_grad():
        model(torch.rand(2, 3, 8, 8))
    assert b.decisions[-1][2] == 0.5


def test_nothing_fits_names_cheapest(model):
    x = torch.rand(1, 3, 8, 8)
    cheapest = _gf(model, x, 0.5)
    with pytest.raises(BudgetError) as e, use_budget(model, gflops=cheapest / 2), anysr.use_scale(model, 4.0), \
            torch.no_grad():
        model(x)
    assert "cheapest is width 0.5" in str(e.value) and f"{cheapest:.4g}" in str(e.value)


def test_fixed_width_wins_and_state_restored(model):
    x = torch.rand(1, 3, 8, 8)
    with use_budget(model, gflops=1e-9), anysr.use_width(model, 0.9), anysr.use_scale(model, 4.0), torch.no_grad():
        model(x)  # no BudgetError: use_width takes precedence
    from anysr_plugin.control import get_state
    from anysr_plugin.plan import controls

    assert controls(get_state(model))["budget"] is None
    assert not any(h.__class__.__name__ == "_CallRecorder" for h in model._forward_pre_hooks.values())


def test_latency_table(model, tmp_path):
    table = {"results": [
        {"model": "original", "width": 1.0, "scale": [4, 4], "input_shape": [1, 3, 8, 8], "median_ms": 1.0},
        {"model": "anysr", "width": 0.5, "scale": [4, 4], "input_shape": [1, 3, 8, 8], "median_ms": 2.0},
        {"model": "anysr", "width": 0.7, "scale": [4, 4], "input_shape": [1, 3, 8, 8], "median_ms": 3.0},
        {"model": "anysr", "width": 0.9, "scale": [4, 4], "input_shape": [1, 3, 8, 8], "median_ms": 4.0},
        {"model": "anysr", "width": 1.0, "scale": [4, 4], "input_shape": [1, 3, 8, 8], "median_ms": 5.0}]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(table))
    with use_budget(model, latency_table=str(path), latency_ms=3.5) as b, anysr.use_scale(model, 4.0), \
            torch.no_grad():
        model(torch.rand(1, 3, 8, 8))
    assert b.decisions[0][2] == 0.7
    with pytest.raises(BudgetError, match="cheapest is width 0.5 at 4 ms"):  # 2x the pixels: 0.5 -> 4 ms
        with use_budget(model, latency_table=table, latency_ms=3.5), anysr.use_scale(model, 4.0), torch.no_grad():
            model(torch.rand(1, 3, 16, 8))
    with use_budget(model, latency_table=table, latency_ms=8.5) as b, anysr.use_scale(model, 4.0), torch.no_grad():
        model(torch.rand(1, 3, 16, 8))  # 0.9 -> 8 ms fits, 1.0 -> 10 ms does not
    assert b.decisions[0][2] == 0.9


def test_argument_errors(model):
    with pytest.raises(ConfigError):
        with use_budget(model):
            pass
    with pytest.raises(ConfigError):
        with use_budget(model, gflops=-1):
            pass
    with pytest.raises(ConfigError):
        with use_budget(model, latency_table={"results": []}, latency_ms=1):
            pass
    with pytest.raises(anysr.errors.NotAnySRError):
        with use_budget(tiny_edsr(), gflops=1):
            pass
