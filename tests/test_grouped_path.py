"""Mixed-width batches: the grouped path (and the masked one) equal every sample run alone,
outputs and gradients, every block type (EDSR, RCAB, RDB, RRDB) incl. the release RDB layout;
path dispatch; and
Algorithm 1's reset drawn per sample or once per batch (AnySRConfig.reset)."""
from __future__ import annotations

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin import AnySRConfig, official
from anysr_plugin.blocks import AnySRBlock
from anysr_plugin.control import anysr_blocks, get_state
from anysr_plugin.plan import controls, decide_widths
from anysr_plugin.errors import ConfigError
from anysr_plugin.reference import RDN

from conftest import ENCODERS, randomize_gates

#: one scale per paper group (widths 0.5, 1.0, 0.7, 0.9, 0.5): unsorted, a repeated width
SCALES = torch.tensor([[1.2, 1.3], [4.0, 4.0], [2.0, 2.3], [3.0, 2.9], [1.5, 1.5]])
#: the release's RDN groups (widths 0.7, 1.0, 0.8, 0.9, 0.7)
OFFICIAL_SCALES = torch.tensor([[1.2, 1.2], [4.0, 4.0], [2.0, 2.0], [2.6, 2.6], [1.3, 1.3]])


def _model(kind, path):
    if kind == "rrdb":
        from lookalike_rrdb import ENCODERS as RRDB_ENCODERS

        model = anysr.anysrify(RRDB_ENCODERS["basicsr"](), AnySRConfig(mixed_path=path, gate="paper"))
        scales = SCALES
    elif kind == "official-rdb":
        model = RDN(G0=16, D=1, C=8, G=16)
        cfg = official.official_config("rdn-anysr").replace(mixed_path=path)
        model = anysr.anysrify(model, cfg, adapter="generic")
        scales = OFFICIAL_SCALES
    else:
        model = anysr.anysrify(ENCODERS[kind](), AnySRConfig(mixed_path=path, gate="paper"))
        scales = SCALES
    randomize_gates(model)
    return model.double().eval(), scales


def _loss_and_grads(model, x, scales, weight):
    x = x.clone().requires_grad_(True)
    model.zero_grad(set_to_none=True)
    with anysr.use_scale(model, scales):
        out = model(x)
    (out * weight).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad.clone(), grads


@pytest.mark.parametrize("path", ["grouped", "masked"])
@pytest.mark.parametrize("kind", sorted(ENCODERS) + ["rrdb", "official-rdb"])
def test_mixed_batch_equals_each_sample_alone_with_gradients(kind, path):
    model, scales = _model(kind, path)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(5, 3, 7, 6, generator=g, dtype=torch.float64)
    with torch.no_grad(), anysr.use_scale(model, scales):
        weight = torch.randn(model(x).shape, generator=g, dtype=torch.float64)
    out, gx, grads = _loss_and_grads(model, x, scales, weight)
    ref_out, ref_gx, ref_grads = [], [], {}
    for b in range(x.shape[0]):
        o, gxb, gb = _loss_and_grads(model, x[b:b + 1], scales[b:b + 1], weight[b:b + 1])
        ref_out.append(o)
        ref_gx.append(gxb)
        for n, v in gb.items():
            ref_grads[n] = ref_grads.get(n, 0) + v
    torch.testing.assert_close(out, torch.cat(ref_out), atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(gx, torch.cat(ref_gx), atol=1e-10, rtol=1e-10)
    assert grads.keys() == ref_grads.keys() and any("anysr_gate" in n for n in grads)
    for n in grads:
        torch.testing.assert_close(grads[n], ref_grads[n], atol=1e-10, rtol=1e-10, msg=n)
    # the no-grad (in-place) path gives the same outputs
    with torch.no_grad(), anysr.use_scale(model, scales):
        torch.testing.assert_close(model(x), out, atol=1e-10, rtol=1e-10)


def _calls(monkeypatch, model):
    calls = []
    cls = type(next(m for m in model.modules() if isinstance(m, AnySRBlock)))
    for name in ("forward_sliced", "forward_masked", "forward_grouped"):
        original = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda self, *a, _n=name, _o=original: calls.append(_n) or _o(self, *a))
    return calls


@pytest.mark.parametrize("path,grad,size,want", [
    ("auto", True, 6, "forward_grouped"),     # training: grouped
    ("auto", False, 32, "forward_grouped"),   # inference on maps >= 32x32: grouped
    ("auto", False, 6, "forward_masked"),     # inference on small maps: masked
    ("grouped", False, 6, "forward_grouped"), ("masked", True, 32, "forward_masked")])
def test_path_dispatch(monkeypatch, path, grad, size, want):
    model = anysr.anysrify(ENCODERS["edsr"](), AnySRConfig(mixed_path=path)).eval()
    calls = _calls(monkeypatch, model)
    x = torch.randn(3, 3, size, size)
    with torch.set_grad_enabled(grad), anysr.use_scale(model, torch.tensor([[4.0, 4.0], [1.2, 1.2], [4.0, 4.0]])):
        model(x)
    assert want in calls and ({"forward_grouped", "forward_masked"} - {want}).isdisjoint(calls)
    if want == "forward_grouped":  # two groups, each on the sliced path
        assert calls.count("forward_sliced") == 2 * calls.count("forward_grouped")


def test_auto_is_masked_while_compiling(monkeypatch):
    model = anysr.anysrify(ENCODERS["edsr"]()).eval()
    block = anysr_blocks(model)[0]
    x = torch.zeros(2, 16, 40, 40)
    assert block.mixed_path(x) == "grouped"
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert block.mixed_path(x) == "masked"


def test_sorted_batch_needs_no_gather(monkeypatch):
    model, _ = _model("edsr", "grouped")
    x = torch.randn(4, 3, 6, 5, dtype=torch.float64)
    scales = torch.tensor([[1.2, 1.2], [1.3, 1.3], [2.0, 2.0], [4.0, 4.0]])  # widths ascending
    selects = []
    original = torch.Tensor.index_select
    monkeypatch.setattr(torch.Tensor, "index_select", lambda *a, **k: selects.append(1) or original(*a, **k))
    with torch.no_grad(), anysr.use_scale(model, scales):
        out = model(x)
    assert not selects
    monkeypatch.undo()
    with torch.no_grad():
        for b in range(4):
            with anysr.use_scale(model, scales[b:b + 1]):
                torch.testing.assert_close(out[b:b + 1], model(x[b:b + 1]), atol=1e-10, rtol=1e-10)


def test_config_rejects_unknown_modes():
    with pytest.raises(ConfigError, match="reset"):
        AnySRConfig(reset="epoch")
    with pytest.raises(ConfigError, match="mixed_path"):
        AnySRConfig(mixed_path="fast")
    cfg = AnySRConfig(reset="batch", mixed_path="masked")
    assert AnySRConfig.from_yaml(cfg.to_yaml()) == cfg


# ---------------------------------------------------------------------------
# Algorithm 1's reset: per sample or per batch


def _draws(reset, p=0.6, calls=600, batch=4):
    model = anysr.anysrify(ENCODERS["edsr"](), AnySRConfig(reset=reset, reset_prob=p, seed=3))
    state = get_state(model)
    scale = torch.tensor([[1.2, 1.2], [2.0, 2.0], [3.0, 3.0], [1.5, 1.5]])[:batch]  # all below full width
    return [decide_widths(state, controls(state), scale, batch, True) for _ in range(calls)]


@pytest.mark.parametrize("reset", ["sample", "batch"])
def test_reset_frequency_within_four_sigma(reset):
    p, calls, batch = 0.6, 600, 4
    draws = _draws(reset, p, calls, batch)
    group = [0.5, 0.7, 0.9, 0.5]
    for ws in draws:  # each sample runs its group's width or the full network
        assert all(w in (g, 1.0) for w, g in zip(ws, group))
    resets = [w == 1.0 for ws in draws for w in ws]
    if reset == "batch":  # one draw per call: a call resets all its samples or none
        assert all(len(set(ws)) == 1 or 1.0 not in ws for ws in draws)
        resets = [ws[0] == 1.0 for ws in draws]
    n = len(resets)
    assert n == (calls if reset == "batch" else calls * batch)
    assert abs(sum(resets) / n - p) < 4 * (p * (1 - p) / n) ** 0.5


def test_batch_reset_in_the_trainer_runs_one_width_per_batch():
    from anysr_plugin.reference import build_reference
    from anysr_plugin.train import TrainConfig, Trainer

    torch.manual_seed(0)
    images = list(torch.rand(3, 3, 40, 40))
    model = build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=8, hidden_list=[8])
    anysr.anysrify(model, AnySRConfig(seed=0, reset="batch"))
    steps = 60
    cfg = TrainConfig(patch=6, batch_size=4, sample_q=16, steps=steps, lr=1e-3, progress=False, seed=0, repeat=4)
    t = Trainer(model, images, cfg, record=True)
    t.run()
    widths = (0.5, 0.7, 0.9, 1.0)
    low = 0
    resets = 0
    for rec in t.history:
        assert len(set(rec["groups"])) == 1 and len(set(rec["widths"])) == 1, rec
        g, w = rec["groups"][0], rec["widths"][0]
        assert w in (widths[g], 1.0)
        if g < 3:
            low += 1
            resets += w == 1.0
    assert low > 20 and abs(resets / low - 0.6) < 4 * (0.24 / low) ** 0.5


@pytest.mark.parametrize("act", [torch.nn.ReLU(), torch.nn.ReLU(inplace=True), torch.nn.LeakyReLU(0.2),
                                 torch.nn.GELU()])
def test_gated_activation_values_and_gradients_equal_autograd(act):
    from anysr_plugin.gate import gated_activation

    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z = torch.randn(3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    dy = torch.randn(3, 5, 4, 4, generator=g, dtype=torch.float64)

    def gate(z):
        return (2 * torch.sigmoid(z))[:, :, None, None]

    got = gated_activation(h, gate(z), act)
    want = act(h * gate(z))  # autograd's reference
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    got_grads = torch.autograd.grad((got * dy).sum(), (h, z))
    want_grads = torch.autograd.grad((want * dy).sum(), (h, z))
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-10)
    if not isinstance(act, torch.nn.GELU):  # the lean function keeps only its output and the gate
        assert type(got.grad_fn).__name__ == "_GatedActivationBackward"
    assert torch.autograd.gradcheck(lambda h, z: gated_activation(h, gate(z), act), (h, z))
    # an underflowed gate (exactly 0) gives finite gradients
    zero = gated_activation(h, torch.zeros(3, 5, 1, 1, dtype=torch.float64, requires_grad=True), act)
    assert all(torch.isfinite(t).all() for t in torch.autograd.grad(zero.sum(), h))


@pytest.mark.parametrize("kind", ["edsr", "rdn"])
def test_training_after_inference_mode(kind):
    """Index caches made under torch.inference_mode (a benchmark, a demo) must serve training."""
    model, scales = _model(kind, "grouped")
    x = torch.randn(5, 3, 6, 6, dtype=torch.float64)
    with torch.inference_mode(), anysr.use_scale(model, scales):
        model(x)
    model.train()
    with anysr.use_scale(model, scales):
        model(x).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "anysr_gate" in n)
