"""Bad inputs across the API and the CLI: each one gets a typed error (CLI: one line
``anysr CMD: error: ...``, exit status 2) or the correct result, and no file the user had changes.

Every case hashes the whole working folder before and after.  ``CLI_CASES`` and
``API_CASES`` are the tables; the tests after them cover the flows that need more than one
call (reruns, round trips, 16-bit images, divergence)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import anysr_plugin as anysr
import anysr_plugin.cost
import anysr_plugin.data
import anysr_plugin.evaluate
import anysr_plugin.train
from anysr_plugin.cli import main
from anysr_plugin.config import AnySRConfig
from anysr_plugin.errors import (AnySRError, CheckpointError, ConfigError, NotAModuleError,
                                 ScaleError, TrainingDivergedError, WidthError)
from anysr_plugin.imresize import ImageError

from conftest import tiny_edsr

TINY = ["--model-arg", "n_resblocks=1", "--model-arg", "n_feats=8"]
TINY_LIIF = ["--model", "liif-edsr-baseline", *TINY, "--model-arg", "hidden_list=[8]"]
FT = ["finetune", "--data", "{hr}", *TINY, "--model-arg", "hidden_list=[8]", "--patch", "8", "--batch-size", "2",
      "--sample-q", "16", "--repeat", "1", "--no-progress", "--lr", "1e-3"]


def _png(path, arr):
    Image.fromarray(arr).save(path)


@pytest.fixture
def ws(tmp_path, monkeypatch):
    """A user's working folder: HR / LR images, a vanilla and an AnySR checkpoint, odd files."""
    rng = np.random.default_rng(0)
    for d in ("hr", "lr", "empty", "junk"):
        (tmp_path / d).mkdir()
    for i in range(3):
        _png(tmp_path / "hr" / f"{i}.png", rng.integers(0, 256, (32, 32, 3)).astype(np.uint8))
        _png(tmp_path / "lr" / f"{i}.png", rng.integers(0, 256, (16, 16, 3)).astype(np.uint8))
    (tmp_path / "junk" / "a.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    torch.save(tiny_edsr(n_resblocks=1, n_feats=8).state_dict(), tmp_path / "small.pth")
    big = anysr.anysrify(tiny_edsr(n_resblocks=2, n_feats=16))
    torch.save(big.state_dict(), tmp_path / "anysr16.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny_edsr(n_resblocks=1, n_feats=8).state_dict().items()},
              str(tmp_path / "ok.safetensors"))
    raw = (tmp_path / "ok.safetensors").read_bytes()
    (tmp_path / "corrupt.safetensors").write_bytes(raw[:8] + b"{not json" + raw[17:])
    (tmp_path / "bad.yaml").write_text("widths: abc\n")
    (tmp_path / "empty.yaml").write_text("")
    (tmp_path / "list.yaml").write_text("- 0.5\n- 1.0\n")
    (tmp_path / "t_bad.json").write_text("{oops")
    (tmp_path / "up.yaml").write_text("model:\n  name: liif\n  args:\n    encoder_spec: {name: edsr-baseline, args: "
                                      "{no_upsampling: true}}\n    imnet_spec: {name: mlp, args: {out_dim: 3, "
                                      "hidden_list: [8]}}\nepoch_max: 1\n")
    (tmp_path / "t_entry.json").write_text(json.dumps({"results": [{"width": "x", "median_ms": 1}]}))
    Image.fromarray(np.zeros((4, 4), np.float32)).save(tmp_path / "f.tif")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(root: Path) -> dict:
    """{relative path: sha256} of every file below `root`."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def run_cli(argv, ws, capsys):
    argv = [a.format(hr=ws / "hr", lr=ws / "lr", ws=ws) for a in argv]
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse's own errors
        rc = exc.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_one_line_error(rc, err, command, expect):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"anysr {command}: error: "), lines[0]
    assert "Traceback" not in err
    assert expect.lower() in lines[0].lower(), lines[0]


# ------------------------------------------------------------------------------------------- the CLI table
# (id, argv, expected piece of the one-line message); every case: exit 2, one line, no file changed
CLI_CASES = [
    # from the issue
    ("eval-modes-foo", ["eval", *TINY_LIIF, "--hr", "{hr}", "--modes", "foo"], "unknown mode 'foo'"),
    ("eval-chunk-0", ["eval", *TINY_LIIF, "--hr", "{hr}", "--chunk", "0"], "--chunk: expected a positive integer"),
    ("eval-chunk-neg", ["eval", *TINY_LIIF, "--hr", "{hr}", "--chunk", "-5"], "--chunk"),
    ("eval-first-k-0", ["eval", "--baseline-only", "--hr", "{hr}", "--first-k", "0"], "--first-k"),
    ("eval-first-k-neg", ["eval", "--baseline-only", "--hr", "{hr}", "--first-k", "-1"], "--first-k"),
    ("flops-widths-abc", ["flops", *TINY, "--widths", "abc"], "--widths"),
    ("bench-widths-abc", ["bench", *TINY, "--widths", "abc"], "--widths"),
    ("flops-model-arg-abc", ["flops", "--model-arg", "n_resblocks=abc"], "n_resblocks='abc' must be a positive"),
    ("flops-model-arg-unknown-encoder", ["flops", "--model-arg", "depth=3"], "unknown argument(s) ['depth']"),
    ("bench-model-arg-unknown-rdn", ["bench", "--model", "rdn", "--model-arg", "n_feats=8"], "unknown argument"),
    ("bench-repeats-0", ["bench", *TINY, "--repeats", "0"], "--repeats"),
    ("bench-threads-0", ["bench", *TINY, "--threads", "0"], "--threads"),
    ("finetune-out-is-file", [*FT, "--out", "notes.txt", "--steps", "1"], "is a file"),
    ("config-missing", ["flops", *TINY, "--config", "missing.yaml"], "'missing.yaml' does not exist"),
    ("checkpoint-other-size", ["flops", "--checkpoint", "small.pth"], "head.0.weight (8, 3, 3, 3) vs (64, 3, 3, 3)"),
    ("checkpoint-anysr-other-size", ["flops", *TINY, "--checkpoint", "anysr16.pth"], "does not fit"),
    ("checkpoint-corrupt-safetensors", ["flops", *TINY, "--checkpoint", "corrupt.safetensors"],
     "cannot read safetensors"),
    ("convert-checkpoint-same-file", ["convert-checkpoint", "small.pth", "-o", "small.pth"], "is the input file"),
    ("finetune-lr-inf", [*FT, "--out", "run", "--steps", "1", "--lr", "inf"], "--lr: expected a positive finite"),
    ("finetune-lr-nan", [*FT, "--out", "run", "--steps", "1", "--lr", "nan"], "--lr"),
    # found beyond the list
    ("export-width-not-configured", ["export", *TINY, "--width", "0.6", "-o", "x.pt"], "not one of the configured"),
    ("export-width-nan", ["export", *TINY, "--width", "nan", "-o", "x.pt"], "not one of the configured"),
    ("flops-widths-out-of-range", ["flops", *TINY, "--widths", "0,1.5"], "(0, 1]"),
    ("flops-scale-nan", ["flops", *TINY, "--scales", "nan"], "cannot read scale 'nan'"),
    ("flops-scale-negative", ["flops", *TINY, "--scales=-2"], "cannot read scale '-2'"),
    ("flops-scale-zero", ["flops", *TINY, "--scales", "0"], "cannot read scale"),
    ("flops-scale-leaves-no-pixel", ["flops", *TINY, "--hr-size", "4x4", "--scales", "1e9"], "no LR pixel"),
    ("flops-size-zero", ["flops", *TINY, "--lr-size", "0x4"], "cannot read size"),
    ("eval-scale-below-1", ["eval", "--baseline-only", "--hr", "{hr}", "--scales", "2", "0.5"], "below 1"),
    ("eval-scale-below-1-asymmetric", ["eval", *TINY_LIIF, "--hr", "{hr}", "--scales", "2x0.9"], "below 1"),
    ("eval-empty-folder", ["eval", "--baseline-only", "--hr", "empty"], "no images"),
    ("eval-non-image-file", ["eval", "--baseline-only", "--hr", "junk"], "cannot read image"),
    ("eval-hr-is-file", ["eval", "--baseline-only", "--hr", "notes.txt"], "image folder not found"),
    ("eval-budget-negative", ["eval", *TINY_LIIF, "--modes", "budget", "--budget-gflops", "-1"], "--budget-gflops"),
    ("eval-budget-missing", ["eval", *TINY_LIIF, "--hr", "{hr}", "--modes", "budget"], "needs budget_gflops"),
    ("eval-device-unknown", ["eval", "--baseline-only", "--hr", "{hr}", "--device", "foo"], "unknown device"),
    ("bench-device-cuda-absent" if not torch.cuda.is_available() else "bench-device-cuda-index",
     ["bench", *TINY, "--device", "cuda" if not torch.cuda.is_available() else "cuda:99"], "cuda"),
    ("eval-json-under-a-file", ["eval", "--baseline-only", "--hr", "{hr}", "--first-k", "1", "--scales", "2",
                                "--json", "notes.txt/r.json"], "is a file, not a folder"),
    ("eval-json-is-folder", ["eval", "--baseline-only", "--hr", "{hr}", "--json", "hr"], "is a folder"),
    ("config-bad-type", ["flops", *TINY, "--config", "bad.yaml"], "AnySRConfig.widths='abc'"),
    ("config-empty-file", ["flops", *TINY, "--config", "empty.yaml"], "is empty"),
    ("config-not-a-mapping", ["flops", *TINY, "--config", "list.yaml"], "not a mapping"),
    ("config-seed-too-big", ["flops", *TINY, "--config", "seed: 99999999999999999999999"], "seed"),
    ("checkpoint-missing", ["flops", *TINY, "--checkpoint", "missing.pth"], "does not exist"),
    ("model-unknown", ["flops", "--model", "edsr-huge"], "unknown model 'edsr-huge'"),
    ("model-arg-bool-for-int", ["flops", "--model-arg", "n_feats=true"], "n_feats=True must be a positive"),
    ("model-arg-zero", ["flops", "--model-arg", "n_feats=0"], "positive integer"),
    ("unknown-option", ["flops", "--bogus"], "unrecognized arguments: --bogus"),
    ("bench-warmup-negative", ["bench", *TINY, "--warmup", "-1"], "--warmup"),
    ("bench-batch-0", ["bench", *TINY, "--batch", "0"], "--batch"),
    ("finetune-negative-seed", [*FT, "--out", "run", "--seed", "-1"], "--seed"),
    ("finetune-reset-prob-2", [*FT, "--out", "run", "--reset-prob", "2"], "[0, 1]"),
    ("finetune-images-smaller-than-crop", [*FT, "--out", "run", "--patch", "9"], "smaller than the 36x36 crop"),
    ("finetune-empty-data", [*FT[:2], "empty", *FT[3:], "--out", "run", "--steps", "1"], "no images"),
    ("finetune-batch-0", [*FT, "--out", "run", "--batch-size", "0"], "--batch-size"),
    ("finetune-scale-groups-odd", [*FT, "--out", "run", "--scale-groups", "1.1,2,3"], "pairs"),
    ("finetune-widths-bad", [*FT, "--out", "run", "--widths", "0.5,0.4"], "ascending"),
    ("finetune-widths-inf", [*FT, "--out", "run", "--widths", "0.5,inf"], "finite"),
    ("finetune-init-from-missing", [*FT, "--out", "run", "--init-from", "missing.pth"], "does not exist"),
    ("finetune-init-from-other-size", [*FT, "--out", "run", "--init-from", "anysr16.pth"], "does not fit"),
    ("demo-n-feats-0", ["demo", "--quick", "--out", "d", "--n-feats", "0"], "--n-feats"),
    ("demo-scales-negative", ["demo", "--quick", "--out", "d", "--scales=-2"], "--scales"),
    ("demo-scales-below-1", ["demo", "--quick", "--out", "d", "--scales", "0.5,2"], "scales >= 1"),
    ("launch-width-above-1", ["launch", "liif", "--width", "1.5", "--", "train_liif.py"], "(0, 1]"),
    ("launch-width-not-a-number", ["launch", "liif", "--width", "abc", "--", "train_liif.py"], "--width"),
    ("launch-script-missing-with-repo", ["launch", "liif", "--repo", "hr", "--", "nope.py"],
     "not found in"),
    ("convert-checkpoint-existing-output", ["convert-checkpoint", "anysr16.pth", "-o", "small.pth"],
     "already exists"),
    ("convert-checkpoint-output-folder", ["convert-checkpoint", "anysr16.pth", "-o", "hr"], "is a folder"),
    ("convert-checkpoint-under-a-file", ["convert-checkpoint", "anysr16.pth", "-o", "notes.txt/x.pth"],
     "is a file, not a folder"),
    ("convert-config-onto-its-input", ["convert-config", "--method", "liif", "up.yaml", "-o", "./up.yaml"],
     "is the input file"),
    ("convert-config-out-folder", ["convert-config", "--method", "liif", "up.yaml", "-o", "hr"], "is a folder"),
    ("convert-config-unknown-method", ["convert-config", "--method", "foo", "up.yaml", "-o", "o.yaml"],
     "unknown adapter 'foo'"),
    ("export-out-folder", ["export", *TINY, "--width", "0.5", "-o", "hr"], "is a folder"),
    ("demo-out-is-file", ["demo", "--quick", "--out", "notes.txt"], "is not a folder"),
    ("finetune-model-unknown", [*FT, "--out", "run", "--model", "foo"], "'foo'"),
    ("convert-checkpoint-corrupt-input", ["convert-checkpoint", "corrupt.safetensors", "-o", "new.pth"],
     "cannot read safetensors"),
]


def check_cli_case(case, ws, capsys):
    """One row of a CLI table: exit 2, one short line holding `expect`, no file of `ws` changed."""
    _, argv, expect = case
    before = snapshot(ws)
    rc, _, err = run_cli(argv, ws, capsys)
    assert_one_line_error(rc, err, argv[0], expect)
    assert len(err) < 1000, len(err)  # no value echoed at length
    assert snapshot(ws) == before  # nothing written, nothing changed


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, ws, capsys):
    check_cli_case(case, ws, capsys)


def test_cli_debug_shows_the_traceback(ws, capsys):
    with pytest.raises(ConfigError):  # --debug anywhere before `--`: the exception (and traceback) escapes
        main(["flops", *TINY, "--config", "missing.yaml", "--debug"])
    with pytest.raises(ImageError):
        main(["--debug", "eval", "--baseline-only", "--hr", "notes.txt/x"])
    rc, _, err = run_cli(["--debug", "flops", "--widths", "abc"], ws, capsys)
    assert_one_line_error(rc, err, "flops", "--widths")  # argparse errors stay one line


def test_cli_os_error_is_a_one_line_user_error(ws, capsys, monkeypatch):
    import anysr_plugin.commands.flops as flops

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied", "/somewhere/out.json")
    monkeypatch.setattr(flops, "cost_table", denied)
    rc, _, err = run_cli(["flops", *TINY, "--lr-size", "4x4"], ws, capsys)
    assert_one_line_error(rc, err, "flops", "Permission denied: /somewhere/out.json")


def test_cli_internal_error_is_one_line_with_status_1(ws, capsys, monkeypatch):
    import anysr_plugin.commands.flops as flops

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")
    monkeypatch.setattr(flops, "cost_table", broken)
    rc, _, err = run_cli(["flops", *TINY, "--lr-size", "4x4"], ws, capsys)
    assert rc == 1 and err.strip().count("\n") == 0 and "internal error ZeroDivisionError: a bug" in err
    assert "--debug" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------- the API table
def _model():
    return anysr.anysrify(tiny_edsr(n_resblocks=1, n_feats=8))


def _liif():
    from anysr_plugin.reference import build_reference

    return anysr.anysrify(build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=8, hidden_list=[8]))


API_CASES = [
    # from the issue
    ("anysrify-path", lambda ws: anysr.anysrify("edsr.pth"), NotAModuleError, "'edsr.pth' is a path"),
    ("anysrify-state-dict", lambda ws: anysr.anysrify(tiny_edsr().state_dict()), NotAModuleError, "state dict"),
    ("config-seed-2**70", lambda ws: AnySRConfig(seed=2**70), ConfigError, "torch's seed range"),
    ("config-seed-below-range", lambda ws: AnySRConfig(seed=-2**63 - 1), ConfigError, "seed"),
    ("use_width-str", lambda ws: anysr.use_width(_model(), "a").__enter__(), WidthError, "must be a number"),
    ("use_width-None", lambda ws: anysr.use_width(_model(), None).__enter__(), WidthError, "must be a number"),
    ("use_width-True", lambda ws: anysr.use_width(_model(), True).__enter__(), WidthError, "bool"),
    ("use_width-np.bool", lambda ws: anysr.use_width(_model(), np.bool_(True)).__enter__(), WidthError, "bool"),
    ("use_width-bool-tensor", lambda ws: anysr.use_width(_model(), torch.tensor(True)).__enter__(), WidthError,
     "torch.bool"),
    ("use_width-2-tensor", lambda ws: anysr.use_width(_model(), torch.tensor([0.5, 1.0])).__enter__(), WidthError,
     "one number"),
    ("config-file-missing", lambda ws: AnySRConfig.from_yaml("missing.yaml"), ConfigError, "does not exist"),
    ("config-path-missing", lambda ws: AnySRConfig.from_yaml(Path("missing.yaml")), ConfigError, "does not exist"),
    ("config-path-folder", lambda ws: AnySRConfig.from_yaml(ws / "hr"), ConfigError, "cannot read"),
    ("latency-table-missing", lambda ws: anysr.use_budget(_model(), latency_table="none.json",
                                                          latency_ms=1).__enter__(), ConfigError, "does not exist"),
    ("latency-table-not-json", lambda ws: anysr.use_budget(_model(), latency_table="t_bad.json",
                                                           latency_ms=1).__enter__(), ConfigError, "cannot read"),
    ("latency-table-bad-entry", lambda ws: anysr.use_budget(
        _model(), latency_table="t_entry.json",
        latency_ms=1).__enter__(), ConfigError, "malformed"),
    ("latency-ms-str", lambda ws: anysr.use_budget(
        _model(), latency_table=[{"width": 1.0, "median_ms": 1.0}], latency_ms="5").__enter__(), ConfigError,
     "latency_ms"),
    ("safetensors-corrupt", lambda ws: anysr.load_upstream_checkpoint(_model(), ws / "corrupt.safetensors"),
     CheckpointError, "cannot read safetensors"),
    # found beyond the list
    ("use_scale-3d-tensor", lambda ws: anysr.use_scale(_model(), torch.ones(1, 2, 2)).__enter__(), ScaleError,
     "(B, 2)"),
    ("use_scale-nan", lambda ws: anysr.use_scale(_model(), float("nan")).__enter__(), ScaleError, "finite"),
    ("use_scale-negative-tensor", lambda ws: anysr.use_scale(_model(), torch.tensor([[2.0, -1.0]])).__enter__(),
     ScaleError, "positive"),
    ("use_scale-str", lambda ws: anysr.use_scale(_model(), "2").__enter__(), ScaleError, "number"),
    ("use_width-not-a-model", lambda ws: anysr.use_width("model.pth", 0.5).__enter__(), NotAModuleError, "path"),
    ("inspect-None", lambda ws: anysr.inspect_targets(None), NotAModuleError, "NoneType"),
    ("config-yaml-not-a-mapping", lambda ws: AnySRConfig.from_yaml(ws / "list.yaml"), ConfigError, "not a mapping"),
    ("config-yaml-empty-file", lambda ws: AnySRConfig.from_yaml(ws / "empty.yaml"), ConfigError, "is empty"),
    ("config-from-yaml-int", lambda ws: AnySRConfig.from_yaml(5), ConfigError, "YAML file path or YAML text"),
    ("load-image-non-image", lambda ws: anysr.data.load_image(ws / "junk" / "a.png"), ImageError, "cannot read"),
    ("load-image-float-tiff", lambda ws: anysr.data.load_image(ws / "f.tif"), ImageError, "no known value range"),
    ("trainconfig-lr-inf", lambda ws: anysr.train.TrainConfig(lr=float("inf")), ConfigError, "finite"),
    ("trainconfig-seed-negative", lambda ws: anysr.train.TrainConfig(seed=-1), ConfigError, ">= 0"),
    ("trainconfig-save-every-0", lambda ws: anysr.train.TrainConfig(save_every=0), ConfigError, "save_every"),
    ("eval-first-k-0", lambda ws: anysr.evaluate.load_dataset(str(ws / "hr"), first_k=0), ConfigError, "first_k"),
    ("super_resolve-grey-lr", lambda ws: anysr.evaluate.super_resolve(_liif(), torch.rand(8, 8), (16, 16), 2),
     ConfigError, "RGB LR image"),
    ("super_resolve-chunk-0", lambda ws: anysr.evaluate.super_resolve(_liif(), torch.rand(3, 8, 8), (16, 16), 2,
                                                                       chunk=0), ConfigError, "chunk"),
    ("evaluate-mode-foo", lambda ws: anysr.evaluate.evaluate(_liif(), [("a", torch.rand(3, 16, 16))], [2],
                                                             modes=["foo"]), ConfigError, "unknown mode 'foo'"),
    ("evaluate-mode-true", lambda ws: anysr.evaluate.evaluate(_liif(), [("a", torch.rand(3, 16, 16))], [2],
                                                              modes=[True]), WidthError, "bool"),
    ("evaluate-chunk-0", lambda ws: anysr.evaluate.evaluate(_liif(), [("a", torch.rand(3, 16, 16))], [2], chunk=0),
     ConfigError, "chunk"),
    ("evaluate-bare-tensors", lambda ws: anysr.evaluate.evaluate(None, [torch.rand(3, 16, 16)], [2],
                                                                 baseline="bicubic"), ConfigError, "(name,"),
    ("load-upstream-int", lambda ws: anysr.load_upstream_checkpoint(_model(), 5), CheckpointError, "got int"),
    ("config-lam-np-bool", lambda ws: AnySRConfig(lam=np.bool_(True)), ConfigError, "lam"),
    ("config-widths-np-bool", lambda ws: AnySRConfig(widths=[np.bool_(True)], scale_bounds=[]), ConfigError,
     "not a number"),
    ("trainer-grey-tensor-images", lambda ws: anysr.train.Trainer(_model(), [torch.rand(32, 32)],
                                                                  anysr.train.TrainConfig(patch=4)),
     ConfigError, "training image 0"),
    ("trainer-uint8-images", lambda ws: anysr.train.Trainer(_model(), [torch.zeros(3, 32, 32, dtype=torch.uint8)],
                                                            anysr.train.TrainConfig(patch=4)), ConfigError, "uint8"),
    ("build-model-bad-arg", lambda ws: anysr.cost.build_model("rcan", reduction="x"), ConfigError, "reduction"),
]


def check_api_case(case, ws):
    """One row of an API table: the typed error, a short message holding `expect`, no file changed."""
    _, call, error, expect = case
    before = snapshot(ws)
    with pytest.raises(error) as info:
        call(ws)
    assert isinstance(info.value, AnySRError)
    assert expect.lower() in str(info.value).lower(), str(info.value)
    assert len(str(info.value)) < 1000, len(str(info.value))
    assert snapshot(ws) == before


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case, ws):
    check_api_case(case, ws)


# ------------------------------------------------------------------------------------------- correct results
def test_width_accepts_float32_and_tensor_within_precision():
    model = _model().eval()
    x = torch.rand(1, 3, 6, 6)
    with torch.no_grad(), anysr.use_scale(model, 2.0):
        with anysr.use_width(model, 0.7):
            ref = model(x)
        for w in (np.float32(0.7), torch.tensor(0.7), torch.tensor([0.7], dtype=torch.float64), np.float64(0.7)):
            with anysr.use_width(model, w):
                assert torch.equal(model(x), ref), w
    assert AnySRConfig().check_width(np.float32(0.7)) == 0.7 and AnySRConfig().check_width(1) == 1.0


def test_config_accepts_numpy_numbers():
    cfg = AnySRConfig(widths=np.array([0.5, 1.0]), scale_bounds=[np.float32(2.0)], lam=np.int64(4),
                      reset_prob=np.float32(0.5), fallback_scale=np.int32(3), seed=np.uint64(2**64 - 1))
    assert cfg.widths == (0.5, 1.0) and cfg.scale_bounds == (2.0,) and cfg.lam == 4 and cfg.seed == 2**64 - 1
    assert AnySRConfig.from_yaml(cfg.to_yaml()) == cfg  # plain Python numbers: YAML round trip


def test_seed_range_is_torch_generator_range():
    for seed in (-2**63, 2**64 - 1, np.int64(7)):
        cfg = AnySRConfig(seed=seed)
        anysr.anysrify(tiny_edsr(n_resblocks=1, n_feats=8), cfg)  # manual_seed accepts it
        torch.Generator().manual_seed(cfg.seed)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    from anysr_plugin.data import load_image
    from anysr_plugin.evaluate import evaluate, load_dataset

    rng = np.random.default_rng(1)
    grey8 = rng.integers(0, 256, (30, 30)).astype(np.uint8)
    noise = rng.integers(0, 200, (30, 30)).astype(np.uint16)
    for d in ("d8", "d16", "d16n"):
        (tmp_path / d).mkdir()
    _png(tmp_path / "d8" / "a.png", grey8)
    _png(tmp_path / "d16" / "a.png", grey8.astype(np.uint16) * 257)  # the same values in 16 bits
    grey16n = np.minimum(grey8.astype(np.int64) * 257 + noise, 65535)
    _png(tmp_path / "d16n" / "a.png", grey16n.astype(np.uint16))  # plus sub-8-bit detail
    assert Image.open(tmp_path / "d16" / "a.png").mode == "I;16"
    x8, x16, x16n = (load_image(tmp_path / d / "a.png") for d in ("d8", "d16", "d16n"))
    assert x16.shape == (3, 30, 30) and torch.equal(x16, x8)
    expected = torch.from_numpy(grey16n / 65535).float()
    torch.testing.assert_close(x16n[1], expected, atol=1e-7, rtol=0)
    assert 0.3 < float(x16n.mean()) < 0.7  # not clipped to white (the old reading: every pixel 1.0)
    psnr = {d: evaluate(None, load_dataset(str(tmp_path / d)), [2, 3], baseline="bicubic")
            for d in ("d8", "d16", "d16n")}
    for r8, r16, r16n in zip(psnr["d8"], psnr["d16"], psnr["d16n"]):
        assert np.isfinite(r16.psnr) and r16.psnr == r8.psnr
        assert abs(r16n.psnr - r8.psnr) < 0.5


def _write_png16(path, arr):
    """A 16-bit PNG from a (H, W, C) uint16 array, written with zlib (Pillow cannot write 16-bit RGB)."""
    import struct
    import zlib

    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_sixteen_bit_png_channels_load_scaled(tmp_path, channels):
    from anysr_plugin.data import load_image

    a = np.random.default_rng(channels).integers(0, 65536, (5, 7, channels)).astype(np.uint16)
    _write_png16(tmp_path / "x.png", a)
    x = load_image(tmp_path / "x.png")
    rgb = np.repeat(a, 3, axis=2) if channels == 1 else a[:, :, :3]
    ref = torch.from_numpy(rgb.astype(np.float64) / 65535).permute(2, 0, 1).float()
    tol = 1e-7 if channels == 1 else 1 / 255  # Pillow keeps the high byte of 16-bit RGB(A)
    torch.testing.assert_close(x, ref, atol=tol, rtol=0)


def test_one_line_joins_a_multi_line_message():
    from anysr_plugin.cli import one_line

    assert one_line("2 block(s) cannot be converted:\n  a (X): why\n  b (Y): why\n") == \
        "2 block(s) cannot be converted: a (X): why; b (Y): why"


def test_first_k_is_honoured_for_paired_folders(ws):
    from anysr_plugin.evaluate import evaluate, load_dataset

    res = evaluate(None, load_dataset(str(ws / "hr"), str(ws / "lr"), first_k=2), [2], baseline="bicubic")
    assert [r.images for r in res] == [2]
    res = evaluate(None, load_dataset(str(ws / "hr"), str(ws / "lr")), [2], baseline="bicubic")
    assert [r.images for r in res] == [3]
    assert main(["eval", "--baseline-only", "--lr", "lr", "--hr", "hr", "--scales", "2", "--first-k", "1",
                 "--json", "r.json"]) == 0
    lines = (ws / "r.md").read_text().splitlines()[:3]
    header, _, row = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    assert row[header.index("images")] == "1"


def test_export_creates_a_missing_folder(ws, capsys):
    rc, _, err = run_cli(["export", *TINY, "--width", "0.7", "--scale", "2", "--lr-size", "8x8", "-o",
                          "new/dir/sub.pt"], ws, capsys)
    assert rc == 0, err
    assert torch.jit.load(str(ws / "new" / "dir" / "sub.pt")) is not None


# ------------------------------------------------------------------------------------------- convert-checkpoint
def _anysr_run_checkpoint(path):
    model = anysr.anysrify(tiny_edsr(n_resblocks=1, n_feats=8))
    spec = {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8}, "anysr": AnySRConfig().to_dict()}
    torch.save({"model": {**spec, "sd": model.state_dict()}, "optimizer": {"state": {}}, "epoch": 7}, path)


@pytest.mark.parametrize("out", ["same", "relative", "symlink", "safetensors-sidecar"])
def test_convert_checkpoint_never_overwrites_its_input(ws, capsys, out):
    _anysr_run_checkpoint(ws / "run.pth")
    if out == "same":
        argv = ["convert-checkpoint", "run.pth", "-o", "run.pth", "--force"]
    elif out == "relative":
        argv = ["convert-checkpoint", str(ws / "run.pth"), "-o", "hr/../run.pth", "--force"]
    elif out == "symlink":
        os.symlink(ws / "run.pth", ws / "link.pth")
        argv = ["convert-checkpoint", "run.pth", "-o", "link.pth", "--force"]
    else:  # a .safetensors output writes a .yaml beside it: here that is the input's spec
        assert main(["convert-checkpoint", "run.pth", "-o", "std.safetensors"]) == 0
        (ws / "other.yaml").write_bytes((ws / "std.yaml").read_bytes())
        argv = ["convert-checkpoint", "std.safetensors", "--spec", "other.yaml", "-o", "other.safetensors", "--force"]
    before = snapshot(ws)
    rc, _, err = run_cli(argv, ws, capsys)
    assert_one_line_error(rc, err, "convert-checkpoint", "is the input file")
    assert snapshot(ws) == before


def test_convert_checkpoint_force_overwrites_other_files(ws, capsys):
    _anysr_run_checkpoint(ws / "run.pth")
    (ws / "old.safetensors").write_bytes(b"old")
    rc, _, err = run_cli(["convert-checkpoint", "run.pth", "-o", "old.safetensors"], ws, capsys)
    assert_one_line_error(rc, err, "convert-checkpoint", "already exists")
    assert run_cli(["convert-checkpoint", "run.pth", "-o", "old.safetensors", "--force"], ws, capsys)[0] == 0
    assert (ws / "old.yaml").is_file() and (ws / "old.safetensors").read_bytes() != b"old"
    assert torch.load(ws / "run.pth", weights_only=True)["epoch"] == 7  # the input is untouched


# ------------------------------------------------------------------------------------------- finetune reruns
RERUN_CASES = [
    ("gate", ["--gate", "paper"], "anysr.gate: run 'identity', now 'paper'"),
    ("widths", ["--widths", "0.5,1.0", "--scale-bounds", "2.0", "--scale-groups", "1.1,2.0,2.1,4.0"],
     "anysr.widths: run [0.5, 0.7, 0.9, 1.0], now [0.5, 1.0]"),
    ("architecture", ["--model-arg", "n_resblocks=2"], "model weights: missing: encoder.body.1"),
    ("plain", ["--no-anysr"], "AnySR: run AnySR, now plain"),
    ("lr", ["--lr", "1e-4"], "train.lr: run 0.001, now 0.0001"),
    ("patch", ["--patch", "7"], "train.patch: run 8, now 7"),
    ("rejected-lr", ["--lr", "inf"], "--lr"),
    ("rejected-widths", ["--widths", "0.4,0.3"], "ascending"),
    ("rejected-seed", ["--seed", "-3"], "--seed"),
]


@pytest.fixture
def trained_run(ws, capsys):
    rc, out, err = run_cli([*FT, "--out", "run", "--steps", "2"], ws, capsys)
    assert rc == 0, err
    assert sorted(p.name for p in (ws / "run").iterdir()) == ["anysr.yaml", "final.pt", "last.pt"]
    return ws / "run"


@pytest.mark.parametrize("case", RERUN_CASES, ids=[c[0] for c in RERUN_CASES])
def test_finetune_rerun_with_other_settings_is_refused_and_changes_nothing(case, ws, trained_run, capsys):
    _, extra, expect = case
    before = snapshot(ws)
    rc, _, err = run_cli([*FT, "--out", "run", "--steps", "2", *extra], ws, capsys)
    assert_one_line_error(rc, err, "finetune", expect)
    assert snapshot(ws) == before


def test_finetune_rerun_with_other_data_is_refused(ws, trained_run, capsys):
    _png(ws / "hr" / "3.png", np.zeros((32, 32, 3), np.uint8))
    before = snapshot(ws)
    rc, _, err = run_cli([*FT, "--out", "run", "--steps", "2"], ws, capsys)
    assert_one_line_error(rc, err, "finetune", "training images: run 3, now 4")
    assert snapshot(ws) == before


def test_finetune_rerun_before_the_first_checkpoint_compares_anysr_yaml(ws, capsys):
    (ws / "run").mkdir()
    (ws / "run" / "anysr.yaml").write_text(AnySRConfig(gate="paper", seed=0).to_yaml())
    before = snapshot(ws)
    rc, _, err = run_cli([*FT, "--out", "run", "--steps", "1"], ws, capsys)
    assert_one_line_error(rc, err, "finetune", "anysr.gate: run 'paper', now 'identity'")
    assert snapshot(ws) == before


@pytest.mark.parametrize("present", ["final.pt", "last.pt"])
def test_finetune_never_writes_over_files_it_did_not_write(ws, capsys, present):
    (ws / "run").mkdir()
    torch.save({"weights": torch.ones(2)}, ws / "run" / present)  # someone else's file of the same name
    before = snapshot(ws)
    rc, _, err = run_cli([*FT, "--out", "run", "--steps", "1"], ws, capsys)
    assert_one_line_error(rc, err, "finetune", "final.pt but no last.pt" if present == "final.pt"
                          else "not an anysr finetune checkpoint")
    assert snapshot(ws) == before


def test_finetune_resume_with_identical_settings_is_bit_exact(ws, capsys):
    assert run_cli([*FT, "--out", "straight", "--steps", "4"], ws, capsys)[0] == 0
    assert run_cli([*FT, "--out", "split", "--steps", "2"], ws, capsys)[0] == 0
    rc, out, err = run_cli([*FT, "--out", "split", "--steps", "4"], ws, capsys)  # train longer: allowed
    assert rc == 0 and "resumed from" in out, err
    a = torch.load(ws / "straight" / "final.pt", weights_only=True)
    b = torch.load(ws / "split" / "final.pt", weights_only=True)
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert (ws / "straight" / "anysr.yaml").read_bytes() == (ws / "split" / "anysr.yaml").read_bytes()


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    from anysr_plugin.reference import build_reference
    from anysr_plugin.train import TrainConfig, Trainer

    images = list(torch.rand(3, 3, 24, 24, generator=torch.Generator().manual_seed(0)))

    def poison_after_2(trainer, rec):
        if trainer.step == 2:  # the data of step 3 on holds NaN: its loss is NaN
            trainer.images = [torch.full_like(im, float("nan")) for im in trainer.images]

    model = anysr.anysrify(build_reference("liif-edsr-baseline", seed=0, n_resblocks=1, n_feats=8,
                                           hidden_list=[8]), AnySRConfig(seed=0))
    cfg = TrainConfig(patch=6, batch_size=2, sample_q=16, steps=5, lr=1e-3, progress=False, repeat=1, save_every=1)
    t = Trainer(model, images, cfg, tmp_path / "run", callback=poison_after_2)
    with pytest.raises(TrainingDivergedError, match=r"at step 2 .*the loss is nan.*last good checkpoint.*step 2"):
        t.run()
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert not any(torch.isnan(p).any() for p in model.parameters())  # stopped before the optimizer step


def test_cli_diverging_finetune_is_one_line_and_writes_no_final(ws, capsys):
    rc, _, err = run_cli([*FT, "--out", "run", "--steps", "3", "--lr", "1e30", "--save-every", "1"], ws, capsys)
    assert_one_line_error(rc, err, "finetune", "training diverged")
    assert not (ws / "run" / "final.pt").exists()
    if (ws / "run" / "last.pt").exists():
        ckpt = torch.load(ws / "run" / "last.pt", weights_only=True)
        assert all(torch.isfinite(v).all() for v in ckpt["model"].values())

