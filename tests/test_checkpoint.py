"""Checkpoints: vanilla upstream weights into an AnySR model, safe loading, atomic saving."""
import os

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.checkpoint import (atomic_save, extract_state_dict, load_file, save_safetensors,
                                     strip_wrapper_prefix)
from anysr_plugin.errors import CheckpointError

from conftest import tiny_edsr, tiny_rdn


@pytest.mark.parametrize("factory", [tiny_edsr, tiny_rdn])
def test_vanilla_checkpoint_loads_with_only_anysr_keys_missing(tmp_path, factory):
    torch.manual_seed(3)
    upstream = factory().eval()
    path = tmp_path / "epoch-last.pth"
    torch.save({"model": {"name": "edsr-baseline", "args": {}, "sd": upstream.state_dict()},
                "optimizer": {}, "epoch": 7}, path)
    torch.manual_seed(4)
    model = anysr.anysrify(factory().eval())
    missing, unexpected = anysr.load_upstream_checkpoint(model, path)
    assert missing and all("anysr_gate" in k for k in missing) and unexpected == []
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad(), anysr.use_scale(model, 4.0):
        torch.testing.assert_close(model(x), upstream(x), atol=1e-5, rtol=0)


def test_foreign_keys_and_shapes_are_listed():
    model = anysr.anysrify(tiny_edsr())
    sd = tiny_edsr().state_dict()
    sd["tail.0.weight"] = torch.zeros(1)
    sd["head.0.weight"] = torch.zeros(16, 3, 5, 5)
    del sd["body.0.body.0.bias"]
    with pytest.raises(CheckpointError) as info:
        anysr.load_upstream_checkpoint(model, sd)
    msg = str(info.value)
    assert "missing: body.0.body.0.bias" in msg and "unexpected: tail.0.weight" in msg
    assert "head.0.weight: checkpoint (16, 3, 5, 5) vs model (16, 3, 3, 3)" in msg


def test_wrapper_prefixes_are_stripped():
    assert list(strip_wrapper_prefix({"module._orig_mod.a": 1, "b": 2})) == ["a", "b"]


def test_extract_state_dict_formats():
    sd = {"w": torch.ones(1)}
    assert extract_state_dict(sd) == sd
    assert extract_state_dict({"model": {"name": "x", "sd": sd}, "epoch": 1}) == sd
    assert extract_state_dict({"state_dict": sd}) == sd
    with pytest.raises(CheckpointError, match="no model state dict"):
        extract_state_dict({"epoch": 3})


def test_load_file_is_safe_by_default(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo owned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match="non-tensor objects"):
        load_file(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_file(tmp_path / "missing.pth")


def test_safetensors_round_trip(tmp_path):
    sd = {"a": torch.arange(6.0).view(2, 3), "b": torch.ones(2)}
    save_safetensors(sd, tmp_path / "m.safetensors")
    back = load_file(tmp_path / "m.safetensors")
    assert set(back) == {"a", "b"} and torch.equal(back["a"], sd["a"])


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pth"
    atomic_save({"v": torch.tensor(1)}, path)

    def crash(obj, f, *a, **k):
        f.write(b"partial")
        f.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"v": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert torch.load(path)["v"].item() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]  # no temp file left behind
