"""Activation checkpointing recomputes every block with the plan of its own forward, whatever ran
in between, or refuses.

Each scenario runs twice on the same converted model: without checkpointing (the reference) and
with ``torch.utils.checkpoint`` (reentrant and not) around the blocks, the whole encoder, the whole
model, or around the encoder body with the blocks checkpointed again inside (nested; "nested-mixed":
the inner checkpoints of the other kind).  Between a
checkpointed forward and its backward other forwards run with gradients on, at other widths and
scales (GAN-style), as a no-grad teacher at full width, several checkpointed forwards share one
backward, backwards run in reverse order, and a graph is backwarded twice.  Gradients of every
parameter and of the input must agree to 1e-6.
"""
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig
from anysr_plugin.control import get_state
from anysr_plugin.errors import AnySRError, CheckpointRecomputeError

from conftest import ChannelRecorder, randomize_gates, tiny_edsr

pytestmark = pytest.mark.filterwarnings("ignore:None of the inputs have requires_grad")

NESTED = ("nested", "nested-mixed")
PLACEMENTS = ("blocks", "encoder", "model", *NESTED)


class Net(nn.Module):
    """A tiny SR trunk whose forward takes the per-sample scale; ``placement`` says where
    torch.utils.checkpoint goes (None: nowhere)."""

    def __init__(self):
        super().__init__()
        self.enc = tiny_edsr(n_resblocks=3)
        self.placement, self.reentrant = None, False

    def ckpt(self, fn, *args, inner=False):
        flip = inner and self.placement == "nested-mixed"
        return checkpoint(fn, *args, use_reentrant=self.reentrant != flip)

    def body(self, h):
        res = h
        for layer in self.enc.body:
            res = self.ckpt(layer, res, inner=True) if self.placement in ("blocks", *NESTED) else layer(res)
        return res + h

    def trunk(self, x):
        h = self.enc.head(x)
        return self.ckpt(self.body, h) if self.placement in NESTED else self.body(h)

    def forward(self, x, scale):
        if self.placement == "encoder":
            return self.ckpt(self.enc, x)
        return self.trunk(x)


def make_model():
    torch.manual_seed(0)
    model = anysr.anysrify(Net(), AnySRConfig(gate="paper", seed=0)).train()
    randomize_gates(model)
    return model


X = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
MIXED = torch.tensor([[1.5, 1.5], [2.0, 2.0], [3.0, 3.0], [4.0, 4.0]])  # four scale groups
#: Algorithm-1 generator seed whose first draws keep A's batch mixed (8, 16, 14, 16 channels)
DRAWS = 2


def _call(model):
    """``call(x, scale)``: the model's forward, with the checkpoint around the whole model for
    placement "model"; the input requires grad (a reentrant checkpoint needs one that does)."""
    net = model

    def call(x, scale):
        x = x.clone().requires_grad_()
        call.inputs.append(x)
        if net.placement == "model":
            net.placement = None
            try:
                return checkpoint(model, x, scale, use_reentrant=net.reentrant)
            finally:
                net.placement = "model"
        return model(x, scale)

    call.inputs = []
    return call


def other_forward_between(model, call):
    """GAN-style: another forward with gradients on, at another width and scale, before A's backward."""
    a = call(X, MIXED)
    with anysr.use_width(model, 0.5):
        call(X.flip(0), torch.full((4, 2), 4.0))  # never backwarded
    a.square().mean().backward()


def teacher_between(model, call):
    """A no-grad full-width teacher forward of the same model between A and its backward."""
    a = call(X, MIXED)
    model.eval()
    with torch.no_grad(), anysr.use_width(model, 1.0):
        target = model(X, MIXED)
    model.train()
    (a - target).abs().mean().backward()


def several_forwards_one_backward(model, call):
    """Three checkpointed forwards at different widths and scales, one backward."""
    a = call(X, MIXED)
    with anysr.use_width(model, 0.5):
        b = call(X * 0.5, torch.full((4, 2), 4.0))
    with anysr.use_scale(model, 2.0):
        c = call(X.flip(0), MIXED)
    (a.square().mean() + b.abs().mean() + 0.5 * c.mean()).backward()


def backwards_in_reverse_order(model, call):
    """Gradient accumulation with the backwards in the reverse order of the forwards."""
    with anysr.use_width(model, 0.7):
        a = call(X, MIXED)
    with anysr.use_width(model, 0.5):
        b = call(X.flip(0), torch.full((4, 2), 3.0))
    b.square().mean().backward()
    a.square().mean().backward()


def backward_twice(model, call):
    """retain_graph: the same checkpointed graph backwarded twice, another forward in between."""
    a = call(X, MIXED)
    loss = a.square().mean()
    loss.backward(retain_graph=True)
    with anysr.use_width(model, 0.5):
        call(X, torch.full((4, 2), 1.5))
    loss.backward()


SCENARIOS = [other_forward_between, teacher_between, several_forwards_one_backward, backwards_in_reverse_order,
             backward_twice]


def gradients(model, placement, reentrant, scenario):
    model.zero_grad(set_to_none=True)
    model.placement, model.reentrant = placement, reentrant
    get_state(model).generator.manual_seed(DRAWS)  # the same Algorithm-1 draws in every run
    call = _call(model)
    scenario(model, call)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    grads.update({f"input{i}": x.grad.clone() for i, x in enumerate(call.inputs) if x.grad is not None})
    return grads


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_recompute_gives_the_gradients_of_the_uncheckpointed_model(scenario, placement, reentrant):
    model = make_model()
    want = gradients(model, None, reentrant, scenario)
    got = gradients(model, placement, reentrant, scenario)
    assert any("anysr_gate" in n for n in want) and want.keys() == got.keys()
    worst = max(float((got[n] - want[n]).abs().max()) for n in want)
    assert worst <= 1e-6, f"gradients differ by {worst:.3g}"


def test_the_forwards_in_between_really_run_other_widths():
    """Without its own plan a recompute would differ: A mixes widths (Algorithm 1 with its resets),
    the forwards in between run other ones."""
    model = make_model()
    rec = ChannelRecorder(model)
    get_state(model).generator.manual_seed(DRAWS)
    model(X, MIXED)
    with anysr.use_width(model, 0.5):
        model(X, MIXED)
    assert rec.calls[0] == [8, 16, 14, 16] and rec.calls[-1] == [8]


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_a_recompute_that_runs_other_blocks_is_refused(reentrant):
    """The checkpointed function's control flow changed between forward and recompute: the
    recompute cannot know its plan, so it raises instead of computing wrong gradients."""
    model = make_model()
    which = [0]

    def segment(h):
        return model.enc.body[which[0]](h)

    x = torch.randn(2, 16, 6, 6, requires_grad=True)
    with anysr.use_width(model, 0.5):
        out = checkpoint(segment, x, use_reentrant=reentrant)
    which[0] = 1
    with pytest.raises(CheckpointRecomputeError, match="ran other AnySR blocks than its forward"):
        out.square().mean().backward()


def test_a_block_run_inside_backward_outside_a_recompute_is_refused():
    """A model call inside a backward hook belongs to no forward AnySR can match: refused."""
    model = make_model()
    out = model(X, MIXED)
    out.register_hook(lambda g: model(X, MIXED).sum() * 0 + g)
    with pytest.raises(CheckpointRecomputeError, match="during backward outside a recompute") as info:
        out.sum().backward()
    assert isinstance(info.value, AnySRError)


def test_a_checkpointed_block_outside_a_model_call_replays_its_context():
    """A block checkpointed on its own (no model call, so no hook made a plan) under use_width /
    use_scale contexts that are gone by the backward."""
    model = make_model()
    block = model.enc.body[1]
    x = torch.randn(2, 16, 6, 6)
    for reentrant in (True, False):
        grads = []
        for ckpt in (False, True):
            model.zero_grad(set_to_none=True)
            xx = x.clone().requires_grad_()
            with anysr.use_width(model, 0.5), anysr.use_scale(model, 1.5):
                out = checkpoint(block, xx, use_reentrant=reentrant) if ckpt else block(xx)
            with anysr.use_width(model, 1.0):
                block(x.clone().requires_grad_())  # another forward with grad, at full width
            out.square().mean().backward()
            grads.append([xx.grad] + [p.grad for p in block.parameters()])
        for a, b in zip(*grads):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non-reentrant"])
def test_a_slim_decoder_recomputes_with_its_own_plan(reentrant):
    """decoder="slim": the decoder's width follows the plan too, and its recompute replays it."""
    from anysr_plugin.coords import cell_for, make_coord
    from anysr_plugin.reference import build_reference

    model = anysr.anysrify(build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16, hidden_list=[16]),
                           AnySRConfig(decoder="slim", seed=0, gate="paper")).train()
    randomize_gates(model)
    inp = X[:2]
    coord = make_coord((16, 16)).expand(2, -1, -1)
    cell = torch.stack([cell_for((16, 16), queries=256)[0], cell_for((32, 32), queries=256)[0]])  # x2 and x4
    grads = []
    for ckpt in (False, True):
        model.zero_grad(set_to_none=True)
        get_state(model).generator.manual_seed(DRAWS)
        x = inp.clone().requires_grad_()
        out = checkpoint(model, x, coord, cell, use_reentrant=reentrant) if ckpt else model(x, coord, cell)
        with anysr.use_width(model, 0.5):
            model(inp, coord, cell)
        out.square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert any("imnet" in n for n in grads[0]) and grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[1][n], grads[0][n], atol=1e-6, rtol=0, msg=n)
