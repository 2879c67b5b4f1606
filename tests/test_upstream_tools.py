"""`anysr eval / flops / bench / export --repo DIR`: the tools run the upstream model itself, built by the
look-alike repos' own registries (tests/lookalike_liif_repo.py); the reference SRNO computes the look-alike
upstream SRNO's function; references refuse checkpoints of other models in one line; exports run at any size
and ``.safetensors`` exports carry their spec."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.cli import main
from anysr_plugin.cost import count_flops
from anysr_plugin.data import make_lr, save_image
from anysr_plugin.errors import AnySRError, CheckpointError
from anysr_plugin.metrics import psnr
from anysr_plugin.reference import build_reference, cell_for, make_coord
from anysr_plugin.upstream import build_from_repo, follow_device, load_export, read_export_metadata, repo_imports

sys.path.insert(0, str(Path(__file__).parent))
import lookalike_liif_repo as L  # noqa: E402

ENC = {"name": "edsr-baseline", "args": {"no_upsampling": True, "n_resblocks": 2, "n_feats": 16}}
SPECS = {"srno": {"name": "sronet", "args": {"encoder_spec": ENC, "width": 16, "blocks": 2}},
         "lte": {"name": "lte", "args": {"encoder_spec": ENC,
                                         "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16]}}}}}


def _randomize(model, seed=1, std=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def _repo_model(repo, spec, seed=1):
    """The look-alike upstream model of `spec`, built by the repo's own registry, random weights."""
    with repo_imports(repo):
        import models

        model = models.make(spec)
    _randomize(model, seed)
    return follow_device(model).eval()


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    """Look-alike SRNO and LTE repos, each with a vanilla checkpoint written as upstream saves it."""
    out = {}
    for kind, spec in SPECS.items():
        repo = L.write_repo(tmp_path_factory.mktemp(kind), kind)
        model = _repo_model(repo, spec)
        ckpt = repo / f"{kind}.pth"
        torch.save({"model": {**spec, "sd": model.state_dict()}, "optimizer": {"name": "adam", "args": {}},
                    "epoch": 1}, ckpt)
        out[kind] = dict(repo=repo, ckpt=ckpt, model=model)
    hr = tmp_path_factory.mktemp("hr")
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 30), indexing="ij")
    img = (torch.stack([yy, xx, (yy + xx) / 2]) * 0.6 + 0.2 + 0.05 * torch.rand(3, 24, 30, generator=g)).clamp(0, 1)
    save_image(img, hr / "a.png")
    out["hr"] = hr
    return out


# ---------------------------------------------------------------------------------------------------------
# the reference SRNO is upstream SRNO's function


def test_reference_srno_computes_the_lookalike_upstream_srno(tmp_path):
    repo = L.write_repo(tmp_path / "srno", "srno")
    spec = {"name": "sronet", "args": {"encoder_spec": ENC, "width": 32, "blocks": 4}}
    upstream = _repo_model(repo, spec, seed=3)
    ref = build_reference("srno-edsr-baseline", n_resblocks=2, n_feats=16, width=32, blocks=4).eval()
    ref.load_state_dict(upstream.state_dict())  # strict: every key and shape matches
    x = torch.rand(2, 3, 7, 9, generator=torch.Generator().manual_seed(0)) * 2 - 1
    coord = make_coord((13, 20), flatten=False).unsqueeze(0).expand(2, -1, -1, -1)
    cell = cell_for((13, 20), 2)
    with torch.no_grad():
        a, b = upstream(x, coord, cell), ref(x, coord, cell)
    scale = float(a.abs().mean())
    assert scale > 0.1
    assert float((a - b).abs().max()) <= 1e-5 * max(1.0, scale)


def test_lookalike_galerkin_block_is_the_documented_formula(tmp_path):
    """The look-alike's block against the formula written out here: x + MLP(x + q (k^T v) / N),
    k and v normalised by (t - mean) / (unbiased std + eps) with a per-head affine."""
    repo = L.write_repo(tmp_path / "srno", "srno")
    with repo_imports(repo):
        from models.galerkin import simple_attn

        block = simple_attn(8, 2)
    _randomize(block, seed=5, std=0.3)
    x = torch.randn(1, 8, 3, 4, generator=torch.Generator().manual_seed(2))
    qkv = torch.nn.functional.conv2d(x, block.qkv_proj.weight, block.qkv_proj.bias)[0]  # (24, 3, 4)
    rows = qkv.reshape(24, 12).t()                                                       # (N, 24)
    out = torch.zeros(12, 8)
    for head in range(2):
        part = rows[:, head * 12:(head + 1) * 12]
        q, k, v = part[:, :4], part[:, 4:8], part[:, 8:]

        def norm(t, ln):
            mu = t.mean(-1, keepdim=True)
            sd = ((t - mu) ** 2).sum(-1, keepdim=True).div(t.shape[-1] - 1).sqrt()
            return (t - mu) / (sd + 1e-5) * ln.weight[head, 0] + ln.bias[head, 0]

        out[:, head * 4:(head + 1) * 4] = q @ (norm(k, block.kln).t() @ norm(v, block.vln)) / 12
    y = out.t().reshape(1, 8, 3, 4) + x
    conv = torch.nn.functional.conv2d
    mlp = conv(torch.nn.functional.gelu(conv(y, block.o_proj1.weight, block.o_proj1.bias)),
               block.o_proj2.weight, block.o_proj2.bias)
    with torch.no_grad():
        assert torch.allclose(block(x), x + mlp, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# --repo: the tools run the upstream model


def _hand_psnr(model, hr_path, scale):
    """PSNR of the upstream model's own forward (no AnySR), by hand: LIIF's normalisation, full HR grid."""
    from anysr_plugin.data import load_image

    hr = load_image(hr_path)
    lr, crop = make_lr(hr, (scale, scale))
    H, W = crop.shape[-2:]
    inp = (lr[None] - 0.5) / 0.5
    coord = make_coord((H, W), flatten=False).unsqueeze(0)
    with torch.no_grad():
        out = model(inp, coord, cell_for((H, W), 1))
    sr = (out * 0.5 + 0.5).clamp(0, 1)
    return float(psnr(sr, crop[None], protocol="benchmark", scale=(scale, scale))), lr.shape[-2:]


def test_eval_repo_runs_the_upstream_model(repos, tmp_path, capsys):
    r = repos["srno"]
    out = tmp_path / "res.json"
    assert main(["eval", "--repo", str(r["repo"]), "--checkpoint", str(r["ckpt"]), "--hr", str(repos["hr"]),
                 "--scales", "2", "3", "--modes", "subnet", "full", "--json", str(out)]) == 0
    text = capsys.readouterr()
    assert "built sronet (SRNO): converted 2 block(s)" in text.err and "vanilla upstream weights" in text.err
    rows = {(row["scale"], row["mode"]): row for row in json.loads(out.read_text())["results"]}
    _, converted, _ = build_from_repo(r["repo"], r["ckpt"])
    for s in (2, 3):
        want, lr_size = _hand_psnr(r["model"], repos["hr"] / "a.png", s)
        # fresh identity gates: the full network is the upstream function, to float rounding
        assert rows[(s, "full")]["psnr"] == pytest.approx(want, abs=1e-3)
        assert rows[(s, "full")]["width"] == 1.0 and rows[(s, "subnet")]["width"] == {2: 0.7, 3: 0.9}[s]
        # the encoder's multiply-adds at the width that ran (convolutions + the gates' FC layers)
        enc = count_flops(converted.encoder, torch.zeros(1, 3, *lr_size), width=1.0, scale=s) / 1e9
        vanilla = count_flops(r["model"].encoder, torch.zeros(1, 3, *lr_size)) / 1e9
        assert rows[(s, "full")]["encoder_gmacs"] == pytest.approx(enc, rel=1e-9) and enc > vanilla
        assert rows[(s, "subnet")]["encoder_gmacs"] < vanilla
        assert f"| x{s} | full | 1 | {enc:.3f} | {want:.2f} |" in text.out


def test_flops_bench_export_repo(repos, tmp_path, capsys):
    r = repos["srno"]
    base = ["--repo", str(r["repo"]), "--checkpoint", str(r["ckpt"])]
    assert main(["flops", *base, "--lr-size", "6x8", "--scales", "2", "--format", "json", "--no-blocks"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    inp = torch.zeros(1, 3, 6, 8)
    coord, cell = make_coord((12, 16), flatten=False).unsqueeze(0), cell_for((12, 16), 1)
    original = [x for x in rows if x["model"] == "original"][0]
    assert original["macs"] == count_flops(r["model"], inp, coord, cell)
    assert main(["bench", *base, "--lr-size", "6x6", "--widths", "0.5,1.0", "--warmup", "0", "--repeats", "1",
                 "--no-memory", "--json", str(tmp_path / "b.json")]) == 0
    assert json.loads((tmp_path / "b.json").read_text())["model"].startswith("sronet")
    # export: the encoder graph of the upstream model, and its weights with the spec
    enc = tmp_path / "enc.pt"
    assert main(["export", *base, "--width", "0.7", "--scale", "2", "--part", "encoder", "--lr-size", "12x12",
                 "-o", str(enc)]) == 0
    assert "at LR 9x12" in capsys.readouterr().out
    st = tmp_path / "sub.safetensors"
    assert main(["export", *base, "--width", "0.7", "--scale", "2", "-o", str(st)]) == 0
    meta = read_export_metadata(st)
    assert meta["model"] == {"source": "repo", "spec": {**SPECS["srno"], "anysr": anysr.AnySRConfig().to_dict()}}
    assert meta["width"] == 0.7 and meta["scale"] == [2.0, 2.0] and meta["part"] == "model"
    rebuilt = load_export(st, repo=r["repo"])
    _, model, _ = build_from_repo(r["repo"], r["ckpt"])
    x = torch.rand(1, 3, 5, 7)
    coord, cell = make_coord((10, 14), flatten=False).unsqueeze(0), cell_for((10, 14), 1)
    with torch.no_grad(), anysr.use_width(model, 0.7), anysr.use_scale(model, 2.0):
        ref = model(x, coord, cell)
    with torch.no_grad():
        assert torch.allclose(rebuilt(x, coord, cell), ref, atol=1e-5)
    with pytest.raises(AnySRError, match="repo="):
        load_export(st)


def test_repo_anysr_checkpoint_loads_its_gates(repos, tmp_path, capsys):
    r = repos["srno"]
    _, model, spec = build_from_repo(r["repo"], r["ckpt"])
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "anysr_gate" in n:
                p.add_(0.05)
    ck = tmp_path / "anysr.pth"
    torch.save({"model": {**spec, "sd": model.state_dict()}, "epoch": 2}, ck)
    assert spec["anysr"] == anysr.AnySRConfig().to_dict()
    _, again, _ = build_from_repo(r["repo"], ck)
    sd = again.state_dict()
    assert all(torch.equal(v, sd[k]) for k, v in model.state_dict().items())
    assert main(["eval", "--repo", str(r["repo"]), "--checkpoint", str(ck), "--hr", str(repos["hr"]),
                 "--scales", "2", "--modes", "subnet"]) == 0
    err = capsys.readouterr().err
    assert "loaded its saved AnySR weights" in err


def test_lte_checkpoint_needs_its_repo(repos, capsys):
    r = repos["lte"]
    # the reference LIIF is a different function: a one-line typed refusal naming --repo
    assert main(["eval", "--model", "liif-edsr-baseline", "--checkpoint", str(r["ckpt"]), "--scales", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'lte'" in err and "--repo <LTE" in err
    assert main(["flops", "--model", "lte"]) == 2
    capsys.readouterr()
    # the LTE repo builds it
    assert main(["eval", "--repo", str(r["repo"]), "--checkpoint", str(r["ckpt"]), "--hr", str(repos["hr"]),
                 "--scales", "2", "--modes", "full"]) == 0
    assert "built lte (LTE): converted 2 block(s)" in capsys.readouterr().err


def test_reference_refuses_checkpoints_that_do_not_fit(repos, tmp_path, capsys):
    r = repos["srno"]
    # the right model name, the wrong sizes: one line, what did not fit, and --repo
    assert main(["flops", "--model", "srno-edsr-baseline", "--checkpoint", str(r["ckpt"])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "does not fit" in err and "--repo <SRNO" in err
    # with the sizes given, the reference loads it and computes the same function
    assert main(["eval", "--model", "srno-edsr-baseline", "--model-arg", "n_resblocks=2", "--model-arg",
                 "n_feats=16", "--model-arg", "width=16", "--model-arg", "blocks=2", "--checkpoint",
                 str(r["ckpt"]), "--hr", str(repos["hr"]), "--scales", "2", "--modes", "full",
                 "--json", str(tmp_path / "ref.json")]) == 0
    want, _ = _hand_psnr(r["model"], repos["hr"] / "a.png", 2)
    got = json.loads((tmp_path / "ref.json").read_text())["results"][0]["psnr"]
    assert got == pytest.approx(want, abs=1e-3)
    # a bare state dict (Meta-SR / ArbSR style) says nothing about how to build the net
    bare = tmp_path / "bare.pt"
    torch.save(r["model"].state_dict(), bare)
    with pytest.raises(CheckpointError, match="anysr launch metasr"):
        build_from_repo(r["repo"], bare)
    assert main(["eval", "--repo", str(r["repo"]), "--scales", "2"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------
# export at any input size; the .safetensors spec round trip (reference models)


REF = ["--model", "liif-edsr-baseline", "--model-arg", "n_resblocks=2", "--model-arg", "n_feats=16",
       "--model-arg", "hidden_list=[16]"]


@pytest.mark.parametrize("suffix,scale", [(".pt", None), (".pt2", "2")])
def test_encoder_graph_runs_at_another_size(tmp_path, capsys, suffix, scale):
    out = tmp_path / f"enc{suffix}"
    extra = ["--scale", scale] if scale else []
    assert main(["export", *REF, "--width", "0.7", "--part", "encoder", "--lr-size", "48x48", *extra,
                 "-o", str(out)]) == 0
    capsys.readouterr()
    from anysr_plugin.commands._model import load_cli_model
    import argparse

    args = argparse.Namespace(model="liif-edsr-baseline", model_arg=["n_resblocks=2", "n_feats=16",
                                                                     "hidden_list=[16]"],
                              checkpoint=None, config=None, seed=0, repo=None)
    _, model = load_cli_model(args)
    x = torch.rand(1, 3, 32, 40)
    graph = torch.jit.load(str(out)) if suffix == ".pt" else torch.export.load(str(out)).module()
    call = (x,) if scale else (x, torch.tensor([[2.0, 2.0]]))
    with torch.no_grad(), anysr.use_width(model, 0.7), anysr.use_scale(model, 2.0):
        ref = model.encoder(x)
    with torch.no_grad():
        got = graph(*call)
    assert got.shape == (1, 16, 32, 40) and torch.allclose(got, ref, atol=1e-5)


def test_whole_implicit_model_graph_is_refused(tmp_path, capsys):
    assert main(["export", *REF, "--width", "0.7", "-o", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert "--part encoder" in err and "docs/export.md" in err


def test_safetensors_export_round_trip(tmp_path, capsys):
    out = tmp_path / "sub.safetensors"
    assert main(["export", *REF, "--width", "0.5", "-o", str(out)]) == 0
    meta = read_export_metadata(out)
    assert meta["model"] == {"source": "reference", "name": "liif-edsr-baseline",
                             "args": {"n_resblocks": 2, "n_feats": 16, "hidden_list": [16]}, "seed": 0}
    assert meta["width"] == 0.5 and meta["scale"] is None and meta["anysr"]["widths"] == [0.5, 0.7, 0.9, 1.0]
    sub = load_export(out)
    from anysr_plugin.export import ScaleInputModel

    assert isinstance(sub, ScaleInputModel)
    model = anysr.anysrify(build_reference("liif-edsr-baseline", seed=0, n_resblocks=2, n_feats=16,
                                           hidden_list=[16])).eval()
    x = torch.rand(1, 3, 6, 5)
    coord, cell = make_coord((9, 11)).unsqueeze(0), cell_for((9, 11), 1, 99)
    with torch.no_grad(), anysr.use_width(model, 0.5), anysr.use_scale(model, (1.5, 2.2)):
        ref = model(x, coord, cell)
    with torch.no_grad():
        assert torch.allclose(sub(x, coord, cell, scale=(1.5, 2.2)), ref, atol=1e-5)
    assert not math.isnan(float(ref.mean()))


def test_built_models_leave_the_upstream_class_untouched(repos):
    """The `.cuda()` guard is bound on the instance: the repo's class keeps its own methods."""
    r = repos["srno"]
    original, model, _ = build_from_repo(r["repo"], r["ckpt"])
    for m in (original, model):
        cls = type(m)
        assert all(not getattr(cls.__dict__.get(n), "_anysr_cuda_guard", False)
                   for n in ("forward", "gen_feat", "query_rgb"))
        assert getattr(m.__dict__.get("forward"), "_anysr_cuda_guard", False)
