"""Structure over names: models no adapter knows by name (tests/lookalike_fork_repo.py) get their
scale source from the forward signature, through the API, `anysr convert-config` and `anysr launch`,
or a typed error that says how to fix it; feature-first paths get the scale's sub-network; nothing
stays patched on an upstream class."""
from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path

import pytest
import torch
import yaml

import anysr_plugin as anysr
from anysr_plugin.runtime import deferral
from anysr_plugin.adapters.structure import DeferredFeatures, defer_features
from anysr_plugin.blocks import AnySRBlock, AnySRResBlock
from anysr_plugin.cli import main as cli_main
from anysr_plugin.errors import CheckpointError, NoBlocksError, NoScaleSourceError
from anysr_plugin.launch import LaunchContext, honest_saves, purge_modules, run

sys.path.insert(0, str(Path(__file__).parent))
import lookalike_fork_repo as F  # noqa: E402
import lookalike_liif_repo as L  # noqa: E402

from conftest import randomize_gates  # noqa: E402

MESSAGES = {  # what the user sees at conversion, per structural variant
    "fork": "scale from forward argument `cell`",
    "op": "scale from forward argument `cell` of the op-dispatched forward(op, inp, feat, coord, cell); "
          "feature-first calls wait for it",
    "encoder": "scale from context (use_scale / use_width; the full network otherwise): a single-input network "
               "(an encoder) carries no scale in its call",
}


@pytest.fixture(autouse=True)
def _keep_env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield


@pytest.fixture(scope="module", params=["fork", "op", "plain"])
def repo(request, tmp_path_factory):
    variant = request.param
    root = F.write_fork_repo(tmp_path_factory.mktemp(variant), variant)
    (root / "vanilla.yaml").write_text(yaml.safe_dump(F.train_config(variant)))
    return variant, root


@contextlib.contextmanager
def repo_models(root):
    saved = list(sys.path)
    purge_modules()
    sys.path.insert(0, str(root))
    try:
        import models
        yield models
    finally:
        sys.path[:] = saved
        purge_modules()


def build(root, variant, seed=0):
    with repo_models(root) as models:
        torch.manual_seed(seed)
        return models.make(F.train_config(variant)["model"]).eval()


def queries(batch, h_lr, scale):
    H = round(h_lr * scale)
    ys = -1 + 1 / H + 2 / H * torch.arange(H).float()
    coord = torch.stack(torch.meshgrid(ys, ys, indexing="ij"), -1).view(1, -1, 2).expand(batch, -1, -1)
    return coord, torch.full((batch, H * H, 2), 2 / H)


def channels_seen(model):
    seen = []
    for m in model.modules():
        if isinstance(m, AnySRBlock):
            m.register_forward_pre_hook(lambda b, a: seen.append(
                b.width_channels(anysr.plan.peek_plan(b, a[0])[1][0])))
    return seen


# --------------------------------------------------------------------------- API


def test_api_scale_source_by_structure(repo, caplog):
    variant, root = repo
    model = build(root, variant)
    if variant == "plain":
        with pytest.raises(NoScaleSourceError, match="scale_from="):
            anysr.anysrify(model)
        assert "no scale source found" in str(anysr.inspect_targets(model))
        assert not any(isinstance(m, AnySRBlock) for m in model.modules())  # nothing changed
        anysr.anysrify(model, scale_from="context")
        assert "scale_from='context'" in anysr.inspect_targets(model).scale_source
        return
    report = anysr.inspect_targets(model)
    assert report.scale_source == MESSAGES[variant] and MESSAGES[variant] in str(report)
    with caplog.at_level(logging.INFO, logger="anysr_plugin"):
        anysr.anysrify(model, anysr.AnySRConfig(gate="paper"))
    line = [r.getMessage() for r in caplog.records if r.name == "anysr_plugin"]
    assert len(line) == 1 and "converted 2 block(s) (2 ResBlock)" in line[0] and MESSAGES[variant] in line[0]
    randomize_gates(model)
    seen = channels_seen(model)
    inp = torch.randn(1, 3, 8, 8)
    outs = {}
    for s in (2.0, 4.0):
        coord, cell = queries(1, 8, s)
        with torch.no_grad():
            outs[s] = model(inp, coord, cell) if variant == "fork" else model("sr", inp=inp, coord=coord, cell=cell)
    assert seen == [11, 11, 16, 16]  # the width follows the scale read from `cell`
    # feature-first: the renamed feature method / forward('gen_feat') under use_scale, and deferred
    coord, cell = queries(1, 8, 2.0)
    with torch.no_grad():
        with anysr.use_scale(model, 2.0):
            feat = model.gen_feats(inp) if variant == "fork" else model("gen_feat", inp=inp)
        assert isinstance(feat, (tuple, torch.Tensor))
        out = model.query_rgb(coord, cell) if variant == "fork" else model("query_rgb", feat=feat, coord=coord,
                                                                           cell=cell)
        torch.testing.assert_close(out, outs[2.0])
        cls_dict = dict(type(model).__dict__)
        with defer_features(model):
            feat = model.gen_feats(inp) if variant == "fork" else model("gen_feat", inp=inp)
            assert isinstance(feat, DeferredFeatures)
            chunks = [(coord[:, i:i + 40], cell[:, i:i + 40]) for i in range(0, coord.shape[1], 40)]
            if variant == "fork":
                out = torch.cat([model.query_rgb(c, k) for c, k in chunks], 1)
            else:
                out = torch.cat([model("query_rgb", feat=feat, coord=c, cell=k) for c, k in chunks], 1)
        torch.testing.assert_close(out, outs[2.0])
        assert dict(type(model).__dict__) == cls_dict and not deferral._PATCHED


def test_scale_from_callable_and_errors():
    from conftest import tiny_edsr

    class TwoInputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = tiny_edsr()

        def forward(self, x, hr_size):
            return self.enc(x)

    with pytest.raises(NoScaleSourceError, match=r"no scale source found: forward\(x, hr_size\)"):
        anysr.anysrify(TwoInputs())
    with pytest.raises(NoScaleSourceError, match="expected 'context'"):
        anysr.anysrify(TwoInputs(), scale_from="cell")

    def from_size(module, args, kwargs):
        return torch.tensor([[args[1][0] / args[0].shape[-2], args[1][1] / args[0].shape[-1]]])

    model = anysr.anysrify(TwoInputs(), scale_from=from_size).eval()
    assert "scale from scale_from=" in anysr.inspect_targets(model).scale_source
    seen = channels_seen(model)
    with torch.no_grad():
        model(torch.randn(1, 3, 6, 6), (9, 9))
        model(torch.randn(1, 3, 6, 6), (24, 24))
    assert seen == [8, 8, 16, 16]  # x1.5 -> width 0.5, x4 -> the full network
    # a bare encoder: the documented default (context), said at conversion
    assert anysr.inspect_targets(tiny_edsr()).scale_source == MESSAGES["encoder"]


def test_set_scale_nets_by_structure():
    """An EDSR-PyTorch-style net no adapter knows: set_scale(idx) or set_scale(scale, scale2)."""
    from conftest import tiny_edsr

    class IndexNet(torch.nn.Module):
        def __init__(self, scales):
            super().__init__()
            self.scales, self.scale, self.enc = scales, scales[0], tiny_edsr()

        def set_scale(self, idx_scale):
            self.scale = self.scales[idx_scale]

        def forward(self, x):
            return self.enc(x)

    class PairNet(IndexNet):
        def set_scale(self, scale, scale2):
            self.scale, self.scale2 = scale, scale2

    index, pair = anysr.anysrify(IndexNet([1.5, 4.0])).eval(), anysr.anysrify(PairNet([1.0])).eval()
    assert anysr.inspect_targets(index).scale_source == "scale from set_scale(idx_scale) (an index into the " \
                                                        "net's scale list)"
    assert anysr.inspect_targets(pair).scale_source == "scale from set_scale(scale, scale2) as (s_h, s_w)"
    assert "set_scale" not in type(index).__dict__ or type(index).__dict__["set_scale"] is IndexNet.__dict__[
        "set_scale"]
    seen_i, seen_p = channels_seen(index), channels_seen(pair)
    x = torch.randn(1, 3, 6, 6)
    with torch.no_grad():
        index.set_scale(1)
        index(x)
        pair.set_scale(2.0, 1.5)
        pair(x)
    assert seen_i == [16, 16] and seen_p == [11, 11]


# --------------------------------------------------------------------------- convert-config


def test_convert_config_by_structure(repo, tmp_path, capsys):
    variant, root = repo
    src, out = root / "vanilla.yaml", tmp_path / "anysr.yaml"
    rc = cli_main(["convert-config", "--method", "liif", str(src), "-o", str(out)])
    text = capsys.readouterr().out
    assert rc == 0 and f"model {F.VARIANTS[variant][0]!r} is not one of liif" in text
    rc = cli_main(["convert-config", "--method", "liif", str(src), "-o", str(out), "--repo", str(root), "--force"])
    captured = capsys.readouterr()
    if variant == "plain":
        assert rc == 2 and "no scale source" in captured.err and len(captured.err.strip().splitlines()) == 1
        return
    assert rc == 0, captured.err
    assert "would convert 2 block(s) (2 ResBlock) under" in captured.out
    assert MESSAGES[variant] in captured.out and "encoder.body.0 (ResBlock, edsr, C=16, lambda=4)" in captured.out
    spec = yaml.safe_load(out.read_text())["model"]
    assert spec["name"] == F.VARIANTS[variant][0] and "anysr" in spec


def test_honest_saves(tmp_path):
    spec = {"name": "liif", "anysr": anysr.AnySRConfig().to_dict(), "sd": {"encoder.w": torch.zeros(1)}}
    with honest_saves():
        with pytest.raises(CheckpointError, match="claims AnySR"):
            torch.save({"model": spec, "epoch": 1}, tmp_path / "x.pth")
        torch.save({"model": {**spec, "sd": {"encoder.body.0.anysr_gate.fc1.weight": torch.zeros(1)}}},
                   tmp_path / "ok.pth")
        torch.save({"model": {k: v for k, v in spec.items() if k != "anysr"}}, tmp_path / "plain.pth")
    assert not (tmp_path / "x.pth").exists() and (tmp_path / "ok.pth").exists()


# --------------------------------------------------------------------------- launcher


def launch(root, script, *argv, **kw):
    out, err = io.StringIO(), io.StringIO()
    ctx = LaunchContext(method="liif", repo=root, script=Path(script), argv=list(argv), cpu=True, log=err, **kw)
    with contextlib.redirect_stdout(out):
        rc = run(ctx)
    return rc, out.getvalue(), err.getvalue()


def test_launcher_by_structure(repo, monkeypatch):
    variant, root = repo
    acfg = anysr.AnySRConfig(seed=0, gate="paper")
    patched = []
    orig_patch = deferral._patch_class

    def spy_patch(cls, features, queries):
        patched.append((cls, dict(cls.__dict__), tuple(features), tuple(queries)))
        return orig_patch(cls, features, queries)

    monkeypatch.setattr(deferral, "_patch_class", spy_patch)
    if variant == "plain":
        with pytest.raises(NoScaleSourceError, match="scale_from"):
            launch(root, "train_liif.py", "--config", "vanilla.yaml", "--name", "a", anysr_config=acfg)
        assert not (root / "save" / "a" / "epoch-last.pth").exists()  # stopped before any training step
        return
    rc, out, err = launch(root, "train_liif.py", "--config", "vanilla.yaml", "--name", "a", anysr_config=acfg)
    assert rc == 0, out + err
    name, cls = F.VARIANTS[variant][0], {"fork": "ImplicitFork", "op": "OpDispatchIIF"}[variant]
    assert f"built {name} ({cls}): converted 2 block(s) (2 ResBlock)" in err and MESSAGES[variant] in err
    ck = torch.load(root / "save/a/epoch-last.pth", map_location="cpu", weights_only=True)["model"]
    assert "anysr" in ck and sum("anysr_gate" in k for k in ck["sd"]) == 8
    # the gen_feats-first / forward('gen_feat')-first test path runs the width of each scale
    widths = {}
    for scale in (2, 6):
        (root / f"t{scale}.yaml").write_text(yaml.safe_dump(L.test_config("liif", scale, eval_bsize=7)))
        seen = []
        orig = AnySRResBlock.forward_sliced
        monkeypatch.setattr(AnySRResBlock, "forward_sliced",
                            lambda self, x, n, s: seen.append(n) or orig(self, x, n, s))
        with _no_anysr_warnings():
            rc, out, err = launch(root, "test.py", "--config", f"t{scale}.yaml", "--model", "save/a/epoch-last.pth")
        monkeypatch.setattr(AnySRResBlock, "forward_sliced", orig)
        assert rc == 0 and "result: " in out, out + err
        widths[scale] = set(seen[2:])
        assert f"test scale x{scale}: width {0.7 if scale == 2 else 1.0:g}" in err
    assert widths == {2: {11}, 6: {16}}
    # --width fixes only the width: at x6 the full network is the scale's own width, so the same result
    rc, out6, _ = launch(root, "test.py", "--config", "t6.yaml", "--model", "save/a/epoch-last.pth")
    rc, outw, errw = launch(root, "test.py", "--config", "t6.yaml", "--model", "save/a/epoch-last.pth", width=1.0)
    assert out6.split("result: ")[1] == outw.split("result: ")[1] and "fixed width 1" in errw
    # no patch stays on the upstream class after the launcher returns
    assert patched and all(dict(c.__dict__) == before for c, before, _, _ in patched)
    feats = {"fork": ("gen_feats",), "op": ("gen_feat",)}[variant]
    assert all(f == feats for _, _, f, _ in patched) and not deferral._PATCHED


def test_launcher_stops_when_nothing_is_converted(tmp_path):
    root = L.write_repo(tmp_path / "r", "liif")
    cfg = L.train_config("liif")
    cfg["model"] = {"name": "mlp", "args": {"in_dim": 3, "out_dim": 3, "hidden_list": [4]}}
    (root / "mlp.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(NoBlocksError, match="stopped before any training step"):
        launch(root, "train_liif.py", "--config", "mlp.yaml", "--name", "m", anysr_config=anysr.AnySRConfig())
    assert not (root / "save" / "m" / "epoch-last.pth").exists()


@contextlib.contextmanager
def _no_anysr_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", anysr.errors.AnySRWarning)
        yield
