"""Bad inputs, round two: files and resources.  Run as a careless or hostile user would:
full disks, outputs that exist or are not plain files, YAML built to explode, images and
exports whose headers lie, numbers beyond any range, values that make huge messages.

Every case gets a typed error (CLI: one line ``anysr CMD: error: ...``, exit status 2) and
no file of the user's folder changes (hashed before and after).  Classes beyond the issue's
list are marked "beyond"; the tables' sizes are asserted at the end."""
from __future__ import annotations

import errno
import os
import re
import struct
import zlib

import numpy as np
import pytest
import torch

import anysr_plugin as anysr
import anysr_plugin.budget
import anysr_plugin.cost
import anysr_plugin.data
import anysr_plugin.evaluate
import anysr_plugin.train
from anysr_plugin import files
from anysr_plugin.checkpoint import atomic_save, load_file, save_safetensors
from anysr_plugin.config import AnySRConfig
from anysr_plugin.errors import (CheckpointError, ConfigError, InputTooLargeError, RunLockedError,
                                 ScaleError, WidthError, WriteError)
from anysr_plugin.imresize import ImageError
from anysr_plugin.runlock import run_folder_lock

from conftest import tiny_edsr
from test_bad_inputs import (FT, TINY, TINY_LIIF, assert_one_line_error, check_api_case, check_cli_case,  # noqa: F401
                             run_cli, snapshot, ws)

BIG = 10**400
BIG_TEXT = "1" + "0" * 400


def _png_header(path, w, h):
    """A PNG whose header claims w x h pixels (its data is empty: only the header is read)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def _alias_bomb() -> str:
    text, prev = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n', "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    return text


def _export(path, args, width=0.5):
    """A `.safetensors` export of a tiny EDSR-baseline whose metadata claims `args`."""
    from anysr_plugin.upstream import export_metadata

    model = anysr.anysrify(tiny_edsr(n_resblocks=1, n_feats=8))
    sub = anysr.export_subnet(model, width)
    source = {"source": "reference", "name": "edsr-baseline", "args": args, "seed": 0}
    save_safetensors(sub.state_dict(), path, metadata=export_metadata(source, AnySRConfig(), width, None, "model"))


@pytest.fixture
def ws2(ws):
    """The first probe's working folder plus hostile files and outputs that already exist."""
    (ws / "bomb.yaml").write_text(_alias_bomb())
    (ws / "aliases.yaml").write_text("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n")
    (ws / "deep.yaml").write_text("widths: " + "[" * 5000 + "]" * 5000 + "\n")
    (ws / "dup.yaml").write_text("widths: [0.5, 1.0]\nscale_bounds: [2.0]\nwidths: [0.7, 1.0]\n")
    (ws / "bigint.yaml").write_text("seed: " + "1" * 6000 + "\n")
    (ws / "big.yaml").write_text("# padding\n" * 110_000 + "gate: paper\n")
    (ws / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81 not text")
    (ws / "deep.json").write_text("[" * 100_000)
    (ws / "bigms.json").write_text('{"results": [{"width": 1.0, "median_ms": ' + BIG_TEXT + "}]}")
    for d, (w, h) in {"bombdir": (100_000, 100_000), "warndir": (10_000, 10_000)}.items():
        (ws / d).mkdir()
        _png_header(ws / d / "a.png", w, h)
    _export(ws / "sub.safetensors", {"n_resblocks": 1, "n_feats": 8})
    _export(ws / "huge.safetensors", {"n_resblocks": 512, "n_feats": 4096})
    _export(ws / "other.safetensors", {"n_resblocks": 2, "n_feats": 8})
    for name in ("res.json", "res.md", "fresh.md", "new.png", "out.pt2", "cost.json", "bench.json", "conv.yaml"):
        (ws / name).write_text(f"the user's {name}\n")
    os.mkfifo(ws / "pipe.json")
    os.mkfifo(ws / "pipe.pt")
    (ws / "ro.json").write_text("protected\n")
    os.chmod(ws / "ro.json", 0o444)
    return ws


def _deep(n=3000):
    return "[" * n + "]" * n


# ------------------------------------------------------------------------------------------- the CLI table
# (id, argv, expected piece of the one-line message); every case: exit 2, one line, no file changed
EVAL1 = ["eval", "--baseline-only", "--hr", "{hr}", "--first-k", "1", "--scales", "2"]
CLI_CASES = [
    # outputs that exist: the main output and the companions beside it (issue)
    ("eval-json-exists", [*EVAL1, "--json", "res.json"], "res.json and res.md already exist;"),
    ("eval-md-companion-exists", [*EVAL1, "--json", "fresh.json"], "fresh.md already exists"),
    ("eval-png-companion-exists", ["eval", *TINY_LIIF, "--hr", "{hr}", "--json", "new.json"], "new.png already exists"),
    ("eval-plot-exists", ["eval", *TINY_LIIF, "--hr", "{hr}", "--plot", "new.png"], "new.png already exists"),
    ("export-out-exists", ["export", *TINY, "--width", "0.5", "-o", "out.pt2"], "out.pt2 already exists"),
    ("flops-json-exists", ["flops", *TINY, "--json", "cost.json"], "cost.json already exists"),
    ("bench-json-exists", ["bench", *TINY, "--json", "bench.json"], "bench.json already exists"),
    ("convert-config-out-exists", ["convert-config", "--method", "liif", "up.yaml", "-o", "conv.yaml"],
     "conv.yaml already exists"),
    # beyond: outputs that are no plain file, or the command's own input
    ("beyond-eval-json-is-its-md", [*EVAL1, "--json", "x.md"], "the same file twice"),
    ("beyond-export-onto-its-checkpoint", ["export", *TINY, "--checkpoint", "small.pth", "--width", "0.5",
                                           "-o", "small.pth", "--force"], "is the input file"),
    ("beyond-flops-json-onto-its-config", ["flops", *TINY, "--config", "bad.yaml", "--json", "bad.yaml", "--force"],
     "is the input file"),
    ("beyond-export-into-a-pipe", ["export", *TINY, "--width", "0.5", "--scale", "2", "--lr-size", "8x8",
                                   "-o", "pipe.pt", "--force"], "not a regular file"),
    ("beyond-eval-json-into-a-pipe", [*EVAL1, "--json", "pipe.json", "--force"], "not a regular file"),
    ("beyond-flops-json-read-only", ["flops", *TINY, "--lr-size", "4x4", "--json", "ro.json", "--force"],
     "read-only (mode 444)"),
    ("beyond-export-unknown-format-first", ["export", *TINY, "--width", "0.5", "-o", "x.xyz"],
     "unknown output format '.xyz'"),
    # YAML built to explode (issue) ...
    ("config-alias-bomb", ["flops", *TINY, "--config", "bomb.yaml"], "expands (through its aliases)"),
    ("config-many-aliases", ["flops", *TINY, "--config", "aliases.yaml"], "more than 100 YAML aliases"),
    ("config-deep", ["flops", *TINY, "--config", "deep.yaml"], "more than 64 deep"),
    ("config-too-big", ["flops", *TINY, "--config", "big.yaml"], "more than 1,048,576 characters"),
    ("config-huge-int", ["flops", *TINY, "--config", "bigint.yaml"], "a number with thousands of digits"),
    ("convert-config-upstream-bomb", ["convert-config", "--method", "liif", "bomb.yaml", "-o", "new.yaml"],
     "expands (through its aliases)"),
    ("convert-checkpoint-spec-bomb", ["convert-checkpoint", "ok.safetensors", "--spec", "bomb.yaml", "-o",
                                      "new.pth"], "expands (through its aliases)"),
    ("model-arg-deep", ["flops", "--model-arg", f"n_feats={_deep()}"], "more than 64 deep"),
    # ... and beyond
    ("beyond-config-duplicate-key", ["flops", *TINY, "--config", "dup.yaml"], "found the key 'widths' twice"),
    ("beyond-config-endless-device", ["flops", *TINY, "--config", "/dev/zero"], "more than 1,048,576 characters"),
    ("beyond-config-binary", ["flops", *TINY, "--config", "bin.yaml"], "UnicodeDecodeError"),
    ("beyond-finetune-model-arg-deep", [*FT, "--out", "run", "--model-arg", f"n_feats={_deep()}"],
     "nests too deep"),
    ("beyond-checkpoint-is-a-folder", ["flops", *TINY, "--checkpoint", "hr"], "is not a regular file"),
    # images whose header claims billions of pixels (issue)
    ("eval-image-bomb", ["eval", "--baseline-only", "--hr", "bombdir"], "bombdir/a.png: 10,000,000,000 pixels, more "
                                                                        "than the limit of"),
    ("eval-image-above-the-warning", ["eval", "--baseline-only", "--hr", "warndir"], "100,000,000 pixels"),
    ("finetune-image-bomb", [*FT[:2], "bombdir", *FT[3:], "--out", "run"], "MAX_IMAGE_PIXELS"),
    # numbers beyond range (issue: never OverflowError / internal error)
    ("flops-scale-10**400", ["flops", *TINY, "--scales", BIG_TEXT], "cannot read scale"),
    ("export-scale-10**400", ["export", *TINY, "--width", "0.5", "--scale", BIG_TEXT, "-o", "n.pt"],
     "cannot read scale"),
    ("flops-lr-size-10**400", ["flops", *TINY, "--lr-size", f"{BIG_TEXT}x4"], "is out of range"),
    ("flops-lr-size-70000", ["flops", *TINY, "--lr-size", "70000x4"], "at most 65536 pixels a side"),
    ("flops-scale-1e300-from-lr", ["flops", *TINY, "--lr-size", "4x4", "--scales", "1e300"],
     "more than 65536 pixels a side"),
    ("bench-repeats-10**400", ["bench", *TINY, "--repeats", BIG_TEXT], "in [1, 9223372036854775807]"),
    ("finetune-steps-10**400", [*FT, "--out", "run", "--steps", BIG_TEXT], "--steps"),
    ("finetune-seed-10**400", [*FT, "--out", "run", "--seed", BIG_TEXT], "<an integer of about 401 digits>"),
    ("finetune-patch-10**400", [*FT, "--out", "run", "--patch", BIG_TEXT], "--patch"),
    ("flops-seed-2**64", ["flops", *TINY, "--seed", str(2**64)], "integer seed in [-9223372036854775808, "),
    ("demo-seed-10**400", ["demo", "--quick", "--out", "d", "--seed", BIG_TEXT], "--seed"),
    ("model-arg-n_feats-10**400", ["flops", "--model-arg", f"n_feats={BIG_TEXT}"], "at most 1048576"),
    ("model-arg-res_scale-1e400", ["flops", *TINY, "--model-arg", "res_scale=1e400"], "at most 1e30"),
    # beyond: small arguments that ask for gigabytes
    ("beyond-model-arg-n_feats-100000", ["flops", "--model-arg", "n_feats=100000"],
     "more than 1,073,741,824 parameters and buffers"),
    ("beyond-finetune-n_feats-100000", [*FT, "--out", "run", "--model-arg", "n_feats=100000"],
     "more than 1,073,741,824 parameters and buffers"),
    ("beyond-model-arg-hidden-list-long", ["flops", "--model", "liif-edsr-baseline", "--model-arg",
                                           "hidden_list=[" + ",".join(["8"] * 2000) + "]"], "list of positive"),
    # long values echoed (issue: messages are capped)
    ("message-long-scale", ["flops", *TINY, "--scales", "2x" + "9" * 100_000], "chars)"),
    ("message-long-model-arg", ["flops", "--model-arg", "k" * 100_000], "--model-arg takes K=V"),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, ws2, capsys):
    check_cli_case(case, ws2, capsys)


# ------------------------------------------------------------------------------------------- full disks
def _disk_full(monkeypatch, code=errno.ENOSPC):
    def write(fd, data):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "write", write)


TINY_EXPORT = ["export", *TINY, "--width", "0.5", "--scale", "2", "--lr-size", "8x8", "--force", "-o"]
DISK_CASES = [  # (id, files the user has, argv): every write fails with ENOSPC
    ("export-pt", ["x.pt"], [*TINY_EXPORT, "x.pt"]),
    ("export-pt2", ["x.pt2"], [*TINY_EXPORT, "x.pt2"]),
    ("export-onnx", ["x.onnx"], [*TINY_EXPORT, "x.onnx"]),
    ("export-pth", ["x.pth"], [*TINY_EXPORT, "x.pth"]),
    ("export-safetensors", ["x.safetensors"], [*TINY_EXPORT, "x.safetensors"]),
    ("eval-json", ["r.json", "r.md"], [*EVAL1, "--json", "r.json", "--force"]),
    ("flops-json", ["c.json"], ["flops", *TINY, "--lr-size", "4x4", "--json", "c.json", "--force"]),
    ("bench-json", ["b.json"], ["bench", *TINY, "--lr-size", "8x8", "--repeats", "1", "--warmup", "0",
                                "--no-memory", "--json", "b.json", "--force"]),
    ("convert-config", ["c.yaml"], ["convert-config", "--method", "liif", "up.yaml", "-o", "c.yaml", "--force"]),
    ("convert-checkpoint", ["c.pth"], ["convert-checkpoint", "run.pth", "-o", "c.pth", "--force"]),
    ("finetune-first-write", [], [*FT, "--out", "run", "--steps", "1"]),
]


@pytest.mark.parametrize("case", DISK_CASES, ids=[c[0] for c in DISK_CASES])
def test_full_disk_is_one_line_naming_the_disk_and_keeps_every_file(case, ws2, capsys, monkeypatch):
    name, present, argv = case
    if name == "export-onnx":
        pytest.importorskip("onnx")
    if name == "convert-checkpoint":
        spec = {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8}, "anysr": AnySRConfig().to_dict()}
        torch.save({"model": {**spec, "sd": anysr.anysrify(tiny_edsr(n_resblocks=1, n_feats=8)).state_dict()},
                    "epoch": 1}, ws2 / "run.pth")
    for p in present:
        (ws2 / p).write_text(f"the user's {p}\n")
    before = snapshot(ws2)
    _disk_full(monkeypatch)
    rc, _, err = run_cli(argv, ws2, capsys)
    monkeypatch.undo()
    err = "\n".join(ln for ln in err.splitlines() if not re.search(r"\| *\d+/\d+ \[", ln))  # eval's progress bar
    assert_one_line_error(rc, err, argv[0], "no space left on the ")
    assert " file system " in err or "the disk holding" in err
    assert snapshot(ws2) == before  # the previous files byte-identical, no temporary file


def test_full_disk_while_a_finetune_saves_keeps_the_last_good_checkpoint(ws2, capsys, monkeypatch):
    """The issue's case: a save during training said "internal error ... unexpected pos"."""
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to tell which file a write goes to")
    assert run_cli([*FT, "--out", "run", "--steps", "2"], ws2, capsys)[0] == 0
    before = snapshot(ws2)
    real = os.write

    def write(fd, data):  # the disk fills up while last.pt is being written
        if ".last.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)
    rc, _, err = run_cli([*FT, "--out", "run", "--steps", "4", "--save-every", "1"], ws2, capsys)
    monkeypatch.undo()
    assert_one_line_error(rc, err, "finetune", f"cannot write run{os.sep}last.pt: ")
    assert "your disk quota is exceeded on" in err and "run/last.pt is unchanged" in err
    assert snapshot(ws2) == before and not (ws2 / "run" / ".anysr.lock").exists()


def test_out_of_memory_is_one_line(ws2, capsys, monkeypatch):
    """Beyond: an allocation the machine cannot make (--batch 100000000) was an "internal error"."""
    def no_memory(*a, **k):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                           "tried to allocate 11059200000000 bytes")
    import anysr_plugin.commands.flops as flops

    monkeypatch.setattr(flops, "cost_table", no_memory)
    before = snapshot(ws2)
    rc, _, err = run_cli(["flops", *TINY, "--lr-size", "4x4"], ws2, capsys)
    assert_one_line_error(rc, err, "flops", "not enough memory")
    assert "--batch" in err and snapshot(ws2) == before


def test_a_second_finetune_into_a_busy_folder(ws2, capsys):
    (ws2 / "run").mkdir()
    before = snapshot(ws2)
    with run_folder_lock(ws2 / "run", "anysr finetune"):
        rc, _, err = run_cli([*FT, "--out", "run", "--steps", "1"], ws2, capsys)
    assert_one_line_error(rc, err, "finetune", f"run is in use by process {os.getpid()}")
    assert snapshot(ws2) == before


# ------------------------------------------------------------------------------------------- the API table
def _model():
    return anysr.anysrify(tiny_edsr(n_resblocks=1, n_feats=8))


def _hold_lock(ws):
    with run_folder_lock(ws / "run", "first"):
        with run_folder_lock(ws / "run", "second"):
            pass


API_CASES = [
    # numbers beyond a float (issue)
    ("use_scale-10**400", lambda ws: anysr.use_scale(_model(), BIG).__enter__(), ScaleError, "out of range"),
    ("use_scale-pair-10**400", lambda ws: anysr.use_scale(_model(), (2, BIG)).__enter__(), ScaleError, "out of range"),
    ("use_width-10**400", lambda ws: anysr.use_width(_model(), BIG).__enter__(), WidthError, "out of range"),
    ("use_budget-gflops-10**400", lambda ws: anysr.use_budget(_model(), gflops=BIG).__enter__(), ConfigError,
     "gflops <an integer of about 401 digits> is out of range"),
    ("use_budget-latency-10**400", lambda ws: anysr.use_budget(
        _model(), latency_table=[{"width": 1.0, "median_ms": 1.0}], latency_ms=BIG).__enter__(), ConfigError,
     "latency_ms"),
    ("config-widths-10**400", lambda ws: AnySRConfig(widths=[BIG], scale_bounds=[]), ConfigError, "out of range"),
    ("config-bounds-10**400", lambda ws: AnySRConfig(scale_bounds=(1, 2, BIG)), ConfigError, "scale_bounds entry"),
    ("config-reset-prob-10**400", lambda ws: AnySRConfig(reset_prob=BIG), ConfigError, "reset_prob"),
    ("config-fallback-10**400", lambda ws: AnySRConfig(fallback_scale=BIG), ConfigError, "fallback_scale"),
    ("config-lam-10**400", lambda ws: AnySRConfig(lam=BIG), ConfigError, "AnySRConfig.lam=<an integer"),
    ("trainconfig-lr-10**400", lambda ws: anysr.train.TrainConfig(lr=BIG), ConfigError, "TrainConfig.lr"),
    ("trainconfig-patch-10**400", lambda ws: anysr.train.TrainConfig(patch=BIG), ConfigError, "out of range"),
    ("trainconfig-seed-2**64", lambda ws: anysr.train.TrainConfig(seed=2**64), ConfigError, "out of range"),
    ("count_flops-width-10**400", lambda ws: anysr.count_flops(_model(), torch.rand(1, 3, 4, 4), width=BIG),
     WidthError, "out of range"),
    ("export_subnet-width-10**400", lambda ws: anysr.export_subnet(_model(), BIG), WidthError, "out of range"),
    ("export_subnet-scale-10**400", lambda ws: anysr.export_subnet(_model(), 0.5, scale=BIG), ScaleError,
     "out of range"),
    ("evaluate-scale-10**400", lambda ws: anysr.evaluate.evaluate(None, [("a", torch.rand(3, 16, 16))], [BIG],
                                                                  baseline="bicubic"), ScaleError, "cannot read scale"),
    ("parse_size-10**400", lambda ws: anysr.cost.parse_size(f"{BIG_TEXT}x2"), ConfigError, "out of range"),
    # YAML (issue, and beyond: duplicate keys)
    ("from_yaml-alias-bomb", lambda ws: AnySRConfig.from_yaml(_alias_bomb()), InputTooLargeError, "aliases"),
    ("from_yaml-deep", lambda ws: AnySRConfig.from_yaml("widths: " + _deep(5000)), InputTooLargeError, "deep"),
    ("from_yaml-huge-int", lambda ws: AnySRConfig.from_yaml("seed: " + "1" * 6000), InputTooLargeError, "digits"),
    ("from_yaml-file-too-big", lambda ws: AnySRConfig.from_yaml(ws / "big.yaml"), InputTooLargeError,
     "more than 1,048,576"),
    ("beyond-from_yaml-duplicate-key", lambda ws: AnySRConfig.from_yaml(ws / "dup.yaml"), ConfigError, "twice"),
    # an export whose metadata lies (issue)
    ("load_export-claims-a-huge-model", lambda ws: anysr.upstream.load_export(ws / "huge.safetensors"),
     InputTooLargeError, "for 1,600 stored values) holds more than"),
    ("load_export-claims-another-model", lambda ws: anysr.upstream.load_export(ws / "other.safetensors"),
     CheckpointError, "does not hold the sub-network its metadata describes"),
    # images (issue)
    ("load_image-bomb", lambda ws: anysr.data.load_image(ws / "bombdir" / "a.png"), ImageError,
     "a.png: 10,000,000,000 pixels, more than the limit of 89,478,485"),
    # messages (issue: capped)
    ("message-config-long-widths", lambda ws: AnySRConfig(widths=[0.5] * 200_000), ConfigError, "(200000 items)"),
    ("message-use_scale-long-list", lambda ws: anysr.use_scale(_model(), list(range(100_000))).__enter__(),
     ScaleError, "(100000 items)"),
    ("message-use_scale-big-nan-tensor", lambda ws: anysr.use_scale(
        _model(), torch.full((100_000, 2), float("nan"))).__enter__(), ScaleError, "tensor([[nan, nan],"),
    ("message-width-long-string", lambda ws: AnySRConfig().check_width("x" * 1_000_000), WidthError, "chars)"),
    ("message-unknown-config-keys", lambda ws: AnySRConfig.from_dict({f"k{i}": 1 for i in range(50_000)}),
     ConfigError, "(50000 items)"),
    # files (issue: writes, locks; beyond: devices, read-only files, folders)
    ("write-into-a-pipe", lambda ws: files.write_text(ws / "pipe.json", "{}"), WriteError, "not a regular file"),
    ("write-over-read-only", lambda ws: files.write_text(ws / "ro.json", "{}"), WriteError, "read-only"),
    ("lock-busy", _hold_lock, RunLockedError, "is in use by process"),
    ("beyond-load_file-folder", lambda ws: load_file(ws / "hr"), CheckpointError, "is not a regular file"),
    ("beyond-save_image-unknown-suffix", lambda ws: anysr.data.save_image(torch.rand(3, 4, 4), ws / "x.xyz"),
     ImageError, "no image format"),
    # beyond: latency tables (JSON) built to break the reader
    ("beyond-latency-table-deep-json", lambda ws: anysr.budget.load_latency_table(ws / "deep.json"), ConfigError,
     "RecursionError"),
    ("beyond-latency-table-ms-10**400", lambda ws: anysr.budget.load_latency_table(ws / "bigms.json"), ConfigError,
     "is malformed"),
    ("beyond-atomic_save-onto-a-folder", lambda ws: atomic_save({}, ws / "hr"), WriteError, "it is a folder"),
]


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case, ws2):
    check_api_case(case, ws2)


def test_the_probe_counts():
    """The probe's size (issue: at least 50 cases) and the share of classes found beyond the issue."""
    cases = len(CLI_CASES) + len(DISK_CASES) + len(API_CASES) + 4  # + the four flows above
    beyond = sum(c[0].startswith("beyond") for c in CLI_CASES + API_CASES)
    assert cases >= 50 and beyond >= 10, (cases, beyond)
