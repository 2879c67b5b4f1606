"""Meta-SR adapter: detection, block finding, scale from set_scale(idx) / pos_mat,
bare state-dict round trips, the replacement MSDataLoader, the config template.

The nets are the look-alikes written by tests/lookalike_edsr_repo.py (MetaRDN, MetaEDSR's
class ``EDSR`` with one shared ReLU, MetaRCAN's class ``RCAN``), imported from a generated
repo so they carry upstream's module names (``model.metardn`` ...).
"""
from __future__ import annotations

import copy
import inspect

import pytest
import torch
import yaml

import anysr_plugin as anysr
from anysr_plugin.plan import active_plan
from anysr_plugin.adapters import detect_adapter, get_adapter
from anysr_plugin.adapters.metasr import (
    CALL_SCALE_ATTR, make_msdataloader_module, scale_from_pos_mat, wrap_set_scale)
from anysr_plugin.errors import AdapterError, ConfigError

from conftest import randomize_gates
from lookalike_edsr_repo import META_SCALES, meta_args, repo_modules, write_metasr_repo


@pytest.fixture(scope="module")
def meta_repo(tmp_path_factory):
    return write_metasr_repo(tmp_path_factory.mktemp("metasr_repo"), images=False)


@pytest.fixture(scope="module")
def nets(meta_repo):
    with repo_modules(meta_repo, "model.metardn", "model.metaedsr", "model.metarcan") as (rdn, edsr, rcan):
        yield {"metardn": rdn.make_model, "metaedsr": edsr.make_model, "metarcan": rcan.make_model}


def build(nets, name, seed=0, **overrides):
    torch.manual_seed(seed)
    return nets[name](meta_args(**overrides))


def pos_mat_for(h, w, scale):
    """A Meta-SR style pos_mat (1, ceil(s)^2 h w, 3) whose column 0 is 1/s (the offsets do not
    matter for these tests)."""
    s_int = -(-scale // 1)
    n = int(s_int * s_int * h * w)
    pos = torch.rand(1, n, 3, generator=torch.Generator().manual_seed(1))
    pos[..., 0] = 1.0 / scale
    return pos


def record_plans(model):
    from anysr_plugin.blocks import AnySRBlock

    plans = []
    blocks = [m for m in model.modules() if isinstance(m, AnySRBlock)]
    hook = blocks[0].register_forward_pre_hook(
        lambda mod, args: plans.append((active_plan(mod._anysr_state)[0].clone(), list(active_plan(mod._anysr_state)[1]))))
    return plans, hook


# --------------------------------------------------------------------------- detection, blocks


@pytest.mark.parametrize("name,family,count", [("metardn", "RDB", 2), ("metaedsr", "ResBlock", 2),
                                               ("metarcan", "RCAB", 4)])
def test_detect_and_find_blocks(nets, name, family, count):
    net = build(nets, name)
    assert detect_adapter(net).name == "metasr"
    assert not get_adapter("arbsr").detect(net)
    report = anysr.inspect_targets(net, adapter="metasr")
    assert [t.upstream_type for t in report.targets] == [family] * count
    assert not report.skipped
    # P2W (the meta-upscale) holds no block and stays a plain module
    anysr.anysrify(net, adapter="metasr")
    assert type(net.P2W).__name__ == "Pos2Weight"
    names = [n for n, _ in net.named_parameters() if "anysr_gate" in n]
    assert len(names) == 4 * count  # fc1/fc2 weight+bias per block
    prefix = {"metardn": "RDBs.0.", "metaedsr": "body.0.", "metarcan": "body.0.body.0."}[name]
    assert names[0] == prefix + "anysr_gate.fc1.weight"


def test_metaedsr_shared_relu_converted(nets):
    net = build(nets, "metaedsr")
    assert net.body[0].body[1] is net.body[1].body[1]  # upstream quirk, kept
    anysr.anysrify(net, adapter="metasr")
    assert net.body[0].body[1] is net.body[1].body[1]


@pytest.mark.parametrize("name", ["metardn", "metaedsr", "metarcan"])
def test_full_width_equals_original(nets, name):
    net = build(nets, name)
    ref = copy.deepcopy(net).eval()
    get_adapter("metasr").prepare(net)
    anysr.anysrify(net, adapter="metasr")
    net.eval()
    x = torch.rand(2, 3, 6, 7) * 255
    for idx, s in enumerate(META_SCALES):
        ref.set_scale(idx)
        net.set_scale(idx)
        pos = pos_mat_for(6, 7, s)
        with torch.no_grad(), anysr.use_width(net, 1.0):
            diff = (net(x, pos) - ref(x, pos)).abs().max().item()
        assert diff <= 1e-4 * 255, (name, s, diff)


# --------------------------------------------------------------------------- scale plumbing


def test_set_scale_index_reaches_blocks(nets):
    net = build(nets, "metardn")
    original_sig = inspect.signature(net.set_scale)
    wrap_set_scale(net, "index")
    assert inspect.signature(net.set_scale) == original_sig  # upstream signature kept
    anysr.anysrify(net, adapter="metasr")
    randomize_gates(net)
    net.eval()
    plans, hook = record_plans(net)
    x = torch.rand(1, 3, 5, 5) * 255
    expected_width = {1.5: 0.5, 2.0: 0.7, 3.0: 0.9, 4.0: 1.0}
    with torch.no_grad():
        for idx, s in enumerate(META_SCALES):
            net.set_scale(idx)
            assert net.scale == s and net.scale_idx == idx  # the original still ran
            net(x, pos_mat_for(5, 5, s))
    hook.remove()
    assert [p[0].tolist() for p in plans] == [[[s, s]] for s in META_SCALES]
    assert [p[1] for p in plans] == [[expected_width[s]] for s in META_SCALES]


def test_wrap_set_scale_is_idempotent_and_copies(nets):
    net = build(nets, "metardn")
    wrap_set_scale(net, "index")
    first = net.set_scale
    wrap_set_scale(net, "index")
    assert net.set_scale is first and first._anysr_wrapped
    clone = copy.deepcopy(net)
    clone.set_scale(3)
    assert getattr(clone, CALL_SCALE_ATTR) == (4.0, 4.0)
    assert getattr(net, CALL_SCALE_ATTR, None) is None  # the copy records on itself
    net.set_scale(1)
    assert getattr(net, CALL_SCALE_ATTR) == (2.0, 2.0)


def test_pos_mat_fallback_without_wrapper(nets):
    net = build(nets, "metardn")
    adapter = get_adapter("metasr")
    for s in (1.5, 2.3, 3.0, 3.9):
        scale = adapter.scale_from_call(net, (torch.zeros(1, 3, 4, 4), pos_mat_for(4, 4, s)), {})
        assert scale.shape == (1, 2) and scale.flatten().tolist() == pytest.approx([s, s], abs=1e-6)
    batch = adapter.scale_from_call(net, (torch.zeros(3, 3, 4, 4), pos_mat_for(4, 4, 2.0)), {})
    assert batch.shape == (3, 2) and batch.flatten().tolist() == pytest.approx([2.0] * 6)
    kw = adapter.scale_from_call(net, (torch.zeros(1, 3, 4, 4),), {"pos_mat": pos_mat_for(4, 4, 2.5)})
    assert kw.flatten().tolist() == pytest.approx([2.5, 2.5])
    assert scale_from_pos_mat(torch.zeros(1, 5, 2)) is None
    assert adapter.scale_from_call(net, (torch.zeros(1, 3, 4, 4),), {}) is None


def test_pos_mat_path_end_to_end_widths(nets):
    """Without the set_scale hook (no launcher), pos_mat alone selects the width."""
    net = build(nets, "metardn")
    anysr.anysrify(net, adapter="metasr")
    net.eval()
    plans, hook = record_plans(net)
    with torch.no_grad():
        net.set_scale(0)
        net(torch.rand(1, 3, 4, 4), pos_mat_for(4, 4, 1.5))
    hook.remove()
    assert plans[0][1] == [0.5]


def test_wrap_errors(nets):
    with pytest.raises(AdapterError, match="no set_scale"):
        wrap_set_scale(torch.nn.Conv2d(3, 3, 1), "index")
    with pytest.raises(AdapterError, match="contract"):
        wrap_set_scale(build(nets, "metardn"), "triple")
    from anysr_plugin.adapters.metasr import convert_upstream_net

    with pytest.raises(AdapterError, match="not a metasr net"):
        convert_upstream_net(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)), get_adapter("metasr"),
                             anysr.AnySRConfig(), "index")


def test_training_mixed_widths_backward(nets):
    """One scale per batch, but Algorithm 1's reset is drawn per sample (docs/design.md item 6): a
    training batch mixes widths; gradients reach the gates.  In eval one width per batch."""
    net = build(nets, "metardn")
    wrap_set_scale(net, "index")
    anysr.anysrify(net, anysr.AnySRConfig(seed=3), adapter="metasr")
    net.train()
    net.set_scale(0)
    plans, hook = record_plans(net)
    out = net(torch.rand(8, 3, 6, 6) * 255, pos_mat_for(6, 6, 1.5))
    hook.remove()
    scale, widths = plans[0]
    assert scale.shape == (8, 2) and len(widths) == 8 and set(widths) == {0.5, 1.0}
    out.abs().mean().backward()
    grads = [p.grad for n, p in net.named_parameters() if "anysr_gate.fc2" in n]
    assert all(g is not None for g in grads)


# --------------------------------------------------------------------------- checkpoints


def test_bare_state_dict_round_trip(nets, tmp_path):
    net = build(nets, "metardn", seed=0)
    wrap_set_scale(net, "index")
    anysr.anysrify(net, adapter="metasr")
    randomize_gates(net)
    sd = net.state_dict()
    assert not any(k.startswith(("module.", "model.")) for k in sd)
    assert "RDBs.1.anysr_gate.fc2.weight" in sd and "P2W.meta_block.0.weight" in sd
    torch.save(sd, tmp_path / "model_1.pt")  # what the trainer writes

    other = build(nets, "metardn", seed=5)
    anysr.anysrify(other, adapter="metasr")
    result = other.load_state_dict(torch.load(tmp_path / "model_1.pt", weights_only=True), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    net.eval(), other.eval()
    x, pos = torch.rand(1, 3, 5, 5) * 255, pos_mat_for(5, 5, 2.0)
    with torch.no_grad():
        net.set_scale(1), other.set_scale(1)
        assert torch.equal(net(x, pos), other(x, pos))


def test_upstream_checkpoint_lenient_load(nets):
    """Upstream (vanilla) weights into the anysrified net: Meta-SR's strict=False load leaves
    exactly the anysr_* keys missing; the identity gates keep the upstream function."""
    vanilla = build(nets, "metardn", seed=1).eval()
    net = build(nets, "metardn", seed=2)
    anysr.anysrify(net, adapter="metasr")
    result = net.load_state_dict(vanilla.state_dict(), strict=False)
    assert result.missing_keys and all("anysr_" in k for k in result.missing_keys)
    assert not result.unexpected_keys
    net.eval()
    x, pos = torch.rand(1, 3, 5, 5) * 255, pos_mat_for(5, 5, 4.0)
    with torch.no_grad():
        vanilla.set_scale(3), net.set_scale(3)
        assert (net(x, pos) - vanilla(x, pos)).abs().max() < 1e-3
    # and the reverse: an AnySR checkpoint into a vanilla net silently drops the gates upstream
    back = build(nets, "metardn", seed=3)
    result = back.load_state_dict(net.state_dict(), strict=False)
    assert result.unexpected_keys and all("anysr_" in k for k in result.unexpected_keys)


# --------------------------------------------------------------------------- data loader


class _ToyDataset(torch.utils.data.Dataset):
    def __init__(self, n=8, train=True):
        self.n, self.train, self.idx_scale, self.benchmark = n, train, 0, False
        self.scale = list(META_SCALES)

    def set_scale(self, idx):
        self.idx_scale = idx

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = self.scale[self.idx_scale]
        return torch.full((3, 4, 4), float(i)), torch.full((3, int(4 * s), int(4 * s)), float(i)), f"{i:04d}"


def _args(**kw):
    import argparse

    ns = argparse.Namespace(scale=list(META_SCALES), n_threads=0)
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


@pytest.mark.parametrize("workers", [0, 1])
def test_msdataloader_per_batch_scale_and_format(workers):
    import random

    module = make_msdataloader_module("metasr", "dataloader")
    random.seed(0)
    loader = module.MSDataLoader(_args(n_threads=workers), _ToyDataset(), batch_size=2, shuffle=True)
    seen = set()
    for batch in loader:
        lr, hr, names, idx_scale = batch
        assert isinstance(batch, list) and isinstance(idx_scale, int)
        s = META_SCALES[idx_scale]
        assert lr.shape == (2, 3, 4, 4) and hr.shape == (2, 3, int(4 * s), int(4 * s))  # one scale per batch
        assert len(names) == 2
        seen.add(idx_scale)
    assert len(loader) == 4 and len(seen) > 1
    # the trainer talks to loader.dataset like the upstream dataset
    assert loader.dataset.benchmark is False
    loader.dataset.first_epoch = True
    assert loader.dataset._anysr_inner.first_epoch is True


def test_msdataloader_test_mode_keeps_trainer_scale():
    module = make_msdataloader_module("metasr", "dataloader")
    ds = _ToyDataset(n=3, train=False)
    loader = module.MSDataLoader(_args(), ds, batch_size=1, shuffle=False)
    loader.dataset.set_scale(2)
    batches = list(loader)
    assert [b[0].shape[-1] for b in batches] == [4, 4, 4]
    assert all(b[1].shape[-1] == 12 for b in batches) and all(b[3] == 0 for b in batches)
    assert [b[2] for b in batches] == [("0000",), ("0001",), ("0002",)]


def test_msdataloader_arbsr_first_epoch_integer_scales():
    import random

    module = make_msdataloader_module("arbsr", "data.dataloader")
    scale = [1.1, 1.5, 2.0, 3.0, 4.0, 1.5]
    scale2 = [1.1, 1.5, 2.0, 3.0, 4.0, 3.0]
    loader = module.MSDataLoader(_args(scale=scale, scale2=scale2), _ToyDataset(n=40), batch_size=1, shuffle=False)
    assert loader.integer_scale_indices() == [2, 3, 4]
    random.seed(1)
    loader.dataset.first_epoch = True
    picks = [loader.choose_scale() for _ in range(60)]
    assert {p[0] for p in picks} == {2, 3, 4} and {p[1] for p in picks} == {0}
    loader.dataset.first_epoch = False
    picks = [loader.choose_scale() for _ in range(200)]
    assert {p[0] for p in picks} == set(range(6)) and all(a == b for a, b in picks)


def test_msdataloader_rejects_batch_sampler():
    module = make_msdataloader_module("metasr", "dataloader")
    with pytest.raises(AdapterError, match="batch_sampler"):
        module.MSDataLoader(_args(), _ToyDataset(), batch_sampler=[[0, 1]])


# --------------------------------------------------------------------------- config template


def test_convert_config_template(tmp_path):
    out = get_adapter("metasr").convert_config(None, str(tmp_path / "anysr_metasr.yaml"), None)
    doc = yaml.safe_load(open(out).read())
    cfg = anysr.AnySRConfig.from_yaml(out)
    assert cfg == anysr.AnySRConfig()
    assert doc["anysr"]["reset_prob"] == 0.6 and doc["anysr"]["widths"] == [0.5, 0.7, 0.9, 1.0]
    assert doc["upstream"]["recipe"]["patch_size"] == 50 and doc["upstream"]["recipe"]["lr"] == 1e-5
    assert doc["upstream"]["lam_default"]["RDN blocks"] == 8
    assert [g["width"] for g in doc["upstream"]["scale_groups"].values()] == [0.5, 0.7, 0.9, 1.0]
    launch = doc["upstream"]["launch"]
    assert launch.startswith("anysr launch metasr --anysr-config anysr_metasr.yaml -- main.py --model metardn")
    assert "--patch_size 50" in launch


def test_convert_config_carries_upstream_script(tmp_path):
    sh = tmp_path / "demo.sh"
    sh.write_text("# train\npython main.py --model metardn --ext sep --save metardn --lr 1e-4\n")
    out = get_adapter("metasr").convert_config(str(sh), str(tmp_path / "c.yaml"),
                                               anysr.AnySRConfig(reset_prob=0.4), init_from="pre.pt")
    doc = yaml.safe_load(open(out).read())
    assert doc["anysr"]["reset_prob"] == 0.4
    launch = doc["upstream"]["launch"]
    assert "--ext sep --save metardn --lr 1e-4" in launch and launch.index("--lr 1e-4") < launch.index("--lr 1e-05")
    assert launch.endswith("--pre_train pre.pt")
    with pytest.raises(ConfigError, match="unknown option"):
        get_adapter("metasr").convert_config(None, str(tmp_path / "d.yaml"), None, bogus=1)
    empty = tmp_path / "empty.sh"
    empty.write_text("echo nothing\n")
    with pytest.raises(ConfigError, match="main.py"):
        get_adapter("metasr").convert_config(str(empty), str(tmp_path / "e.yaml"), None)
