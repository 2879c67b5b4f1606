"""`anysr launch` end to end on generated look-alike LIIF / LTE / SRNO repos (tests/lookalike_liif_repo.py):
convert-config --init-from, training under the launcher (gates built before the optimizer, checkpoint
with gates), resume, test.py (forward and gen_feat-first batched_predict) at the right width,
convert-checkpoint round trip, typed errors.  Opt-in runs against real checkouts at the end."""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import anysr_plugin as anysr
from anysr_plugin.blocks import AnySRResBlock
from anysr_plugin.cli import main as cli_main
from anysr_plugin.errors import AdapterError, AnySRError, CheckpointError
from anysr_plugin.launch import LaunchContext, run

sys.path.insert(0, str(Path(__file__).parent))
import lookalike_liif_repo as L  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_env(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # the upstream scripts set it; restored after each test
    yield


def launch(repo, kind, script, *argv, **ctx_kwargs):
    out, err = io.StringIO(), io.StringIO()
    ctx = LaunchContext(method=kind, repo=repo, script=Path(script), argv=list(argv), cpu=True, log=err,
                        **ctx_kwargs)
    with contextlib.redirect_stdout(out):
        rc = run(ctx)
    return rc, out.getvalue(), err.getvalue()


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module", params=["liif", "srno", "lte"])
def trained(request, tmp_path_factory):
    """A look-alike repo with a vanilla checkpoint and an AnySR fine-tune of it."""
    kind = request.param
    repo = L.write_repo(tmp_path_factory.mktemp(kind), kind)
    script = L.KINDS[kind][0]
    (repo / "vanilla.yaml").write_text(yaml.safe_dump(L.train_config(kind)))
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    rc, out, _ = launch(repo, kind, script, "--config", "vanilla.yaml", "--name", "vanilla")
    assert rc == 0, out
    vanilla_params = int(out.split("optimizer params=")[1].split()[0])
    rc = cli_main(["convert-config", "--method", kind, str(repo / "vanilla.yaml"), "-o", str(repo / "anysr.yaml"),
                   "--init-from", str(repo / "save/vanilla/epoch-last.pth"), "--seed", "0"])
    assert rc == 0
    rc, out, err = launch(repo, kind, script, "--config", "anysr.yaml", "--name", "anysr")
    assert rc == 0, out + err
    return dict(kind=kind, repo=repo, script=script, train_out=out, train_err=err, vanilla_params=vanilla_params)


def test_training_builds_gates_before_optimizer_and_saves_them(trained):
    repo = trained["repo"]
    ck = load(repo / "save/anysr/epoch-last.pth")
    assert set(ck) == {"model", "optimizer", "epoch"} and ck["epoch"] == 1
    sd, spec = ck["model"]["sd"], ck["model"]
    gates = [k for k in sd if "anysr_gate" in k]
    assert len(gates) == 2 * 4 and all(k.startswith("encoder.body.") for k in gates)
    assert anysr.AnySRConfig.from_dict(spec["anysr"]).seed == 0
    # the optimizer holds the 8 gate tensors on top of the vanilla parameters ...
    n = int(trained["train_out"].split("optimizer params=")[1].split()[0])
    assert n == trained["vanilla_params"] + 8
    # ... and trained them (fc2 starts at exactly zero with the identity gate)
    assert float(sd["encoder.body.0.anysr_gate.fc2.weight"].abs().max()) > 0
    assert "initialised from" in trained["train_err"]


def test_init_from_loads_the_vanilla_weights(trained, tmp_path):
    repo, kind = trained["repo"], trained["kind"]
    if kind != "liif":
        pytest.skip("the init path is the same for every method; keeps the suite fast")
    cfg = yaml.safe_load((repo / "anysr.yaml").read_text())
    cfg["optimizer"]["args"]["lr"] = 0.0
    (repo / "anysr-lr0.yaml").write_text(yaml.safe_dump(cfg))
    rc, out, err = launch(repo, kind, trained["script"], "--config", "anysr-lr0.yaml", "--name", "lr0")
    assert rc == 0
    vanilla = load(repo / "save/vanilla/epoch-last.pth")["model"]["sd"]
    tuned = load(repo / "save/lr0/epoch-last.pth")["model"]["sd"]
    assert set(tuned) - set(vanilla) == {k for k in tuned if "anysr_" in k}
    assert all(torch.equal(vanilla[k], tuned[k]) for k in vanilla)


@pytest.mark.parametrize("scale, eval_bsize", [(2, None), (3, 7), (6, 7)])
def test_test_py_runs_the_width_of_the_scale(trained, scale, eval_bsize, monkeypatch):
    repo, kind = trained["repo"], trained["kind"]
    if kind == "lte" and (scale, eval_bsize) != (3, 7):
        pytest.skip("LTE's look-alike shares LIIF's code path; keeps the suite fast")
    name = f"test-{scale}-{eval_bsize}.yaml"
    (repo / name).write_text(yaml.safe_dump(L.test_config(kind, scale, eval_bsize)))
    seen = []
    orig = AnySRResBlock.forward_sliced

    def spy(self, x, n, s):
        seen.append(n)
        return orig(self, x, n, s)

    monkeypatch.setattr(AnySRResBlock, "forward_sliced", spy)
    with _no_anysr_warnings():
        rc, out, err = launch(repo, kind, "test.py", "--config", name, "--model", "save/anysr/epoch-last.pth")
    assert rc == 0 and "result: " in out, out + err
    assert float(out.split("result: ")[1].split()[0]) > 5
    expected = {2: 11, 3: 14, 6: 16}[scale]   # floor(16 w), w = 0.7 / 0.9 / 1.0
    # the first call is anysrify's full-width equivalence check at build time: one for the
    # 2 blocks, whose block signatures are equal
    assert seen[:1] == [16] and seen[1:] and set(seen[1:]) == {expected}
    assert "loaded its saved AnySR weights" in err


def test_fixed_width_fixes_only_the_width(trained):
    """--width 1.0 on the gen_feat-first test path at x6: the gates still see x6 (not the fallback), so
    the result equals the default run, whose x6 group is the full network; each scale says its width."""
    repo, kind = trained["repo"], trained["kind"]
    if kind == "lte":
        pytest.skip("LTE's look-alike shares LIIF's code path; keeps the suite fast")
    (repo / "t6.yaml").write_text(yaml.safe_dump(L.test_config(kind, 6, eval_bsize=7)))
    _, out, err = launch(repo, kind, "test.py", "--config", "t6.yaml", "--model", "save/anysr/epoch-last.pth")
    with _no_anysr_warnings():
        _, outw, errw = launch(repo, kind, "test.py", "--config", "t6.yaml", "--model", "save/anysr/epoch-last.pth",
                               width=1.0)
    assert out.split("result: ")[1] == outw.split("result: ")[1]
    assert "test scale x6: width 1, encoder blocks" in err and "test scale x6: width 1," in errw
    _, out5, err5 = launch(repo, kind, "test.py", "--config", "t6.yaml", "--model", "save/anysr/epoch-last.pth",
                           width=0.5)
    assert "test scale x6: width 0.5" in err5 and out5.split("result: ")[1] != out.split("result: ")[1]


@contextlib.contextmanager
def _no_anysr_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", anysr.errors.AnySRWarning)
        yield


def test_resume_reloads_after_anysrify(trained):
    repo, kind = trained["repo"], trained["kind"]
    if kind == "lte":
        pytest.skip("LTE's look-alike shares LIIF's code path; keeps the suite fast")
    cfg = yaml.safe_load((repo / "anysr.yaml").read_text())
    cfg.update(resume="./save/anysr/epoch-last.pth", epoch_max=2)
    (repo / "resume.yaml").write_text(yaml.safe_dump(cfg))
    rc, out, err = launch(repo, kind, trained["script"], "--config", "resume.yaml", "--name", "resumed")
    assert rc == 0 and "epoch 2:" in out and "epoch 1:" not in out
    assert "loaded its saved AnySR weights" in err
    assert load(repo / "save/resumed/epoch-last.pth")["epoch"] == 2


def test_anysr_config_option_marks_plain_specs_and_checkpoints_describe_themselves(trained, tmp_path):
    repo, kind = trained["repo"], trained["kind"]
    if kind != "liif":
        pytest.skip("one method is enough")
    acfg = anysr.AnySRConfig(widths=(0.5, 1.0), scale_bounds=(2.5,), gate="paper")
    rc, out, err = launch(repo, kind, trained["script"], "--config", "vanilla.yaml", "--name", "cli-cfg",
                          anysr_config=acfg, init_from=repo / "save/vanilla/epoch-last.pth")
    assert rc == 0
    spec = load(repo / "save/cli-cfg/epoch-last.pth")["model"]
    assert anysr.AnySRConfig.from_dict(spec["anysr"]) == acfg
    # a checkpoint with gates but no `anysr:` entry is refused with a clear error
    ck = load(repo / "save/cli-cfg/epoch-last.pth")
    del ck["model"]["anysr"]
    torch.save(ck, tmp_path / "noentry.pth")
    (repo / "t.yaml").write_text(yaml.safe_dump(L.test_config(kind, 2)))
    with pytest.raises(CheckpointError, match="--anysr-config"):
        launch(repo, kind, "test.py", "--config", "t.yaml", "--model", str(tmp_path / "noentry.pth"))


def test_convert_checkpoint_round_trip(trained, tmp_path):
    repo, kind = trained["repo"], trained["kind"]
    if kind == "lte":
        pytest.skip("same format as liif")
    src = repo / "save/anysr/epoch-last.pth"
    assert cli_main(["convert-checkpoint", str(src), "-o", str(tmp_path / "m.safetensors")]) == 0
    assert (tmp_path / "m.yaml").is_file()
    assert cli_main(["convert-checkpoint", str(tmp_path / "m.safetensors"), "-o", str(tmp_path / "back.pth")]) == 0
    a, b = load(src)["model"], load(tmp_path / "back.pth")["model"]
    assert a["anysr"] == b["anysr"] and a["name"] == b["name"] and a["args"] == b["args"]
    assert set(a["sd"]) == set(b["sd"]) and all(torch.equal(a["sd"][k], b["sd"][k]) for k in a["sd"])
    (repo / "t2.yaml").write_text(yaml.safe_dump(L.test_config(kind, 2)))
    r1 = launch(repo, kind, "test.py", "--config", "t2.yaml", "--model", str(src))[1]
    r2 = launch(repo, kind, "test.py", "--config", "t2.yaml", "--model", str(tmp_path / "back.pth"))[1]
    assert r1.split("result: ")[1] == r2.split("result: ")[1]
    # a vanilla checkpoint is not an AnySR checkpoint
    assert cli_main(["convert-checkpoint", str(repo / "save/vanilla/epoch-last.pth"), "-o",
                     str(tmp_path / "v.safetensors")]) == 2


def test_stdlib_test_module_does_not_shadow_the_repo(trained):
    repo, kind = trained["repo"], trained["kind"]
    if kind != "srno":
        pytest.skip("one method is enough")
    import test as stdlib_test  # noqa: F401  (the stdlib package, now in sys.modules)

    cfg = yaml.safe_load((repo / "anysr.yaml").read_text())
    cfg["eval_bsize"] = 5  # validation through batched_predict (gen_feat first), as SRNO's configs do
    (repo / "dp.yaml").write_text(yaml.safe_dump(cfg))
    # --gpu 0,1: the script wraps the model in DataParallel (a pass-through without CUDA)
    rc, out, err = launch(repo, kind, trained["script"], "--config", "dp.yaml", "--name", "dp", "--gpu", "0,1")
    assert rc == 0 and "val psnr=" in out
    assert "anysr_gate" in " ".join(load(repo / "save/dp/epoch-last.pth")["model"]["sd"])  # via model.module


def test_launch_errors_are_typed(tmp_path):
    with pytest.raises(AdapterError, match="unknown adapter"):
        run(LaunchContext(method="nope", repo=tmp_path, script=Path("x.py"), argv=[]))
    with pytest.raises(AnySRError, match="not found"):
        run(LaunchContext(method="liif", repo=tmp_path, script=Path("train_liif.py"), argv=[]))
    (tmp_path / "train_liif.py").write_text("print('hi')\n")
    with pytest.raises(AdapterError, match="looked for models/__init__.py and models.py in"):
        run(LaunchContext(method="liif", repo=tmp_path, script=Path("train_liif.py"), argv=[]))
    assert cli_main(["launch", "liif", "--bogus", "--", "x.py"]) == 2
    assert cli_main(["launch", "liif", "--repo", str(tmp_path)]) == 2


def test_cli_subprocess_end_to_end(trained):
    """The real entry point: `python -m anysr_plugin launch METHOD --cpu -- test.py ...` from the repo root."""
    repo, kind = trained["repo"], trained["kind"]
    if kind != "liif":
        pytest.skip("one method is enough")
    (repo / "t3.yaml").write_text(yaml.safe_dump(L.test_config(kind, 3, eval_bsize=9)))
    proc = subprocess.run([sys.executable, "-m", "anysr_plugin", "launch", kind, "--cpu", "--", "test.py",
                           "--config", "t3.yaml", "--model", "save/anysr/epoch-last.pth"],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "result: " in proc.stdout and "loaded its saved AnySR weights" in proc.stderr


# ---------------------------------------------------------------------------
# opt-in: real upstream checkouts (ANYSR_LIIF_REPO, ANYSR_LTE_REPO, ANYSR_SRNO_REPO)

REAL = {"liif": ("ANYSR_LIIF_REPO", "train_liif.py", "liif"), "lte": ("ANYSR_LTE_REPO", "train.py", "lte"),
        "srno": ("ANYSR_SRNO_REPO", "train.py", "sronet")}


def real_train_config(kind, data):
    fast = kind == "srno"
    wrapper = "sr-implicit-downsampled-fast" if fast else "sr-implicit-downsampled"
    enc = {"name": "edsr-baseline", "args": {"no_upsampling": True, "n_resblocks": 2}}
    if kind == "srno":
        model = {"name": "sronet", "args": {"encoder_spec": enc, "width": 32, "blocks": 2}}
    else:
        hidden = [64, 64] if kind == "liif" else [64]
        model = {"name": REAL[kind][2], "args": {"encoder_spec": enc,
                                                 "imnet_spec": {"name": "mlp", "args": {"out_dim": 3,
                                                                                        "hidden_list": hidden}}}}
        if kind == "lte":
            model["args"]["hidden_dim"] = 64
    wargs = {"inp_size": 16, "scale_max": 4, "augment": True}
    if not fast:
        wargs["sample_q"] = 256
    cfg = {"train_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": str(data / "train"),
                                                                          "repeat": 1}},
                             "wrapper": {"name": wrapper, "args": wargs}, "batch_size": 2},
           "val_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": str(data / "valid")}},
                           "wrapper": {"name": wrapper, "args": {**wargs, "augment": False}}, "batch_size": 1},
           "data_norm": {"inp": {"sub": [0.5], "div": [0.5]}, "gt": {"sub": [0.5], "div": [0.5]}},
           "model": model, "optimizer": {"name": "adam", "args": {"lr": 1.0e-4}}, "epoch_max": 1,
           "multi_step_lr": {"milestones": [200], "gamma": 0.5}, "epoch_val": 1, "epoch_save": 1}
    if kind == "lte":
        cfg["resume"] = "./save/none/epoch-last.pth"  # LTE's train.py requires the key; a missing file = fresh
    return cfg


@pytest.mark.upstream
@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(REAL))
def test_real_upstream_repo(kind, tmp_path):
    env, script, _ = REAL[kind]
    if not os.environ.get(env):
        pytest.skip(f"set {env} to a checkout of the upstream repo to run this")
    repo = Path(os.environ[env])
    data = tmp_path / "data"
    L.write_images(data / "train", 2, 80, seed=1)
    L.write_images(data / "valid", 1, 72, seed=2)
    (tmp_path / "vanilla.yaml").write_text(yaml.safe_dump(real_train_config(kind, data)))
    name = f"anysr-pytest-{os.getpid()}"
    try:
        _run_real(repo, kind, script, data, tmp_path, name)
    finally:  # leave the checkout as it was
        import shutil

        for sub in (name, name + "-v"):
            shutil.rmtree(repo / "save" / sub, ignore_errors=True)


def _run_real(repo, kind, script, data, tmp_path, name):
    rc, out, err = launch(repo, kind, script, "--config", str(tmp_path / "vanilla.yaml"), "--name", name + "-v")
    assert rc == 0
    assert cli_main(["convert-config", "--method", kind, str(tmp_path / "vanilla.yaml"), "-o",
                     str(tmp_path / "anysr.yaml"), "--init-from", str(repo / "save" / (name + "-v") /
                                                                       "epoch-last.pth")]) == 0
    rc, out, err = launch(repo, kind, script, "--config", str(tmp_path / "anysr.yaml"), "--name", name)
    assert rc == 0
    ck = repo / "save" / name / "epoch-last.pth"
    assert any("anysr_gate" in k for k in load(ck)["model"]["sd"])
    test_cfg = {"test_dataset": {"dataset": {"name": "image-folder", "args": {"root_path": str(data / "valid")}},
                                 "wrapper": {"name": "sr-implicit-downsampled-fast" if kind == "srno" else
                                             "sr-implicit-downsampled", "args": {"scale_min": 2, "scale_max": 2}},
                                 "batch_size": 1},
                "eval_type": "div2k-2", "eval_bsize": 500,
                "data_norm": {"inp": {"sub": [0.5], "div": [0.5]}, "gt": {"sub": [0.5], "div": [0.5]}}}
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(test_cfg))
    rc, out, err = launch(repo, kind, "test.py", "--config", str(tmp_path / "test.yaml"), "--model", str(ck))
    assert rc == 0 and "result: " in out


def test_cpu_shim_is_scoped():
    from anysr_plugin.launch import cpu_shim

    orig_loader, orig_load = torch.utils.data.DataLoader, torch.load
    with cpu_shim():
        t = torch.zeros(2)
        assert t.cuda() is t and torch.nn.Linear(1, 1).cuda() is not None
        loader = torch.utils.data.DataLoader(list(range(4)), batch_size=2, num_workers=8, pin_memory=True,
                                             persistent_workers=True)
        assert loader.num_workers == 0 and not loader.pin_memory
    assert torch.utils.data.DataLoader is orig_loader and torch.load is orig_load


REAL_MODELS = {"liif": [("liif", {"imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [32]}}}, False),
                        ("metasr", {}, False)],
               "lte": [("lte", {"imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [32]}},
                                "hidden_dim": 32}, False), ("lte-fast", {"hidden_dim": 32}, True)],
               "srno": [("sronet", {"width": 32, "blocks": 2}, True)]}


@pytest.mark.upstream
@pytest.mark.parametrize("kind", sorted(REAL_MODELS))
def test_real_upstream_models_detected_and_identity_at_full_width(kind):
    """The real classes (LIIF, MetaSR, LTE, LTEP, SRNO) are detected and, converted, equal the original at x4."""
    import copy

    from anysr_plugin.launch import cpu_shim, purge_modules

    env = REAL[kind][0]
    if not os.environ.get(env):
        pytest.skip(f"set {env} to a checkout of the upstream repo to run this")
    repo = os.environ[env]
    purge_modules()
    sys.path.insert(0, repo)
    try:
        import models
        with cpu_shim():
            for name, extra, fast in REAL_MODELS[kind]:
                torch.manual_seed(0)
                enc = {"name": "edsr-baseline", "args": {"no_upsampling": True, "n_resblocks": 2}}
                model = models.make({"name": name, "args": {"encoder_spec": enc, **extra}}).eval()
                base = copy.deepcopy(model)
                anysr.anysrify(model)
                assert anysr.control.get_state(model).adapter_name == ("srno" if name == "sronet" else "liif")
                h = 32
                ys = -1 + 1 / h + 2 / h * torch.arange(h).float()
                grid = torch.stack(torch.meshgrid(ys, ys, indexing="ij"), -1)
                if fast:
                    coord, cell = grid[None].expand(2, -1, -1, -1), torch.full((2, 2), 2 / h)
                else:
                    coord, cell = grid.view(1, -1, 2).expand(2, -1, -1), torch.full((2, h * h, 2), 2 / h)
                inp = torch.rand(2, 3, 8, 8)
                with torch.no_grad():
                    assert torch.allclose(model(inp, coord, cell), base(inp, coord, cell), atol=1e-5), name
    finally:
        sys.path.remove(repo)
        purge_modules()
