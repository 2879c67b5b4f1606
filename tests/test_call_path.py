"""The no-grad call path (issue: a per-call path that costs nothing): an unsliced plain
``nn.Conv2d`` in a converted block runs as its functional call, and everything a module call
would have done still happens whenever it matters (hooks of the conv, module hooks of every
module, a conv subclass's own forward, another padding mode, a conv swapped in after
conversion).  Each case compares the no-grad call with the call that records gradients,
which always goes through the module calls."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import anysr_plugin as anysr
from anysr_plugin.runtime.blocks.program import SlicedRun

from conftest import randomize_gates, tiny_edsr


def _converted(**kw):
    model = anysr.anysrify(tiny_edsr(n_resblocks=2, **kw)).eval()
    randomize_gates(model)
    return model


def _both_modes(model, x, width=1.0, scale=4.0):
    """(no-grad output, output of the same call recording gradients)."""
    with anysr.use_width(model, width), anysr.use_scale(model, scale):
        with torch.no_grad():
            lean = model(x)
        recorded = model(x).detach()
    return lean, recorded


class ShiftedConv(nn.Conv2d):
    """A conv subclass with its own forward: it must run, not the functional call."""

    def forward(self, x):
        return super().forward(x) + 1.0


def test_plain_body_convs_run_without_module_calls_and_give_the_same_values(monkeypatch):
    model = _converted()
    x = torch.rand(2, 3, 10, 10)
    calls = []
    forward = nn.Conv2d.forward
    monkeypatch.setattr(nn.Conv2d, "forward", lambda self, h: calls.append(self) or forward(self, h))
    lean, recorded = _both_modes(model, x)
    torch.testing.assert_close(lean, recorded, rtol=1e-5, atol=1e-5)
    body = {id(m) for block in model.body[:2] for m in block.modules() if isinstance(m, nn.Conv2d)}
    calls.clear()
    with torch.no_grad(), anysr.use_width(model, 1.0), anysr.use_scale(model, 4.0):
        model(x)
    assert calls and not body & {id(m) for m in calls}  # head and tail convs: module calls; body convs: none
    calls.clear()
    with anysr.use_width(model, 1.0), anysr.use_scale(model, 4.0):
        model(x)
    assert len(body & {id(m) for m in calls}) == 4  # with gradients: every body conv through its module call


@pytest.mark.parametrize("kind", ["forward", "pre"])
def test_a_hook_on_a_body_conv_runs_without_gradients(kind):
    model = _converted()
    x = torch.rand(1, 3, 9, 9)
    conv = model.body[1].body[2]
    seen = []
    if kind == "forward":
        handle = conv.register_forward_hook(lambda m, a, out: seen.append(m) or out * 2.0)
    else:
        handle = conv.register_forward_pre_hook(lambda m, a: seen.append(m) or (a[0] * 2.0,))
    lean, recorded = _both_modes(model, x)
    handle.remove()
    plain, _ = _both_modes(model, x)
    torch.testing.assert_close(lean, recorded, rtol=1e-5, atol=1e-5)
    assert len(seen) == 2 and (lean - plain).abs().max() > 1e-3  # it ran in both calls and changed the output


def test_a_module_hook_for_every_module_sees_the_body_convs_without_gradients():
    model = _converted()
    body = {id(m) for m in model.body[0].modules() if isinstance(m, nn.Conv2d)}
    seen = []
    handle = nn.modules.module.register_module_forward_hook(lambda m, a, out: seen.append(id(m)))
    try:
        with torch.no_grad(), anysr.use_width(model, 1.0), anysr.use_scale(model, 4.0):
            model(torch.rand(1, 3, 8, 8))
    finally:
        handle.remove()
    assert body <= set(seen)


def test_a_conv_subclass_or_another_padding_mode_runs_its_own_forward():
    model = _converted()
    x = torch.rand(1, 3, 9, 9)
    before, _ = _both_modes(model, x)
    old = model.body[0].body[0]
    swapped = ShiftedConv(old.in_channels, old.out_channels, 3, padding=1)
    swapped.load_state_dict(old.state_dict())
    model.body[0].body[0] = swapped  # swapped in after conversion: the block reads its modules on each call
    old2 = model.body[1].body[2]
    reflect = nn.Conv2d(old2.in_channels, old2.out_channels, 3, padding=1, padding_mode="reflect")
    reflect.load_state_dict(old2.state_dict())
    model.body[1].body[2] = reflect
    lean, recorded = _both_modes(model, x)
    torch.testing.assert_close(lean, recorded, rtol=1e-5, atol=1e-5)
    assert (lean - before).abs().max() > 1e-3


def test_a_sliced_width_gives_the_values_of_the_recorded_call():
    model = _converted()
    x = torch.rand(2, 3, 8, 8)
    for width, scale in ((0.7, 2.0), (0.5, 1.5)):
        lean, recorded = _both_modes(model, x, width, scale)
        torch.testing.assert_close(lean, recorded, rtol=1e-5, atol=1e-5)


def test_the_functional_call_is_only_taken_when_the_run_allows_it():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    x = torch.rand(1, 4, 5, 5)
    calls = []
    conv.register_forward_pre_hook(lambda m, a: calls.append(1))
    run = SlicedRun(None, ((None, None),), None, 4, None, direct=True)
    with torch.no_grad():
        torch.testing.assert_close(run.conv(0, conv, x), conv(x))
    assert len(calls) == 2  # the run's call went through the module: the conv has a hook


def test_functional_call_parameters_are_the_ones_the_convs_read():
    """torch.func.functional_call swaps tensors into the modules' parameter tables for one call;
    the functional convolution reads them there, as the module call would."""
    model = _converted()
    x = torch.rand(1, 3, 8, 8)
    params = {name: p.detach() * (1.5 if ".body.0." in name else 1.0) for name, p in model.named_parameters()}
    with anysr.use_width(model, 1.0), anysr.use_scale(model, 4.0):
        with torch.no_grad():
            lean = torch.func.functional_call(model, params, (x,))
            plain = model(x)
        recorded = torch.func.functional_call(model, params, (x,)).detach()
    torch.testing.assert_close(lean, recorded, rtol=1e-5, atol=1e-5)
    assert (lean - plain).abs().max() > 1e-3
