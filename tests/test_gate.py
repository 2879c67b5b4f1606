import contextlib

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.config import channels_at
from anysr_plugin.gate import InterweavingGate, gate_input_length, gate_param_count, interleave_layout
from anysr_plugin.runtime import native_gate

from conftest import randomize_gates, tiny_edsr
from reference_eq import interweave_vector


def test_interleave_lengths_match_the_paper_for_edsr_baseline():
    # C = 64, lambda = 4: n + 2 * floor(lambda * w) = 36 / 48 / 63 / 72
    assert [gate_input_length(64, channels_at(64, w), 4) for w in (0.5, 0.7, 0.9, 1.0)] == [36, 48, 63, 72]


def test_gate_parameters_match_table_v():
    gate = InterweavingGate(64, 4)
    assert tuple(gate.fc1.weight.shape) == (128, 72) and tuple(gate.fc2.weight.shape) == (64, 128)
    assert sum(p.numel() for p in gate.parameters()) == gate_param_count(64, 4) == 17600


def test_layout_equals_the_loop_form_of_eq7_and_is_a_prefix_across_widths():
    for channels, lam in ((64, 4), (64, 8), (16, 4), (32, 8)):
        full = None
        for n in range(channels, 0, -1):
            pooled = [f"f{j}" for j in range(n)]
            expected = interweave_vector(pooled, "sh", "sw", channels, lam)
            feat, scale, length = interleave_layout(channels, n, lam)
            got = [None] * length
            for j, col in enumerate(feat):
                got[col] = f"f{j}"
            for col in scale:
                got[col], got[col + 1] = "sh", "sw"
            assert got == expected
            if full is None:
                full = got
            assert full[: len(got)] == got  # the columns reading the scale never move


def test_concat_layout_is_the_wo_fi_ablation():
    feat, scale, length = interleave_layout(64, 44, 4, "concat")
    assert feat == list(range(44)) and scale == [44] and length == 46
    assert InterweavingGate(64, 4, "concat").fc1.weight.shape[1] == 66


def test_identity_gate_is_exactly_one_at_init_and_paper_gate_is_sigmoid():
    feat = torch.randn(3, 44, 5, 5)
    scale = torch.tensor([[2.0, 2.0], [1.5, 2.5], [3.0, 4.0]])
    assert torch.equal(InterweavingGate(64, 4, kind="identity")(feat, scale, 44), torch.ones(3, 44, 1, 1))
    gate = InterweavingGate(64, 4, kind="paper")
    out = gate(feat, scale, 44)
    assert out.shape == (3, 44, 1, 1) and ((out > 0) & (out < 1)).all()
    assert not torch.allclose(out[0], out[1])  # the scale pair changes the gate


def test_masked_gate_equals_per_width_gate():
    torch.manual_seed(1)
    gate = InterweavingGate(16, 4, kind="paper")
    feat = torch.randn(3, 16, 4, 4)
    ns = [8, 16, 11]
    mask = (torch.arange(16)[None, :] < torch.tensor(ns)[:, None]).float()[:, :, None, None]
    scale = torch.tensor([[1.5, 1.5], [3.5, 3.5], [2.0, 2.2]])
    masked = gate.forward_masked(feat * mask, scale, ns, mask)
    for b, n in enumerate(ns):
        alone = gate(feat[b:b + 1, :n], scale[b:b + 1], n)
        torch.testing.assert_close(masked[b:b + 1, :n], alone, atol=1e-6, rtol=1e-6)
        assert (masked[b, n:] == 0).all()


def _reference_gate(gate, feat, scale, n):
    """Eq. 6-8 written out per sample: pool, interleave with a loop, fc1 sliced, relu, fc2 sliced."""
    out = []
    for b in range(feat.shape[0]):
        pooled = [feat[b, j].mean() for j in range(n)]
        sh, sw = scale[b, 0], scale[b, 1]
        vec = pooled + [sh, sw] if gate.interweave == "concat" else []
        if gate.interweave != "concat":  # Eq. 7: a pair after feature floor(C * i / lambda), i = 1..lambda
            after = {gate.channels * i // gate.lam for i in range(1, gate.lam + 1)}
            for j, value in enumerate(pooled):
                vec.append(value)
                if j + 1 in after:
                    vec += [sh, sw]
        v = torch.stack([torch.as_tensor(e, dtype=feat.dtype) for e in vec])
        h = torch.relu(gate.fc1.weight[:, : len(vec)] @ v + gate.fc1.bias)
        z = gate.fc2.weight[:n] @ h + gate.fc2.bias[:n]
        out.append(gate.activation(z))
    return torch.stack(out)[:, :, None, None]


@pytest.mark.parametrize("channels, lam, interweave", [(64, 4, "interleave"), (147, 4, "interleave"),
                                                      (48, 8, "interleave"), (64, 4, "concat")])
def test_gate_with_and_without_gradients_equals_the_written_out_equations(channels, lam, interweave):
    torch.manual_seed(0)
    gate = InterweavingGate(channels, lam, interweave, kind="identity")
    torch.nn.init.normal_(gate.fc2.weight, std=0.1)  # a trained gate, not the identity
    scale = torch.tensor([[1.5, 1.5], [3.5, 2.0], [4.0, 4.0]])
    for n in sorted({channels, channels_at(channels, 0.9), channels_at(channels, 0.7), channels_at(channels, 0.5)}):
        feat = torch.randn(3, n, 5, 4)
        want = _reference_gate(gate, feat, scale, n)
        torch.testing.assert_close(gate(feat, scale, n), want, atol=1e-6, rtol=1e-5)
        with torch.no_grad():
            torch.testing.assert_close(gate(feat, scale, n), want, atol=1e-6, rtol=1e-5)


def test_no_grad_gate_follows_weight_updates_and_changed_scales():
    """Calls without gradients see the gate as it is now: an optimizer step, weights replaced by
    .to() and a scale tensor changed in place all show."""
    torch.manual_seed(0)
    gate = InterweavingGate(16, 4, kind="paper")
    feat = torch.randn(2, 16, 3, 3)
    scale = torch.tensor([[2.0, 2.0], [3.0, 3.0]])

    def both():
        with torch.no_grad():
            fast = gate(feat, scale, 16)
        torch.testing.assert_close(fast, _reference_gate(gate, feat, scale, 16), atol=1e-6, rtol=1e-5)
        return fast

    first = both()
    opt = torch.optim.SGD(gate.parameters(), lr=1.0)
    gate(feat, scale, 16).sum().backward()
    opt.step()
    assert not torch.allclose(both(), first)
    gate.double().float()  # new storages
    both()
    scale.mul_(1.5)  # the same tensor object, new values
    before = both()
    scale.fill_(1.0)
    assert not torch.allclose(both(), before)


def test_no_grad_gate_under_inference_mode_computes_from_current_values():
    """A gate made and run in inference mode (tensors without version counters) computes from the
    current values every call (a scale changed in place shows)."""
    torch.manual_seed(0)
    with torch.inference_mode():
        gate = InterweavingGate(16, 4, kind="paper")
        feat = torch.randn(2, 16, 3, 3)
        scale = torch.tensor([[2.0, 2.0], [3.0, 3.0]])
        first = gate(feat, scale, 16)
        scale.fill_(1.0)
        second = gate(feat, scale, 16)
        want = _reference_gate(gate, feat, scale, 16)
    torch.testing.assert_close(second, want, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("native", [True, False], ids=["native gate", "pytorch gate"])
def test_no_grad_calls_follow_weights_changed_through_data(native):
    """EMA updates and older optimizers write ``p.data`` in place, which bumps no version
    counter: a call without gradients must still see the new weights (no cached copies)."""
    model = anysr.anysrify(tiny_edsr(n_resblocks=2)).eval()
    randomize_gates(model)
    x = torch.rand(1, 3, 10, 10)
    with (contextlib.nullcontext() if native else native_gate.switched_off()), anysr.use_scale(model, 2.0):
        with torch.no_grad():
            model(x)  # fills whatever a call keeps between calls
        for name, p in model.named_parameters():
            if "anysr_gate" in name:
                p.data.mul_(0.5).add_(0.05)  # no version bump
        with torch.no_grad():
            after = model(x)
        expected = model(x).detach()  # with gradients: computed from the parameters as they are
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-5)
