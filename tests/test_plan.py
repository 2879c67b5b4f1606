"""The per-call plan under real use: two threads on one model, interleaved contexts, activation
checkpointing (reentrant and not), DataParallel-style replicas carrying the caller's controls."""
import threading

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig
from anysr_plugin.blocks import AnySRBlock
from anysr_plugin.control import get_state
from anysr_plugin.plan import active_plan, controls, plan_for_block

from conftest import ChannelRecorder, randomize_gates, tiny_edsr


def test_two_threads_on_one_model_each_get_their_own_width():
    model = anysr.anysrify(tiny_edsr(), AnySRConfig(gate="paper")).eval()
    randomize_gates(model)
    x = torch.randn(1, 3, 12, 12)
    expected = {}
    for w in (0.5, 1.0):
        with anysr.use_width(model, w), anysr.use_scale(model, 2.0), torch.no_grad():
            expected[w] = model(x)
    assert not torch.allclose(expected[0.5], expected[1.0])
    wrong, done = {0.5: 0, 1.0: 0}, {0.5: 0, 1.0: 0}
    barrier = threading.Barrier(2)

    def run(w):
        barrier.wait()
        for _ in range(40):
            with anysr.use_width(model, w), anysr.use_scale(model, 2.0), torch.no_grad():
                out = model(x)
            done[w] += 1
            wrong[w] += int(not torch.allclose(out, expected[w]))

    threads = [threading.Thread(target=run, args=(w,)) for w in (0.5, 1.0)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert done == {0.5: 40, 1.0: 40} and wrong == {0.5: 0, 1.0: 0}  # 80 calls, zero cross-talk
    state = get_state(model)
    assert controls(state) == {"width": None, "scale": None, "budget": None} and active_plan(state) is None
    rec = ChannelRecorder(model)
    with anysr.use_scale(model, 1.5), torch.no_grad():
        model(x)
    assert rec.calls == [[8], [8]]  # back to the scale policy


def test_interleaved_contexts_restore_exactly_what_they_found():
    model = anysr.anysrify(tiny_edsr()).eval()
    rec = ChannelRecorder(model)
    x = torch.randn(1, 3, 6, 6)
    anysr.set_width(model, 0.9)
    a, b = anysr.use_width(model, 0.5), anysr.use_width(model, 0.7)
    s1, s2 = anysr.use_scale(model, 1.5), anysr.use_scale(model, 4.0)
    with torch.no_grad():
        a.__enter__()
        s1.__enter__()
        b.__enter__()
        s2.__enter__()
        model(x)                      # newest live entries: width 0.7
        a.__exit__(None, None, None)  # not nested: a leaves first, b still holds
        model(x)
        s1.__exit__(None, None, None)
        b.__exit__(None, None, None)  # back to set_width's 0.9
        model(x)
        s2.__exit__(None, None, None)
        anysr.set_width(model, None)
        with anysr.use_scale(model, 1.5):
            model(x)                  # the scale policy again
    assert [c[0] for c in rec.calls[::2]] == [11, 11, 14, 8]
    assert controls(get_state(model)) == {"width": None, "scale": None, "budget": None}


class CheckpointedEncoder(nn.Module):
    """An encoder whose blocks run under torch.utils.checkpoint; the scale is a forward argument."""

    def __init__(self, enc, mode):
        super().__init__()
        self.enc, self.mode = enc, mode

    def forward(self, x, scale):
        h = self.enc.head(x)
        res = h
        for block in self.enc.body:
            if self.mode is None or not isinstance(block, AnySRBlock):
                res = block(res)
            else:
                res = checkpoint(block, res, use_reentrant=(self.mode == "reentrant"))
        return res + h


@pytest.mark.parametrize("mode", ["reentrant", "non-reentrant"])
@pytest.mark.parametrize("width", [None, 0.5])
def test_checkpoint_recomputes_at_the_forward_width_and_scale(mode, width):
    torch.manual_seed(0)
    net = CheckpointedEncoder(tiny_edsr(n_resblocks=3), None)
    model = anysr.anysrify(net, AnySRConfig(gate="paper", seed=0)).train()
    assert "scale from forward argument `scale`" in anysr.inspect_targets(model).scale_source
    randomize_gates(model)
    x = torch.randn(4, 3, 8, 8)
    scales = torch.tensor([[1.5, 1.5], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    grads = {}
    for m in (None, mode):
        net.mode = m
        model.zero_grad()
        get_state(model).generator.manual_seed(123)  # the same Algorithm-1 draws (mixed widths)
        ctx = anysr.use_width(model, width) if width is not None else torch.enable_grad()
        with ctx:
            out = model(x.clone().requires_grad_(), scales)
        out.square().mean().backward()  # outside the context: recompute must not re-plan
        grads[m] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads[None].keys() == grads[mode].keys()
    for n in grads[None]:
        torch.testing.assert_close(grads[mode][n], grads[None][n], msg=n)


@pytest.mark.parametrize("reentrant", [True, False])
def test_checkpoint_around_the_whole_model(reentrant):
    """The root hook runs again in the recompute (and draws again); the blocks keep their forward plan."""
    torch.manual_seed(0)
    model = anysr.anysrify(CheckpointedEncoder(tiny_edsr(n_resblocks=3), None), AnySRConfig(gate="paper")).train()
    randomize_gates(model)
    x, scales = torch.randn(4, 3, 8, 8), torch.tensor([[1.5, 1.5], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])
    grads = []
    for wrapped in (False, True):
        model.zero_grad()
        get_state(model).generator.manual_seed(7)
        xx = x.clone().requires_grad_()
        out = checkpoint(model, xx, scales, use_reentrant=reentrant) if wrapped else model(xx, scales)
        out.square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        grads[-1].append(get_state(model).generator.get_state())  # the recompute drew nothing more
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_replicas_carry_the_callers_controls_into_worker_threads():
    """DataParallel replicates the model in the caller's thread and runs replicas in worker
    threads that do not see the caller's contexts (simulated here on the CPU)."""
    model = anysr.anysrify(tiny_edsr(), AnySRConfig(gate="paper")).eval()
    randomize_gates(model)
    x = torch.randn(1, 3, 8, 8)
    with anysr.use_width(model, 0.5), anysr.use_scale(model, 3.0), torch.no_grad():
        want = model(x)
        replica = _replicate(model)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("out", _no_grad_call(replica, x)))
    t.start()
    t.join()
    torch.testing.assert_close(got["out"], want)


def _no_grad_call(model, x):
    with torch.no_grad():
        return model(x)


def _replicate(model):
    """What torch.nn.parallel.replicate does to the module tree (without devices)."""
    memo = {}
    for m in model.modules():
        memo[m] = m._replicate_for_data_parallel()
    for m, r in memo.items():
        r._parameters = dict(m._parameters)
        for key, child in m._modules.items():
            r._modules[key] = memo[child] if child is not None else None
    return memo[model]


def test_plan_for_block_outside_a_call_uses_the_context():
    model = anysr.anysrify(tiny_edsr()).eval()
    block = model.body[0]
    x = torch.randn(2, 16, 4, 4)
    with anysr.use_scale(model, 2.0):
        scale, widths = plan_for_block(block, x)
    assert widths == [0.7] and scale.tolist() == [[2.0, 2.0]] * 2
