"""`scale_from` through the tools: a look-alike LIIF repo (tests/lookalike_liif_repo.py) whose model
``qiif`` takes ``forward(inp, coord, scale)`` with ``scale`` = 1 / HR size per query (B, Q, 2): a scale
argument by name that carries no usable scale.  `anysr launch` refuses its first training batch before
any optimizer step (one line naming the remedy); `anysr convert-config --scale-from` writes the remedy
into the config, the launcher fine-tunes the model in its own trainer, and the checkpoint evaluates at
the widths of the test scales; `--scale-from` / `--import` / `--lam` on `anysr launch`."""
from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

import anysr_plugin as anysr
from anysr_plugin.blocks import AnySRResBlock
from anysr_plugin.cli import main as cli_main

sys.path.insert(0, str(Path(__file__).parent))
import lookalike_liif_repo as L  # noqa: E402

MODEL = '''
import torch
import torch.nn as nn
import torch.nn.functional as F

import models
from models import register


@register('qiif')
class PerQueryScaleIIF(nn.Module):
    """forward(inp, coord, scale): `scale` is 1 / HR size per query, (B, Q, 2)."""

    def __init__(self, encoder_spec, imnet_spec=None):
        super().__init__()
        self.encoder = models.make(encoder_spec)
        self.imnet = models.make(imnet_spec, args={'in_dim': self.encoder.out_dim + 4})

    def forward(self, inp, coord, scale):
        feat = self.encoder(inp)
        q = F.grid_sample(feat, coord.flip(-1).unsqueeze(1), mode='nearest', align_corners=False)[:, :, 0, :]
        rel = scale * torch.tensor([feat.shape[-2], feat.shape[-1]], dtype=scale.dtype, device=scale.device)
        return self.imnet(torch.cat([q.permute(0, 2, 1), coord, rel], dim=-1))
'''

SCALE_FN = '''
import torch


def from_inverse_size(module, args, kwargs):
    """s = 1 / (scale * LR size), read from the first query of each sample."""
    inp = args[0] if args else kwargs['inp']
    q = args[2] if len(args) > 2 else kwargs['scale']
    return 1.0 / (q[:, 0, :] * torch.tensor([float(inp.shape[-2]), float(inp.shape[-1])], device=q.device))
'''


@pytest.fixture(autouse=True)
def _keep_env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = L.write_repo(tmp_path_factory.mktemp("qiif"), "liif")
    (root / "models" / "qscale.py").write_text(MODEL.lstrip())
    init = root / "models" / "__init__.py"
    init.write_text(init.read_text() + "from . import qscale\n")
    for script, old in (("train_liif.py", "pred = model(inp, batch['coord'], batch['cell'])"),
                        ("test.py", "pred = model(inp, batch['coord'], batch['cell'])")):
        text = (root / script).read_text()
        assert old in text
        (root / script).write_text(text.replace(old, old[:-1] + " / 2)"))
    (root / "anysr_scale.py").write_text(SCALE_FN.lstrip())
    cfg = L.train_config("liif")
    cfg["model"]["name"] = "qiif"
    (root / "vanilla.yaml").write_text(yaml.safe_dump(cfg))
    (root / "paper.yaml").write_text(anysr.AnySRConfig(seed=0).to_yaml())
    for scale in (2, 6):
        (root / f"t{scale}.yaml").write_text(yaml.safe_dump(L.test_config("liif", scale)))
    return root


def cli(*argv):
    out, err = io.StringIO(), io.StringIO()
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


def test_launch_refuses_the_first_batch_before_any_step(repo):
    rc, out, err = cli("launch", "liif", "--cpu", "--repo", repo, "--anysr-config", repo / "paper.yaml", "--",
                       "train_liif.py", "--config", "vanilla.yaml", "--name", "bad")
    last = err.strip().splitlines()[-1]
    assert rc == 2 and last == (
        "anysr launch: error: scale from forward argument `scale`: cannot take the scale from this call: a scale "
        "tensor must be 0-d, (2,) or (B, 2); got shape (2, 64, 2). Fix: anysrify(model, cfg, scale_from=fn) with "
        "fn(module, args, kwargs) returning the call's (B, 2) scale (s_h, s_w), each >= 1, or None; or "
        "scale_from='context' and run the calls under anysr_plugin.use_scale(model, s). "
        "anysr_plugin.unanysrify(model) gives the unconverted model back. With anysr launch: --scale-from "
        "MODULE:FUNCTION (or --scale-from context), or scale_from: in the model spec's anysr: entry (anysr "
        "convert-config --scale-from)")
    assert "scale from forward argument `scale`" in err.splitlines()[0]  # said at conversion
    assert not (repo / "save" / "bad").exists() or not any((repo / "save" / "bad").iterdir())


def test_convert_config_and_launch_fine_tune_with_scale_from(repo, monkeypatch):
    rc, out, err = cli("convert-config", "--method", "liif", repo / "vanilla.yaml", "-o", repo / "anysr.yaml",
                       "--scale-from", "anysr_scale:from_inverse_size", "--seed", "0", "--repo", repo)
    assert rc == 0, err
    assert "scale from scale_from=anysr_scale:from_inverse_size(module, args, kwargs)" in out
    assert yaml.safe_load((repo / "anysr.yaml").read_text())["model"]["anysr"]["scale_from"] == \
        "anysr_scale:from_inverse_size"
    rc, out, err = cli("launch", "liif", "--cpu", "--repo", repo, "--", "train_liif.py", "--config", "anysr.yaml",
                       "--name", "good")
    assert rc == 0, err
    assert "built qiif (PerQueryScaleIIF): converted 2 block(s) (2 ResBlock)" in err
    ck = torch.load(repo / "save/good/epoch-last.pth", map_location="cpu", weights_only=True)
    assert ck["model"]["anysr"]["scale_from"] == "anysr_scale:from_inverse_size"
    assert float(ck["model"]["sd"]["encoder.body.0.anysr_gate.fc2.weight"].abs().max()) > 0  # the gates trained
    # the checkpoint evaluates at the width of each test scale, read by the function it names
    for scale, channels in ((2, 11), (6, 16)):
        seen = []
        orig = AnySRResBlock.forward_sliced
        monkeypatch.setattr(AnySRResBlock, "forward_sliced", lambda self, x, n, s: seen.append(n) or orig(self, x, n, s))
        rc, out, err = cli("launch", "liif", "--cpu", "--repo", repo, "--", "test.py", "--config", f"t{scale}.yaml",
                           "--model", "save/good/epoch-last.pth")
        monkeypatch.setattr(AnySRResBlock, "forward_sliced", orig)
        assert rc == 0 and "result: " in out, err
        assert f"test scale x{scale}: width {0.7 if scale == 2 else 1:g}," in err
        assert seen[:1] == [16] and set(seen[1:]) == {channels}  # [0]: the conversion's full-width check


def test_launch_scale_from_import_and_lam(repo, tmp_path):
    elsewhere = tmp_path / "my_scale_fns.py"
    elsewhere.write_text(SCALE_FN.lstrip())
    rc, out, err = cli("launch", "liif", "--cpu", "--repo", repo, "--anysr-config", repo / "paper.yaml",
                       "--scale-from", "my_scale_fns:from_inverse_size", "--import", elsewhere, "--",
                       "train_liif.py", "--config", "vanilla.yaml", "--name", "flag")
    assert rc == 0, err
    assert "scale from scale_from=my_scale_fns:from_inverse_size(module, args, kwargs)" in err
    ck = torch.load(repo / "save/flag/epoch-last.pth", map_location="cpu", weights_only=True)
    assert ck["model"]["anysr"]["scale_from"] == "my_scale_fns:from_inverse_size"
    # the checkpoint names the function: without --import it cannot be found, and says so
    sys.modules.pop("my_scale_fns", None)
    rc, out, err = cli("launch", "liif", "--cpu", "--repo", repo, "--", "test.py", "--config", "t2.yaml",
                       "--model", "save/flag/epoch-last.pth")
    assert rc == 2 and err.strip().splitlines()[-1].startswith(
        "anysr launch: error: scale_from='my_scale_fns:from_inverse_size': cannot import module 'my_scale_fns' "
        "(ModuleNotFoundError: No module named 'my_scale_fns'); make it importable")
    # gates trained with one lambda cannot load under another
    rc, out, err = cli("launch", "liif", "--cpu", "--repo", repo, "--lam", "8", "--import", elsewhere, "--",
                       "test.py", "--config", "t2.yaml", "--model", "save/flag/epoch-last.pth")
    assert rc == 2 and err.strip().splitlines()[-1] == (
        "anysr launch: error: --lam 8: model spec 'qiif' holds AnySR gates trained with the block types default "
        "lambda (model.anysr.lam), which another lambda cannot load; drop --lam")
    rc, _, err = cli("launch", "liif", "--scale-from", "cell", "--", "train_liif.py")
    assert rc == 2 and err.strip() == (
        "anysr launch: error: AnySRConfig.scale_from='cell': must be None (the model's structure decides), 'context' "
        "or 'module:function' naming an importable fn(module, args, kwargs) -> (B, 2) scale or None (a callable "
        "itself goes to anysrify(model, cfg, scale_from=fn), not into the config)")
