"""``anysr launch metasr|arbsr``: the unmodified trainers of look-alike Meta-SR / ArbSR repos
run end to end (train, save bare state dicts with gates, resume, --test_only PSNR per scale)
through the launcher, on the CPU, in seconds.  Opt-in runs against real checkouts:
ANYSR_METASR_REPO / ANYSR_ARBSR_REPO (skipped otherwise).
"""
from __future__ import annotations

import os
import random
import re
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import anysr_plugin as anysr
from anysr_plugin.launch import LaunchContext, purge_modules, run

from lookalike_edsr_repo import meta_args, repo_modules, write_arbsr_repo, write_metasr_repo

PSNR_LINE = re.compile(r"\[Set5 x([\d.]+)(?:/x([\d.]+))?\]\tPSNR: ([\d.]+)")
REPO_ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def meta_repo(tmp_path_factory):
    return write_metasr_repo(tmp_path_factory.mktemp("metasr"))


@pytest.fixture(scope="module")
def arb_repo(tmp_path_factory):
    return write_arbsr_repo(tmp_path_factory.mktemp("arbsr"))


def launch(method, repo, argv, capsys, config=None, width=None, seed=0, init_from=None):
    random.seed(seed)  # the replacement MSDataLoader draws the per-batch scale with `random`, as upstream
    ctx = LaunchContext(method=method, repo=Path(repo), script=Path("main.py"), argv=list(argv), cpu=True,
                        anysr_config=config if config is not None else anysr.AnySRConfig(seed=seed))
    if init_from is not None:
        ctx.init_from = init_from
    if width is not None:
        ctx.width = width
    rc = run(ctx)
    out = capsys.readouterr().out
    assert rc == 0, out
    return out


def psnrs(out):
    return {(float(a), float(b or a)): float(p) for a, b, p in PSNR_LINE.findall(out)}


def gate_keys(path):
    sd = torch.load(path, weights_only=True)
    assert not any(k.startswith(("module.", "model.")) for k in sd)  # bare state dict
    return sd, [k for k in sd if "anysr_gate" in k]


def test_lookalike_needs_the_launcher(meta_repo, monkeypatch):
    """Like upstream, the look-alike's data loader does not import on a current PyTorch."""
    monkeypatch.chdir(meta_repo)
    monkeypatch.setattr(sys, "argv", ["main.py", "--cpu", "--n_GPUs", "1"])
    monkeypatch.syspath_prepend(str(meta_repo))
    purge_modules()
    try:
        with pytest.raises(ImportError, match="_DataLoaderIter"):
            runpy.run_path(str(meta_repo / "main.py"), run_name="__main__")
    finally:
        purge_modules()


def test_metasr_train_resume_and_test(meta_repo, capsys):
    out = launch("metasr", meta_repo, ["--cpu", "--n_GPUs", "1", "--save", "run1"], capsys)
    assert "anysr: converted MetaRDN: 2 RDB blocks" in out
    scales = set(re.findall(r"\] x([\d.]+) L1", out))
    assert len(scales) > 1  # one scale per batch, several per epoch
    model_dir = meta_repo / "experiment" / "run1" / "model"
    assert sorted(p.name for p in model_dir.iterdir()) == ["model_1.pt", "model_2.pt"]
    sd, gates = gate_keys(model_dir / "model_2.pt")
    assert "RDBs.0.anysr_gate.fc1.weight" in gates and len(gates) == 8
    # anysrify ran before Trainer built its optimizer: the gates were trained
    assert sd["RDBs.0.anysr_gate.fc2.weight"].abs().sum() > 0

    out = launch("metasr", meta_repo, ["--cpu", "--n_GPUs", "1", "--save", "run1", "--resume", "2",
                                       "--start_epoch", "2", "--epochs", "3"], capsys)
    assert "carries all 8 anysr_* gate tensors" in out
    assert (model_dir / "model_3.pt").is_file()

    out = launch("metasr", meta_repo, ["--cpu", "--n_GPUs", "1", "--save", "run1", "--test_only",
                                       "--resume", "3"], capsys)
    got = psnrs(out)
    assert sorted(got) == [(1.5, 1.5), (2.0, 2.0), (3.0, 3.0), (4.0, 4.0)]
    assert all(5 < p < 60 for p in got.values())
    again = launch("metasr", meta_repo, ["--cpu", "--n_GPUs", "1", "--save", "run1", "--test_only",
                                         "--resume", "3"], capsys)
    assert psnrs(again) == got  # evaluation is deterministic


def test_metasr_pre_train_vanilla_and_fixed_widths(meta_repo, capsys, monkeypatch):
    # vanilla upstream weights: the look-alike net built without AnySR
    with repo_modules(meta_repo, "model.metardn") as (net_module,):
        torch.manual_seed(5)
        vanilla = net_module.make_model(meta_args())
    torch.save(vanilla.state_dict(), meta_repo / "vanilla.pt")
    argv = ["--cpu", "--n_GPUs", "1", "--save", "pre", "--test_only", "--pre_train", "vanilla.pt"]
    out = launch("metasr", meta_repo, argv, capsys)
    assert "checkpoint has no AnySR gates (8/8 anysr_* tensors absent)" in out
    by_scale = psnrs(out)
    widths = {}
    for w in (0.5, 1.0):
        out = launch("metasr", meta_repo, argv, capsys, width=w)
        assert f"fixed sub-network width {w:g}" in out
        widths[w] = psnrs(out)
    assert widths[0.5] != widths[1.0]
    assert by_scale[(4.0, 4.0)] == widths[1.0][(4.0, 4.0)]  # x4 is in the full-width group
    assert by_scale[(1.5, 1.5)] == widths[0.5][(1.5, 1.5)]  # x1.5 runs the 0.5 sub-network
    # `anysr launch --init-from vanilla.pt` (no --pre_train): the same weights, checked strictly
    out = launch("metasr", meta_repo, ["--cpu", "--n_GPUs", "1", "--save", "pre", "--test_only"], capsys,
                 init_from=meta_repo / "vanilla.pt")
    assert "initialised from" in out and psnrs(out) == by_scale


@pytest.mark.parametrize("model,converted", [("metaedsr", "converted EDSR: 2 ResBlock blocks"),
                                             ("metarcan", "converted RCAN: 4 RCAB blocks")])
def test_metasr_other_backbones(meta_repo, capsys, model, converted):
    out = launch("metasr", meta_repo, ["--cpu", "--n_GPUs", "1", "--model", model, "--save", model,
                                       "--epochs", "1", "--test_every", "2"], capsys)
    assert converted in out
    _, gates = gate_keys(meta_repo / "experiment" / model / "model" / "model_1.pt")
    assert gates
    out = launch("metasr", meta_repo, ["--cpu", "--n_GPUs", "1", "--model", model, "--save", model,
                                       "--test_only", "--resume", "1", "--scale", "2+3"], capsys)
    assert sorted(psnrs(out)) == [(2.0, 2.0), (3.0, 3.0)]


def test_metasr_save_results_and_cleanup(meta_repo, capsys):
    import matplotlib
    import scipy.misc

    use_before = matplotlib.use
    out = launch("metasr", meta_repo, ["--cpu", "--n_GPUs", "1", "--save", "res", "--test_only", "--scale", "2",
                                       "--save_results"], capsys)
    assert psnrs(out)
    results = sorted(p.name for p in (meta_repo / "experiment" / "res" / "results").iterdir())
    assert "0001_x2.0_SR.png" in results  # scipy.misc.imsave shim
    # every patch is undone when the script returns
    assert not hasattr(scipy.misc, "imsave")
    assert matplotlib.use is use_before
    assert "dataloader" not in sys.modules and "model" not in sys.modules


def test_arbsr_train_asymmetric_and_test(arb_repo, capsys):
    out = launch("arbsr", arb_repo, ["--cpu", "True", "--n_GPUs", "1", "--resume", "-1", "--save", "arb"], capsys)
    assert "matplotlib.use('TKAgg') ignored" in out
    assert "anysr: converted ArbRCAN: 4 RCAB blocks" in out
    epoch1 = re.findall(r"\[Epoch 1 batch \d\] x([\d.]+)/x([\d.]+)", out)
    assert epoch1 and all(a == b and float(a).is_integer() for a, b in epoch1)  # first epoch: integer scales
    model_dir = arb_repo / "experiment" / "arb" / "model"
    sd, gates = gate_keys(model_dir / "model_2.pt")
    assert len(gates) == 16 and "sa_adapt.0.adapt.weight_pool" in sd
    assert sd["body.0.body.0.anysr_gate.fc2.weight"].abs().sum() > 0

    out = launch("arbsr", arb_repo, ["--cpu", "True", "--n_GPUs", "1", "--save", "arb", "--test_only", "True",
                                     "--resume", "2"], capsys)
    assert "carries all 16 anysr_* gate tensors" in out
    got = psnrs(out)
    assert sorted(got) == [(1.5, 1.5), (1.5, 3.0), (2.0, 2.0), (2.0, 4.0), (3.0, 3.0), (4.0, 4.0)]
    assert "[Set5 x1.5/x3.0]\tPSNR:" in out


def test_arbsr_default_pre_train_vanilla(arb_repo, capsys, monkeypatch):
    with repo_modules(arb_repo, "model.arbrcan") as (net_module,):
        torch.manual_seed(3)
        vanilla = net_module.make_model(meta_args())
    (arb_repo / "model").mkdir(exist_ok=True)
    torch.save(vanilla.state_dict(), arb_repo / "model" / "RCAN_BIX4.pt")  # the default --pre_train
    out = launch("arbsr", arb_repo, ["--cpu", "True", "--n_GPUs", "1", "--save", "arbpre", "--test_only", "True",
                                     "--scale", "2+1.5", "--scale2", "2+3"], capsys)
    assert "checkpoint has no AnySR gates (16/16 anysr_* tensors absent)" in out
    assert sorted(psnrs(out)) == [(1.5, 3.0), (2.0, 2.0)]


def test_cli_convert_config_then_launch(meta_repo, tmp_path, capsys):
    from anysr_plugin.cli import main

    cfg = tmp_path / "anysr_metasr.yaml"
    assert main(["convert-config", "--method", "metasr", "-o", str(cfg), "--seed", "1"]) == 0
    assert anysr.AnySRConfig.from_yaml(cfg).seed == 1
    random.seed(0)
    rc = main(["launch", "metasr", "--cpu", "--repo", str(meta_repo), "--anysr-config", str(cfg), "--",
               "main.py", "--cpu", "--n_GPUs", "1", "--save", "cli", "--epochs", "1"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "using the paper's settings" not in out and "converted MetaRDN" in out
    _, gates = gate_keys(meta_repo / "experiment" / "cli" / "model" / "model_1.pt")
    assert gates


@pytest.mark.parametrize("method", ["metasr", "arbsr"])
def test_launcher_cpu_needs_the_scripts_own_cpu_flag(method, meta_repo, arb_repo, capsys):
    from anysr_plugin.cli import main

    repo = meta_repo if method == "metasr" else arb_repo
    rc = main(["launch", method, "--cpu", "--repo", str(repo), "--", "main.py", "--n_GPUs", "1", "--test_only"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    flag = "--cpu True" if method == "arbsr" else "--cpu"
    assert err.startswith("anysr launch: error: --cpu was given to the launcher but not to main.py") and flag in err


def test_bad_width_is_a_typed_error(meta_repo, capsys):
    from anysr_plugin.errors import WidthError

    ctx = LaunchContext(method="metasr", repo=meta_repo, script=Path("main.py"),
                        argv=["--cpu", "--n_GPUs", "1", "--test_only"], cpu=True)
    ctx.width = 0.6
    with pytest.raises(WidthError):
        run(ctx)


# --------------------------------------------------------------------------- real checkouts (opt-in)


def _real(env, method, tmp_path, extra_train, extra_test):
    repo = os.environ.get(env)
    if not repo:
        pytest.skip(f"set {env} to a {method} checkout to run this test")
    repo = Path(repo)
    data = tmp_path / "data"
    subprocess.run([sys.executable, str(REPO_ROOT / "examples" / "metasr" / "make_toy_data.py"), "--out", str(data),
                    "--train-size", "120", "--test-size", "48"] + (["--arbsr"] if method == "arbsr" else []),
                   check=True)
    save = f"anysr_pytest_{os.getpid()}"
    base = [sys.executable, "-m", "anysr_plugin", "launch", method, "--cpu", "--", "main.py",
            "--dir_data", str(data), "--data_train", "DIV2K", "--data_test", "Set5", "--data_range", "1-4/1-2",
            "--ext", "img", "--n_GPUs", "1", "--n_threads", "0", "--save", save]
    try:
        train = subprocess.run(base + extra_train, cwd=repo, capture_output=True, text=True, timeout=1200)
        assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
        ckpt = repo / "experiment" / save / "model" / "model_1.pt"
        assert any("anysr_gate" in k for k in torch.load(ckpt, weights_only=True))
        test = subprocess.run(base + extra_test, cwd=repo, capture_output=True, text=True, timeout=1200)
        assert test.returncode == 0, test.stdout[-3000:] + test.stderr[-3000:]
        return psnrs(test.stdout)
    finally:
        import shutil

        shutil.rmtree(repo / "experiment" / save, ignore_errors=True)


@pytest.mark.upstream
@pytest.mark.slow
def test_real_metasr_checkout(tmp_path):
    got = _real("ANYSR_METASR_REPO", "metasr", tmp_path,
                ["--model", "metardn", "--cpu", "--scale", "2+3", "--patch_size", "16", "--batch_size", "2",
                 "--test_every", "2", "--epochs", "1"],
                ["--model", "metardn", "--cpu", "--scale", "2+3", "--test_only", "--resume", "1"])
    assert sorted(got) == [(2.0, 2.0), (3.0, 3.0)]


@pytest.mark.upstream
@pytest.mark.slow
def test_real_arbsr_checkout(tmp_path):
    got = _real("ANYSR_ARBSR_REPO", "arbsr", tmp_path,
                ["--cpu", "True", "--scale", "2+1.5", "--scale2", "2+3", "--patch_size", "16", "--batch_size", "2",
                 "--test_every", "2", "--epochs", "1", "--resume", "-1"],
                ["--cpu", "True", "--scale", "2+1.5", "--scale2", "2+3", "--test_only", "True", "--resume", "1"])
    assert sorted(got) == [(1.5, 3.0), (2.0, 2.0)]
