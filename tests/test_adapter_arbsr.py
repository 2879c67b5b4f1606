"""ArbSR adapter: detection, RCAB finding with sa_adapt / sa_upsample untouched, asymmetric
scale from set_scale(scale, scale2), bare state dicts, ArbSR's pre_train loading rule."""
from __future__ import annotations

import copy
import inspect

import pytest
import torch
import yaml

import anysr_plugin as anysr
from anysr_plugin.plan import active_plan
from anysr_plugin.adapters import detect_adapter, get_adapter
from anysr_plugin.adapters.metasr import wrap_set_scale
from anysr_plugin.blocks import AnySRBlock

from conftest import randomize_gates
from lookalike_edsr_repo import meta_args, repo_modules, write_arbsr_repo


@pytest.fixture(scope="module")
def make_arbrcan(tmp_path_factory):
    root = write_arbsr_repo(tmp_path_factory.mktemp("arbsr_repo"), images=False)
    with repo_modules(root, "model.arbrcan") as (mod,):
        def build(seed=0):
            torch.manual_seed(seed)
            return mod.make_model(meta_args())
        yield build


def test_detect_and_blocks(make_arbrcan):
    net = make_arbrcan()
    assert detect_adapter(net).name == "arbsr"
    assert not get_adapter("metasr").detect(net)
    sa_modules = {n: m for n, m in net.named_modules() if n.startswith(("sa_adapt", "sa_upsample"))}
    sa_params = {n: p for n, p in net.named_parameters() if n.startswith(("sa_adapt", "sa_upsample"))}
    report = anysr.inspect_targets(net, adapter="arbsr")
    assert [t.name for t in report.targets] == ["body.0.body.0", "body.0.body.1", "body.1.body.0", "body.1.body.1"]
    assert {t.upstream_type for t in report.targets} == {"RCAB"}
    anysr.anysrify(net, adapter="arbsr")
    # the scale-aware plug-ins are the very same modules and parameters, with no gate added
    after = {n: m for n, m in net.named_modules() if n.startswith(("sa_adapt", "sa_upsample"))}
    assert after.keys() == sa_modules.keys() and all(after[n] is sa_modules[n] for n in after)
    assert all(dict(net.named_parameters())[n] is p for n, p in sa_params.items())
    assert not any("anysr" in n for n in after)
    assert net.tail[0] is None  # upstream's placeholder kept
    assert sum(isinstance(m, AnySRBlock) for m in net.modules()) == 4


def test_full_width_equals_original_asymmetric(make_arbrcan):
    net = make_arbrcan()
    ref = copy.deepcopy(net).eval()
    get_adapter("arbsr").prepare(net)
    anysr.anysrify(net, adapter="arbsr")
    net.eval()
    x = torch.rand(2, 3, 8, 10) * 255
    for s, s2 in [(2.0, 2.0), (1.5, 3.0), (4.0, 2.5)]:
        ref.set_scale(s, s2)
        net.set_scale(s, s2)
        with torch.no_grad(), anysr.use_width(net, 1.0):
            out, want = net(x), ref(x)
        assert out.shape == want.shape == (2, 3, round(8 * s), round(10 * s2))
        assert (out - want).abs().max().item() <= 1e-3


@pytest.mark.parametrize("pair,width", [((1.5, 1.5), 0.5), ((1.5, 3.0), 0.9), ((3.0, 1.5), 0.9),
                                        ((2.0, 4.0), 1.0), ((2.5, 1.2), 0.7), ((6.0, 6.0), 1.0)])
def test_asymmetric_scale_reaches_blocks(make_arbrcan, pair, width):
    net = make_arbrcan()
    sig = inspect.signature(net.set_scale)
    wrap_set_scale(net, "pair")
    assert inspect.signature(net.set_scale) == sig  # set_scale(scale, scale2) kept
    anysr.anysrify(net, adapter="arbsr")
    randomize_gates(net)
    net.eval()
    plans = []
    block = next(m for m in net.modules() if isinstance(m, AnySRBlock))
    hook = block.register_forward_pre_hook(lambda m, a: plans.append((active_plan(m._anysr_state)[0].tolist(), active_plan(m._anysr_state)[1])))
    net.set_scale(*pair)
    assert (net.scale, net.scale2) == pair
    with torch.no_grad():
        net(torch.rand(1, 3, 6, 6) * 255)
    hook.remove()
    assert len(plans) == 1 and plans[0][1] == [width]  # width of the group of max(s_h, s_w)
    assert plans[0][0][0] == pytest.approx([pair[0], pair[1]])  # (s_h, s_w) = (scale, scale2)


def test_scale_keyword_call_and_attribute_fallback(make_arbrcan):
    adapter = get_adapter("arbsr")
    net = make_arbrcan()
    assert adapter.scale_from_call(net, (torch.zeros(1, 3, 4, 4),), {}) is None  # no set_scale yet
    net.set_scale(1.5, 2.0)  # not hooked: the attributes upstream writes are read
    assert adapter.scale_from_call(net, (), {}).tolist() == [[1.5, 2.0]]
    wrap_set_scale(net, "pair")
    net.set_scale(scale=3.0, scale2=1.5)
    assert adapter.scale_from_call(net, (), {}).tolist() == [[3.0, 1.5]]
    # one row per sample of the batch (Algorithm 1's reset is drawn per sample)
    assert adapter.scale_from_call(net, (torch.zeros(3, 3, 4, 4),), {}).tolist() == [[3.0, 1.5]] * 3


def test_bare_state_dict_round_trip_and_pre_train_rule(make_arbrcan, tmp_path):
    net = make_arbrcan(seed=0)
    wrap_set_scale(net, "pair")
    anysr.anysrify(net, adapter="arbsr")
    randomize_gates(net)
    sd = net.state_dict()
    assert "body.0.body.0.anysr_gate.fc1.weight" in sd and "sa_upsample.weight_compress" in sd
    assert not any(k.startswith("module.") for k in sd)
    torch.save(sd, tmp_path / "model_3.pt")

    # ArbSR --resume 0 --pre_train: keep the file's keys the model has, update, strict load
    def arbsr_pre_train_load(model, path):
        model_dict = model.state_dict()
        pretrained = {k: v for k, v in torch.load(path, weights_only=True).items() if k in model_dict}
        model_dict.update(pretrained)
        model.load_state_dict(model_dict)

    other = make_arbrcan(seed=7)
    anysr.anysrify(other, adapter="arbsr")
    arbsr_pre_train_load(other, tmp_path / "model_3.pt")  # AnySR checkpoint: gates load too
    net.eval(), other.eval()
    x = torch.rand(1, 3, 6, 8) * 255
    with torch.no_grad():
        net.set_scale(1.5, 3.0), other.set_scale(1.5, 3.0)
        assert torch.equal(net(x), other(x))

    vanilla = make_arbrcan(seed=9).eval()
    torch.save(vanilla.state_dict(), tmp_path / "vanilla.pt")
    fresh = make_arbrcan(seed=11)
    anysr.anysrify(fresh, adapter="arbsr")
    arbsr_pre_train_load(fresh, tmp_path / "vanilla.pt")  # upstream weights: gates keep identity init
    fresh.eval()
    with torch.no_grad():
        vanilla.set_scale(2.0, 4.0), fresh.set_scale(2.0, 4.0)
        assert (fresh(x) - vanilla(x)).abs().max() < 1e-3


def test_convert_config_template(tmp_path):
    out = get_adapter("arbsr").convert_config(None, str(tmp_path / "anysr_arbsr.yaml"),
                                              anysr.AnySRConfig(gate="paper"), patch_size=50)
    doc = yaml.safe_load(open(out).read())
    assert anysr.AnySRConfig.from_yaml(out).gate == "paper"
    assert doc["anysr"]["reset_prob"] == 0.6 and doc["upstream"]["recipe"]["patch_size"] == 50
    assert "--model ArbRCAN" in doc["upstream"]["launch"] and "--scale2 ''" in doc["upstream"]["launch"]
    assert any("type=bool" in n for n in doc["upstream"]["notes"])
