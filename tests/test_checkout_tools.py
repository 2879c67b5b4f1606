"""The tools on checkouts they have not seen (issue 17), with look-alike repositories:

* ``--repo`` builds what the registry builds: on the meta device when the constructor allows it, else
  on the CPU under a size guard, with one line saying so (an EDSR-style ``MeanShift`` assigns CPU
  tensors in ``__init__``); flops / eval / export build through the same registry path;
* a module the checkout imports but that is not installed is one line, exit 2, naming the module and
  whose requirement it is; only a defect of ours says "report it";
* the converted config's header names the checkout's training script, or says in words which to run;
* ``resume:`` naming a vanilla checkpoint becomes the fine-tune's starting weights, never a vanilla
  resume or a path the trainer fails on; an AnySR run still resumes;
* Python-file / registry-style configs and a checkout without a LIIF-style registry get one line that
  says what is supported and where the API path is.
"""
from __future__ import annotations

import itertools
import json
import re
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import anysr_plugin as anysr
from anysr_plugin import upstream
from anysr_plugin.checkout import missing_dependency
from anysr_plugin.cli import main
from anysr_plugin.cost import count_flops
from anysr_plugin.reference import cell_for, make_coord
from anysr_plugin.upstream import follow_device, load_export, repo_imports

sys.path.insert(0, str(Path(__file__).parent))
import lookalike_liif_repo as L  # noqa: E402

#: an EDSR-style encoder as EDSR documents it: ``MeanShift`` sets its frozen 1x1 conv from CPU tensors
#: (the legacy ``torch.Tensor`` constructor ignores the default device), which the meta device refuses
MEANSHIFT_EDSR = '''
import torch
import torch.nn as nn

from anysr_plugin.reference.encoders import EDSR

from .models import register


class MeanShift(nn.Conv2d):
    def __init__(self, rgb_range, rgb_mean=(0.4488, 0.4371, 0.4040), rgb_std=(1.0, 1.0, 1.0), sign=-1):
        super().__init__(3, 3, kernel_size=1)
        std = torch.Tensor(rgb_std)
        self.weight.data = torch.eye(3).view(3, 3, 1, 1) / std.view(3, 1, 1, 1)
        self.bias.data = sign * rgb_range * torch.Tensor(rgb_mean) / std
        for p in self.parameters():
            p.requires_grad = False


@register('edsr-ms')
class EDSRMeanShift(EDSR):
    def __init__(self, n_resblocks=2, n_feats=8, res_scale=1, scale=2, no_upsampling=True, rgb_range=1,
                 table=0):
        super().__init__(n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale, rgb_range=rgb_range)
        self.sub_mean = MeanShift(rgb_range)
        self.add_mean = MeanShift(rgb_range, sign=1)
        if table:  # a constructor that would allocate `table` x `table` floats
            self.table = nn.Parameter(torch.empty(table, table))
'''

MS_SPEC = {"name": "liif", "args": {
    "encoder_spec": {"name": "edsr-ms", "args": {"n_resblocks": 2, "n_feats": 8, "no_upsampling": True}},
    "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [8]}}}}


def write_meanshift_repo(root: Path, kind: str = "liif") -> Path:
    L.write_repo(root, kind)
    (root / "models" / "ms_edsr.py").write_text(textwrap.dedent(MEANSHIFT_EDSR).lstrip())
    with open(root / "models" / "__init__.py", "a") as f:
        f.write("from . import ms_edsr\n")
    return root


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"anysr {command}: error: "), err
    return err[len(f"anysr {command}: error: "):]


def vanilla_checkpoint(repo: Path, spec: dict, path: Path, seed: int = 3) -> Path:
    with repo_imports(repo):
        import models

        model = models.make(spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": {**spec, "sd": model.state_dict()}, "optimizer": {"name": "adam", "args": {"lr": 1e-3}},
                "epoch": 1}, path)
    return path


@pytest.fixture(scope="module")
def ms_repo(tmp_path_factory):
    repo = write_meanshift_repo(tmp_path_factory.mktemp("ms") / "liif")
    ckpt = vanilla_checkpoint(repo, MS_SPEC, repo / "vanilla.pth")
    cfg = L.train_config("liif")
    cfg["model"] = json.loads(json.dumps(MS_SPEC))
    (repo / "configs").mkdir()
    (repo / "configs" / "train-ms.yaml").write_text(yaml.safe_dump(cfg))
    return repo, ckpt


# --------------------------------------------------------------------------- 1. --repo builds what the registry builds


def test_convert_config_repo_builds_meanshift_encoders_on_the_cpu(ms_repo, tmp_path, capsys):
    repo, _ = ms_repo
    with torch.device("meta"), pytest.raises(RuntimeError, match="not on the expected device meta"):
        with repo_imports(repo):  # the upstream constructor itself refuses the meta device
            import models

            models.make(MS_SPEC)
    out = tmp_path / "anysr.yaml"
    assert main(["convert-config", "--method", "liif", "--repo", str(repo), str(repo / "configs/train-ms.yaml"),
                 "-o", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    params = 2 * 12 + 3 * 9 * 8 + 8 + 5 * (8 * 8 * 9 + 8) + (8 + 4) * 8 + 8 + 8 * 3 + 3  # MeanShifts, head, body, mlp
    assert re.fullmatch(
        r"convert-config: model 'liif' cannot be built on the meta device \(RuntimeError: Tensor on device cpu is "
        rf"not on the expected device meta!\); built it on the CPU instead \({params / 1e6:.3g} M parameters, "
        r"[0-9.]+ MB of tensors created; limit 2 GiB\)", lines[0]), lines[0]
    with repo_imports(repo):  # the report of the model the registry builds on the CPU, made here
        import models

        report = anysr.inspect_targets(models.make(MS_SPEC))
    assert len(report.targets) == 2 and "cell" in report.scale_source
    assert lines[1] == f"convert-config: model 'liif' built on the CPU with {repo}'s registry: {report.summary()}"
    assert lines[2:4] == [f"  {t.name} ({t.upstream_type}, {t.family}, C={t.channels}, lambda={t.lam})"
                          for t in report.targets]
    assert [t.name for t in report.targets] == ["encoder.body.0", "encoder.body.1"]
    assert yaml.safe_load(out.read_text())["model"]["anysr"]["widths"] == [0.5, 0.7, 0.9, 1.0]
    # a constructor the meta device accepts is built there: no memory, no fallback line
    cfg = L.train_config("liif")
    (repo / "configs" / "train-plain.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["convert-config", "--method", "liif", "--repo", str(repo), str(repo / "configs/train-plain.yaml"),
                 "-o", str(tmp_path / "plain.yaml")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"convert-config: model 'liif' built on the meta device with {repo}'s registry: would "
                            "convert 2 block(s)")


def test_cpu_fallback_stops_at_the_size_limit_before_allocating(ms_repo, tmp_path, capsys, monkeypatch):
    repo, _ = ms_repo
    cfg = L.train_config("liif")
    cfg["model"] = json.loads(json.dumps(MS_SPEC))
    cfg["model"]["args"]["encoder_spec"]["args"]["table"] = 1 << 17  # 64 GiB, never allocated
    (repo / "configs" / "train-huge.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "huge.yaml"
    argv = ["convert-config", "--method", "liif", "--repo", str(repo), str(repo / "configs/train-huge.yaml"),
            "-o", str(out)]
    assert main(argv) == 2
    assert one_line_error(capsys, "convert-config") == (
        "model 'liif' cannot be built on the meta device, and building it on the CPU would create more than 2 GiB "
        "of tensors (the limit of this fallback); list its blocks in your own code "
        "(anysr_plugin.inspect_targets(model))")
    assert not out.exists()
    monkeypatch.setattr(upstream, "CPU_BUILD_LIMIT", 1000)  # the limit counts every tensor the constructor makes
    assert main(argv[:-3] + [str(repo / "configs/train-ms.yaml"), "-o", str(out)]) == 2
    assert "would create more than 0.000954 MB of tensors" in one_line_error(capsys, "convert-config")


def test_tools_build_the_meanshift_model_with_the_registry(ms_repo, tmp_path, capsys, monkeypatch):
    repo, ckpt = ms_repo
    base = ["--repo", str(repo), "--checkpoint", str(ckpt)]
    assert main(["flops", *base, "--lr-size", "6x8", "--scales", "2", "--format", "json", "--no-blocks"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    with repo_imports(repo):
        import models

        plain = follow_device(models.make(MS_SPEC))
    coord, cell = make_coord((12, 16)).unsqueeze(0), cell_for((12, 16), 1, 12 * 16)
    want = count_flops(plain, torch.zeros(1, 3, 6, 8), coord, cell)
    assert [r["macs"] for r in rows if r["model"] == "original"] == [want]
    st = tmp_path / "sub.safetensors"
    assert main(["export", *base, "--width", "0.7", "--scale", "2", "-o", str(st)]) == 0
    assert load_export(st, repo=repo) is not None
    hr = L.write_images(tmp_path / "hr", 1, 24, seed=4)
    monkeypatch.chdir(repo)  # `--repo .`, as the recipes write it: the report names the checkout's folder
    assert main(["eval", "--repo", ".", "--checkpoint", str(ckpt), "--hr", str(hr), "--scales", "2", "--modes",
                 "full"]) == 0
    out = capsys.readouterr().out
    assert f"model: liif ({repo.name}), checkpoint {ckpt}" in out and "| x2 | full | 1 |" in out


# --------------------------------------------------------------------------- 2. missing dependencies


def _missing_dep_repo(root: Path, module: str) -> Path:
    L.write_repo(root, "liif")
    utils = root / "utils.py"
    utils.write_text(f"import {module}\n" + utils.read_text())
    return root


def test_a_checkouts_missing_dependency_is_one_line_for_every_repo_tool(tmp_path, capsys, ms_repo):
    repo = _missing_dep_repo(tmp_path / "repo", "anysr_test_not_installed")
    _, ckpt = ms_repo
    want = (f"No module named 'anysr_test_not_installed': {repo / 'utils.py'} (line 1) imports it; it is a requirement "
            f"of the repository {repo}, not of anysr_plugin: install it (the repository's README or requirements "
            "file names the package), then run again")
    (repo / "c.yaml").write_text(yaml.safe_dump(L.train_config("liif")))
    hr = L.write_images(tmp_path / "hr", 1, 16, seed=1)
    base = ["--repo", str(repo), "--checkpoint", str(ckpt)]
    runs = {"convert-config": ["--method", "liif", "--repo", str(repo), str(repo / "c.yaml"), "-o",
                               str(tmp_path / "o.yaml")],
            "flops": [*base, "--scales", "2"],
            "bench": [*base, "--lr-size", "6x6", "--repeats", "1", "--warmup", "0", "--no-memory"],
            "eval": [*base, "--hr", str(hr), "--scales", "2"],
            "export": [*base, "--width", "0.7", "-o", str(tmp_path / "e.safetensors")],
            "launch": ["liif", "--cpu", "--repo", str(repo), "--", "train_liif.py", "--config", "c.yaml"]}
    for command, argv in runs.items():
        assert main([command, *argv]) == 2, command
        assert one_line_error(capsys, command) == want, command
    assert not (tmp_path / "o.yaml").exists() and not (tmp_path / "e.safetensors").exists()


def test_missing_dependency_names_the_pip_package_and_the_importer(tmp_path, capsys, monkeypatch):
    repo = _missing_dep_repo(tmp_path / "repo", "cv2")
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` fails as if it were not installed
    (repo / "c.yaml").write_text(yaml.safe_dump(L.train_config("liif")))
    assert main(["convert-config", "--method", "liif", "--repo", str(repo), str(repo / "c.yaml"), "-o",
                 str(tmp_path / "o.yaml")]) == 2
    assert one_line_error(capsys, "convert-config") == (
        f"No module named 'cv2': {repo / 'utils.py'} (line 1) imports it; it is a requirement of the repository "
        f"{repo}, not of anysr_plugin: pip install opencv-python-headless, then run again")
    # the script's own import, under the launcher
    fine = L.write_repo(tmp_path / "fine", "liif")
    (fine / "tool.py").write_text("import os\nimport anysr_test_not_installed_either\n")
    assert main(["launch", "liif", "--cpu", "--repo", str(fine), "--", "tool.py"]) == 2
    assert one_line_error(capsys, "launch").startswith(
        f"No module named 'anysr_test_not_installed_either': {fine / 'tool.py'} (line 2) imports it; it is a "
        f"requirement of the repository {fine}, not of anysr_plugin: ")
    # a package the checkout imports that itself lacks a module: both files are named
    site = tmp_path / "site"
    (site / "thirdparty").mkdir(parents=True)
    (site / "thirdparty" / "__init__.py").write_text("\nimport anysr_test_optional_dep\n")
    monkeypatch.syspath_prepend(str(site))
    (fine / "tool2.py").write_text("import thirdparty\n")
    assert main(["launch", "liif", "--cpu", "--repo", str(fine), "--", "tool2.py"]) == 2
    assert one_line_error(capsys, "launch").startswith(
        f"No module named 'anysr_test_optional_dep': {site / 'thirdparty' / '__init__.py'} (line 2) imports it, "
        f"imported from {fine / 'tool2.py'}; it is a requirement of the repository {fine}")


def test_whose_missing_module_it_is(tmp_path, monkeypatch):
    import anysr_plugin

    ours = Path(anysr_plugin.__file__).resolve().parent / "not_a_real_file.py"

    def raised(code, filename):
        try:
            exec(compile(code, str(filename), "exec"), {})
        except ModuleNotFoundError as exc:
            return exc
        raise AssertionError("no ModuleNotFoundError")

    monkeypatch.setitem(sys.modules, "yaml", None)
    err = missing_dependency(raised("\nimport yaml\n", ours))
    assert err.owner == "anysr_plugin" and str(err) == (
        "No module named 'yaml': anysr_plugin needs it (not_a_real_file.py, line 2): pip install pyyaml, then run "
        "again")
    # a module of ours that is no declared requirement: a defect, left to the CLI's "report it"
    assert missing_dependency(raised("import anysr_test_undeclared", ours)) is None
    # not imported from the checkout, not ours: nobody to name
    assert missing_dependency(raised("import anysr_test_undeclared", tmp_path / "x.py")) is None
    # a file of the checkout that the checkout lacks: an incomplete checkout, not a package to install
    (tmp_path / "anysr_test_pkg").mkdir()
    (tmp_path / "anysr_test_pkg" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    err = missing_dependency(raised("import anysr_test_pkg.gone", tmp_path / "train.py"), [tmp_path])
    assert str(err) == (f"No module named 'anysr_test_pkg.gone': {tmp_path / 'train.py'} (line 1) imports it, but "
                        f"{tmp_path} has no such file: the checkout is incomplete or from another version of the "
                        "repository; restore the file (git status) and run again")
    # an installed package without the submodule the checkout expects: another version
    err = missing_dependency(raised("import torch._anysr_gone", tmp_path / "train.py"), [tmp_path])
    assert f"the installed torch has no torch._anysr_gone: {tmp_path} was written for another version of torch" \
        in str(err)


def test_a_defect_of_ours_still_says_report_it(monkeypatch, capsys):
    from anysr_plugin.commands import flops

    def broken(args):
        import anysr_test_undeclared_module  # noqa: F401

    monkeypatch.setattr(flops, "run", broken)
    assert main(["flops", "--model", "liif-edsr-baseline"]) == 1
    err = capsys.readouterr().err
    assert "internal error ModuleNotFoundError" in err and "report it" in err


# --------------------------------------------------------------------------- 3. the header names the script


def _header_run_line(path: Path) -> str:
    return path.read_text().splitlines()[1]


def test_header_names_the_checkouts_training_script(tmp_path, capsys):
    lte = L.write_repo(tmp_path / "lte", "lte")  # an LTE checkout: train.py, no train_liif.py
    (lte / "configs" / "train-div2k").mkdir(parents=True)
    cfg = lte / "configs" / "train-div2k" / "train_edsr-baseline-liif.yaml"
    cfg.write_text(yaml.safe_dump(L.train_config("liif")))
    outs = (tmp_path / f"out{i}.yaml" for i in itertools.count())  # convert-config never overwrites an output
    # without --repo: the checkout is found above the config
    assert main(["convert-config", "--method", "liif", str(cfg), "-o", str(out := next(outs))]) == 0
    assert _header_run_line(out) == (f"# run it with: anysr launch liif -- train.py --config <this file>   "
                                     f"(from {lte})")
    out = next(outs)
    assert main(["convert-config", "--method", "liif", "--repo", str(lte), str(cfg), "-o", str(out)]) == 0
    assert _header_run_line(out) == f"# run it with: anysr launch liif -- train.py --config <this file>   (from {lte})"
    liif = L.write_repo(tmp_path / "liif", "liif")
    out = next(outs)
    assert main(["convert-config", "--method", "liif", "--repo", str(liif), str(cfg), "-o", str(out)]) == 0
    assert "-- train_liif.py --config" in _header_run_line(out)
    # several candidates, none the method's usual one: said in words
    (lte / "train.py").rename(lte / "train_a.py")
    (lte / "train_b.py").write_text("")
    assert main(["convert-config", "--method", "liif", str(cfg), "-o", str(out := next(outs))]) == 0
    assert _header_run_line(out) == (
        f"# run it from your checkout's root with its training script (several in {lte}: train_a.py, train_b.py; "
        "the upstream liif repository's is train_liif.py): anysr launch liif -- <training script> --config "
        "<this file>")
    for name in ("train_a.py", "train_b.py"):
        (lte / name).unlink()
    assert main(["convert-config", "--method", "lte", str(cfg), "-o", str(out := next(outs))]) == 0
    assert _header_run_line(out) == (
        f"# run it from your checkout's root with its training script (no train*.py in {lte}; the upstream lte "
        "repository's is train.py): anysr launch lte -- <training script> --config <this file>")
    capsys.readouterr()


# --------------------------------------------------------------------------- 4. resume: of a vanilla checkpoint


@pytest.fixture
def liif_repo(tmp_path):
    """A LIIF-style checkout whose trainer, like LIIF's, loads `resume:` whenever it is set."""
    repo = L.write_repo(tmp_path / "liif", "liif")
    script = repo / "train_liif.py"
    text = script.read_text()
    assert "config.get('resume') is not None and os.path.exists(config['resume'])" in text
    script.write_text(text.replace("config.get('resume') is not None and os.path.exists(config['resume'])",
                                   "config.get('resume') is not None"))
    spec = L.train_config("liif")["model"]
    vanilla_checkpoint(repo, spec, repo / "save" / "vanilla" / "epoch-last.pth")
    return repo


def _convert(repo, capsys, name, *extra, **cfg_extra):
    cfg = repo / "configs" / f"{name}.yaml"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(yaml.safe_dump(L.train_config("liif", **cfg_extra)))
    out = repo / "configs" / f"anysr-{name}.yaml"
    assert main(["convert-config", "--method", "liif", str(cfg), "-o", str(out), *extra]) == 0
    lines = capsys.readouterr().out.splitlines()
    return yaml.safe_load(out.read_text()), lines, out


def test_vanilla_resume_becomes_the_fine_tunes_init(liif_repo, capsys):
    repo = liif_repo
    vanilla = repo / "save" / "vanilla" / "epoch-last.pth"
    data, lines, out = _convert(repo, capsys, "ft", resume="./save/vanilla/epoch-last.pth")
    assert lines[0] == (
        "convert-config: `resume: ./save/vanilla/epoch-last.pth` is a vanilla checkpoint: the fine-tune starts from "
        "its weights (model.anysr_init_from, as --init-from does) instead of resuming the plain model; resume: null "
        "(no resume: a fresh fine-tune; to continue an AnySR run later set resume: to its epoch-last.pth)")
    assert data["resume"] is None and data["model"]["anysr_init_from"] == str(vanilla)
    rc = main(["launch", "liif", "--cpu", "--repo", str(repo), "--", "train_liif.py", "--config", str(out),
               "--name", "ft"])
    err = capsys.readouterr().err
    assert rc == 0 and f"initialised from {vanilla} (8 new anysr_* tensors keep their fresh init)" in err, err
    saved = torch.load(repo / "save" / "ft" / "epoch-last.pth", map_location="cpu", weights_only=False)
    assert saved["epoch"] == 1 and sum("anysr_gate" in k for k in saved["model"]["sd"]) == 8
    # resuming that AnySR run still works: the key is kept and the run continues from it
    data, lines, out = _convert(repo, capsys, "ft2", resume="./save/ft/epoch-last.pth", epoch_max=2)
    assert lines[0] == ("convert-config: `resume: ./save/ft/epoch-last.pth` is an AnySR checkpoint: kept, the run "
                        "continues from it")
    assert data["resume"] == "./save/ft/epoch-last.pth" and "anysr_init_from" not in data["model"]
    rc = main(["launch", "liif", "--cpu", "--repo", str(repo), "--", "train_liif.py", "--config", str(out),
               "--name", "ft-more"])
    err = capsys.readouterr().err
    assert rc == 0 and "loaded its saved AnySR weights" in err, err
    assert torch.load(repo / "save/ft-more/epoch-last.pth", map_location="cpu", weights_only=False)["epoch"] == 2


def test_resume_rewrites_follow_the_trainer(liif_repo, tmp_path, capsys):
    repo = liif_repo
    # --init-from names other weights: they win, and the vanilla resume is still dropped
    other = vanilla_checkpoint(repo, L.train_config("liif")["model"], tmp_path / "other.pth", seed=5)
    data, lines, _ = _convert(repo, capsys, "a", "--init-from", str(other), resume="./save/vanilla/epoch-last.pth")
    assert lines[0].startswith(f"convert-config: `resume: ./save/vanilla/epoch-last.pth` is a vanilla checkpoint; "
                               f"--init-from {other} gives the starting weights instead, and resume: null")
    assert data["resume"] is None and data["model"]["anysr_init_from"] == str(other)
    # a resume file that does not exist: never kept (the trainer would fail on it)
    data, lines, _ = _convert(repo, capsys, "b", resume="./save/gone/epoch-last.pth")
    assert lines[0] == (f"convert-config: `resume: ./save/gone/epoch-last.pth` does not exist "
                        f"({repo / 'save/gone/epoch-last.pth'}); resume: null (no resume: a fresh fine-tune; to "
                        "continue an AnySR run later set resume: to its epoch-last.pth)")
    assert data["resume"] is None
    # a trainer that starts fresh on a missing resume file (LTE / SRNO test os.path.exists): this run's own file
    lte = L.write_repo(tmp_path / "lte", "lte")
    vanilla_checkpoint(lte, L.train_config("liif")["model"], lte / "save" / "v" / "epoch-last.pth")
    data, lines, _ = _convert(lte, capsys, "c", resume="./save/v/epoch-last.pth")
    assert lines[0] == (
        "convert-config: `resume: ./save/v/epoch-last.pth` is a vanilla checkpoint: the fine-tune starts from its "
        "weights (model.anysr_init_from, as --init-from does) instead of resuming the plain model; resume: "
        "./save/_anysr-c/epoch-last.pth (train.py starts a fresh run while that file is missing and resumes this run "
        "once it exists; with --name N set resume: ./save/N/epoch-last.pth)")
    assert data["resume"] == "./save/_anysr-c/epoch-last.pth"
    assert data["model"]["anysr_init_from"] == str(lte / "save" / "v" / "epoch-last.pth")
    # no checkout next to the config: the method's upstream trainer decides (LTE needs a path there)
    alone = tmp_path / "alone.yaml"
    alone.write_text(yaml.safe_dump(L.train_config("liif", resume="./save/none/epoch-last.pth")))
    for method, want in (("lte", "./save/_alone-lte/epoch-last.pth"), ("liif", None)):
        out = tmp_path / f"alone-{method}.yaml"
        assert main(["convert-config", "--method", method, str(alone), "-o", str(out)]) == 0
        line = capsys.readouterr().out.splitlines()[0]
        assert yaml.safe_load(out.read_text())["resume"] == want
        if method == "lte":
            assert line.endswith("; resume: ./save/_alone-lte/epoch-last.pth (the upstream lte repository's "
                                 "train.py starts a fresh run while that file is missing and resumes this run once "
                                 "it exists; with --name N set resume: ./save/N/epoch-last.pth)")


# --------------------------------------------------------------------------- 5. registry-style repositories

API = ("convert the model in your own code where the repository builds it: model = anysr_plugin.anysrify(model) "
       "(README, 'Registry-style repositories')")
SUPPORTED = ("convert-config reads the YAML training configs of LIIF, LTE and SRNO (a `model: {name, args}` spec "
             "that the repository's models.make builds) and writes Meta-SR / ArbSR settings files")


def test_python_and_registry_style_configs(tmp_path, capsys):
    configs = {"liif_edsr.py": "model = dict(type='LIIF', generator=dict(type='LIIFEDSRNet'))\n",
               "basicsr.yml": yaml.safe_dump({"network_g": {"type": "EDSR"}}),
               "mm.yaml": yaml.safe_dump({"model": {"type": "LIIF"}})}
    want = {"liif_edsr.py": f"is a Python-file config (OpenMMLab style): {SUPPORTED}; {API}",
            "basicsr.yml": "a registry-style config (`network_g`, as BasicSR / OpenMMLab write them), not a "
                           f"LIIF-style `model: {{name, args}}` spec: {SUPPORTED}; {API}",
            "mm.yaml": "a registry-style config (`model.type`, as BasicSR / OpenMMLab write them), not a LIIF-style "
                       f"`model: {{name, args}}` spec: {SUPPORTED}; {API}"}
    for name, text in configs.items():
        (tmp_path / name).write_text(text)
        assert main(["convert-config", "--method", "liif", str(tmp_path / name), "-o", str(tmp_path / "o.yaml")]) == 2
        sep = " " if name.endswith(".py") else ": "
        assert one_line_error(capsys, "convert-config") == f"{tmp_path / name}{sep}{want[name]}"
    assert not (tmp_path / "o.yaml").exists()


def test_launcher_says_what_it_looked_for_and_where(tmp_path, capsys, monkeypatch):
    root = tmp_path / "mmrepo"
    (root / "tools").mkdir(parents=True)
    (root / "tools" / "train.py").write_text("print('never runs')\n")
    monkeypatch.chdir(root)
    assert main(["launch", "liif", "--cpu", "--", "tools/train.py", "configs/liif.py"]) == 2
    assert one_line_error(capsys, "launch") == (
        f"anysr launch liif needs a LIIF-style model registry (a `models` package with make(spec)); looked for "
        f"models/__init__.py and models.py in {root} (--repo, default: the current folder) and in the script's "
        f"folder {root / 'tools'}: none. Run from the upstream repository root or pass --repo DIR; a repository "
        f"that builds its model another way (its own registry, Python-file configs): {API}")
    # a `models` package with a registry of another kind
    (root / "models").mkdir()
    (root / "models" / "__init__.py").write_text("MODELS = {}\n")
    assert main(["launch", "liif", "--cpu", "--", "tools/train.py"]) == 2
    assert one_line_error(capsys, "launch") == (
        f"{root / 'models' / '__init__.py'} defines no make(spec): anysr launch liif builds models through a "
        f"LIIF-style registry (`models.make({{'name', 'args'}})`), which {root} does not have; {API}")
    # the registry sits next to the script, not in the current folder: say which --repo
    elsewhere = L.write_repo(tmp_path / "elsewhere", "liif")
    monkeypatch.chdir(tmp_path)
    assert main(["launch", "liif", "--cpu", "--", str(elsewhere / "train_liif.py")]) == 2
    assert one_line_error(capsys, "launch") == (
        f"anysr launch liif needs a LIIF-style model registry (a `models` package with make(spec)); looked for "
        f"models/__init__.py and models.py in {tmp_path} (--repo, default: the current folder): none there, but "
        f"the script's folder has one: pass --repo {elsewhere}")
    # Meta-SR's `model` package
    (tmp_path / "main.py").write_text("")
    assert main(["launch", "metasr", "--", "main.py"]) == 2
    assert "anysr launch metasr needs the repository's own `model` package; looked for model/__init__.py and " \
           f"model.py in {tmp_path}" in one_line_error(capsys, "launch")


def test_readme_registry_style_example_runs(tmp_path, monkeypatch, capsys):
    """The README's example, run as written against a BasicSR-style registry look-alike."""
    from anysr_plugin.reference import build_reference

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme.split("## Registry-style repositories", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    registry = {"LIIFLike": lambda **kw: build_reference("liif-edsr-baseline", seed=0, **kw)}

    def build_network(opt):  # BasicSR-style: the `type` entry names the registered class
        opt = dict(opt)
        return registry[opt.pop("type")](**opt)

    cfg = {"network_g": {"type": "LIIFLike", "n_resblocks": 2, "n_feats": 8, "hidden_list": [8]}}
    pretrained = build_network(cfg["network_g"])
    with torch.no_grad():
        for p in pretrained.parameters():
            p.add_(1.0)
    monkeypatch.chdir(tmp_path)
    torch.save(pretrained.state_dict(), "pretrained.pth")
    scope = {"build_network": build_network, "cfg": cfg}
    exec(compile(code, "README.md", "exec"), scope)
    net, optimizer = scope["net"], scope["optimizer"]
    assert anysr.is_anysr(net) and len(anysr.inspect_targets(net).targets) == 2 and capsys.readouterr().out
    assert torch.equal(net.encoder.head[0].weight, pretrained.encoder.head[0].weight)
    trained = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) in trained for n, p in net.named_parameters() if "anysr_gate" in n)


def test_bare_state_dict_points_at_the_api_path(ms_repo, tmp_path, capsys):
    repo, ckpt = ms_repo
    bare = tmp_path / "params.pth"
    torch.save({"params": torch.load(ckpt, weights_only=False)["model"]["sd"]}, bare)  # BasicSR-style
    assert main(["flops", "--repo", str(repo), "--checkpoint", str(bare)]) == 2
    assert one_line_error(capsys, "flops") == (
        f"{bare} carries no model spec ({{'model': {{'name', 'args', 'sd'}}}} as LIIF / LTE / SRNO save); a bare "
        "state dict does not say how to build its net: evaluate Meta-SR / ArbSR checkpoints with `anysr launch "
        f"metasr|arbsr -- main.py ... --test_only` in their repository; for a repository with a registry of its "
        f"own, {API}")
