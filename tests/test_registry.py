"""One registry implementation, one rule: block types, adapters and reference models refuse a taken
name naming the entry there, list the registered ones for an unknown name, and unregister on exit
of ``registered``.  And the core asks the method adapter instead of guessing from names: the
trainer's query layout, the fine-tune patch, the slim decoder's layers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import anysr_plugin as anysr
from anysr_plugin.adapters import (ADAPTERS, MethodAdapter, adapter_for, detect_adapter, get_adapter,
                                   register_adapter, unregister_adapter)
from anysr_plugin.errors import AdapterError, AnySRError, BlockTypeError, ConfigError
from anysr_plugin.reference import build_reference
from anysr_plugin.reference.registry import MODELS, make
from anysr_plugin.runtime.registry import BLOCK_TYPES, Registry
from anysr_plugin.train import TrainConfig, Trainer


class Thing:
    pass


def test_a_name_is_registered_once_and_the_error_names_the_holder():
    reg = Registry("widget", ConfigError)
    reg.register("a", Thing)
    with pytest.raises(ConfigError, match=r"^widget name 'a' is already registered \(by test_registry\.Thing\); "
                                          r"choose another name or unregister 'a' first$"):
        reg.register("a", object())
    with pytest.raises(ConfigError, match=r"^unknown widget 'b'; registered: a$"):
        reg.get("b")
    with pytest.raises(ConfigError, match=r"widget 'a' holds test_registry\.Thing, not <object"):
        reg.unregister("a", object())  # another value under the name: refused, the entry stays
    with pytest.raises(ConfigError, match=r"^widget 'z' is not registered; registered: a$"):
        reg.unregister("z")
    assert reg.get("a") is Thing


def test_aliases_are_registered_all_or_none_and_registered_unregisters_on_error():
    reg = Registry("widget", ConfigError)
    reg.register("b", 1)
    with pytest.raises(ConfigError, match="'b' is already registered"):
        reg.register("a", 2, aliases=("b",))
    assert reg.names() == ["b"]
    with pytest.raises(RuntimeError):
        with reg.registered("c", 3):
            assert reg.get("c") == 3
            raise RuntimeError
    assert "c" not in reg


def test_lookup_order_priority_then_registration():
    oldest, newest = Registry("x"), Registry("x", newest_first=True)
    for reg in (oldest, newest):
        reg.register("first", 1)
        reg.register("second", 2)
        reg.register("urgent", 3, priority=5)
    assert oldest.values() == [3, 1, 2] and newest.values() == [3, 2, 1]
    assert [t.family for t in anysr.block_types()] == [t.family for t in BLOCK_TYPES.values()]


def test_adapters_refuse_a_taken_name():
    liif = get_adapter("liif")
    with pytest.raises(AdapterError, match=r"adapter name 'liif' is already registered \(by <LIIFAdapter 'liif'>\)"):
        register_adapter(MethodAdapter(), "liif")
    with pytest.raises(AdapterError, match="'srno' is already registered"):
        register_adapter(MethodAdapter(), "my-method", "srno")  # an alias taken: nothing is registered
    assert "my-method" not in ADAPTERS and get_adapter("liif") is liif
    with pytest.raises(AdapterError, match="expects a MethodAdapter"):
        register_adapter(object(), "x")


class _Renamed(nn.Module):
    """A LIIF-shaped SR model no built-in adapter recognises (no gen_feat / query_rgb)."""

    def __init__(self):
        super().__init__()
        self.inner = build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=8, hidden_list=[8])

    def forward(self, inp, coord, cell):
        return self.inner(inp, coord, cell)


class _RenamedAdapter(MethodAdapter):
    name = "renamed-test"
    train_patch = 5

    def detect(self, model):
        return isinstance(model, _Renamed)

    def block_root(self, model):
        return model.inner.encoder

    def query_layout(self, model):
        return "points"


def test_the_trainer_and_finetune_ask_the_adapter(tmp_path):
    images = [torch.rand(3, 24, 24) for _ in range(2)]
    cfg = TrainConfig(patch=5, batch_size=2, sample_q=8, steps=1, lr=1e-3, progress=False, repeat=1)
    with pytest.raises(ConfigError, match="its adapter 'generic' knows no call model\\(inp, coord, cell\\)"):
        Trainer(_Renamed(), images, cfg)  # no adapter says how to drive it: refused, never guessed
    adapter = _RenamedAdapter()
    register_adapter(adapter)
    try:
        model = _Renamed()
        assert detect_adapter(model) is adapter and adapter_for(model).train_patch == 5
        anysr.anysrify(model, anysr.AnySRConfig(seed=0))
        trainer = Trainer(model, images, cfg, record=True)
        assert trainer.layout == "points"
        trainer.run()
        assert trainer.history[0]["widths"]
    finally:
        unregister_adapter("renamed-test")
    assert detect_adapter(_Renamed()) is get_adapter("generic")


def test_the_slim_decoder_is_where_the_adapter_says():
    class Decoder(MethodAdapter):
        name = "decoder-test"

        def slim_decoder(self, model):
            return ("mlp", "head")

    model = nn.Module()
    model.encoder = build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=8).encoder
    model.head = make({"name": "mlp", "args": {"in_dim": 6, "out_dim": 3, "hidden_list": [8]}})
    model.forward = lambda x: model.encoder(x)
    with ADAPTERS.registered("decoder-test", Decoder()):
        anysr.anysrify(model, anysr.AnySRConfig(decoder="slim"), adapter="decoder-test", scale_from="context")
    assert type(model.head).__name__ == "SlimMLP"


def test_reference_models_are_one_registry():
    assert {"edsr-baseline", "edsr", "rdn", "rcan", "liif", "mlp", "sronet"} <= set(MODELS.names())
    with pytest.raises(ConfigError, match="reference model name 'liif' is already registered"):
        MODELS.register("liif", nn.Identity)
    with pytest.raises(AnySRError, match="unknown reference model 'swinir'; registered: edsr, edsr-baseline"):
        make({"name": "swinir"})
    with pytest.raises(BlockTypeError, match="unknown block type 'nope'; registered: edsr, rcab, rdb"):
        anysr.AnySRConfig().lam_for("nope")


# --------------------------------------------------------------------------- compat mode as a policy


def test_compat_mode_reaches_the_runtime_as_the_states_policy():
    import pickle

    from anysr_plugin import official
    from anysr_plugin.control import get_state
    from anysr_plugin.runtime.policy import PAPER, POLICIES, PaperPolicy, policy_for
    from conftest import tiny_edsr

    assert policy_for(None) is PAPER and policy_for("official") is POLICIES.get("official")
    paper = anysr.anysrify(tiny_edsr(), anysr.AnySRConfig(seed=0))
    release = anysr.anysrify(tiny_edsr(), official.official_config())
    assert get_state(paper).policy is PAPER and isinstance(get_state(release).policy, official.ReleasePolicy)
    assert anysr.active_widths(paper, 1.75) == [0.5] and anysr.active_widths(release, 1.75) == [1.0]  # off the grid
    copy = pickle.loads(pickle.dumps(get_state(release)))
    assert isinstance(copy.policy, official.ReleasePolicy)
    old = get_state(release).__getstate__()
    del old["policy"]  # a state pickled before it held a policy gets its config's
    restored = object.__new__(type(get_state(release)))
    restored.__setstate__(old)
    assert isinstance(restored.policy, official.ReleasePolicy)

    class Half(PaperPolicy):  # any policy object: the runtime asks it, whatever it is
        def widths(self, state, scale, training):
            return [0.5] * scale.shape[0]

    get_state(paper).policy = Half()
    assert anysr.active_widths(paper, 3.0) == [0.5]
