"""Atomic, kind writes (files.py) and the run-folder lock (runlock.py).

A full disk is simulated without root by making ``os.write`` (the only call our writer
writes with) or ``os.fsync`` fail with ENOSPC / EDQUOT; every failure must leave the
previous file byte-identical and no temporary file behind."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import socket
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import anysr_plugin as anysr
from anysr_plugin import files
from anysr_plugin.checkpoint import atomic_save, atomic_write_text, save_safetensors
from anysr_plugin.config import AnySRConfig
from anysr_plugin.errors import DiskFullError, OutputExistsError, RunLockedError, WriteError
from anysr_plugin.runlock import LOCK_NAME, run_folder_lock

from conftest import tiny_edsr


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _fail_writes(monkeypatch, code=errno.ENOSPC, after=0):
    """``os.write`` takes `after` bytes, then fails with `code` (a disk that fills up)."""
    real, left = os.write, [after]

    def write(fd, data):
        if left[0] <= 0:
            raise OSError(code, os.strerror(code))
        n = real(fd, bytes(data)[:left[0]])
        left[0] -= n
        return n
    monkeypatch.setattr(os, "write", write)


def _save_figure(path):
    from anysr_plugin.plots import plot_psnr_vs_gflops

    pytest.importorskip("matplotlib")
    plot_psnr_vs_gflops([{"scale": 2, "width": 0.5, "psnr": 30.0, "gflops": 1.0}], path)


# every format our tools write, through the function that writes it
WRITERS = {
    "pt": lambda p: atomic_save({"w": torch.arange(5000.0)}, p),
    "safetensors": lambda p: save_safetensors({"w": torch.arange(5000.0)}, p, metadata={"k": "v"}),
    "yaml": lambda p: AnySRConfig(seed=3).to_yaml(p),
    "json": lambda p: anysr.evaluate.results_to_json([], p),
    "md": lambda p: atomic_write_text(p, "| a |\n" * 1000),
    "png-image": lambda p: anysr.data.save_image(torch.rand(3, 40, 40), p),
    "png-plot": _save_figure,
}
SUFFIX = {"pt": ".pt", "safetensors": ".safetensors", "yaml": ".yaml", "json": ".json", "md": ".md",
          "png-image": ".png", "png-plot": ".png"}


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_full_disk_keeps_the_previous_file_and_leaves_nothing(kind, tmp_path, monkeypatch):
    import anysr_plugin.data  # noqa: F401  (WRITERS reach it through anysr.data)
    import anysr_plugin.evaluate  # noqa: F401

    path = tmp_path / f"out{SUFFIX[kind]}"
    path.write_bytes(b"the previous file")
    before = _digest(tmp_path)
    _fail_writes(monkeypatch)
    with pytest.raises(DiskFullError) as info:
        WRITERS[kind](path)
    monkeypatch.undo()
    msg = str(info.value)
    assert msg.startswith(f"cannot write {path}: no space left on ") and "is unchanged" in msg
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, OSError)
    assert _digest(tmp_path) == before  # byte-identical, no temporary file
    WRITERS[kind](path)  # with space again it writes
    assert path.read_bytes() != b"the previous file" and _digest(tmp_path).keys() == before.keys()


def test_the_message_names_the_disk(tmp_path, monkeypatch):
    _fail_writes(monkeypatch)
    with pytest.raises(DiskFullError) as info:
        atomic_write_text(tmp_path / "a.md", "x")
    disk = files.describe_disk(tmp_path)
    assert disk in str(info.value) and " free of " in disk
    if os.path.exists("/proc/self/mountinfo"):
        assert " mounted at " in disk


@pytest.mark.parametrize("code, words", [(getattr(errno, "EDQUOT", errno.ENOSPC), "quota"),
                                         (errno.EFBIG, "too large")])
def test_quota_and_file_size_limits_are_disk_full_errors(code, words, tmp_path, monkeypatch):
    _fail_writes(monkeypatch, code)
    with pytest.raises(DiskFullError, match=words if code != errno.ENOSPC else "no space"):
        atomic_write_text(tmp_path / "a.md", "x")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_fsync_is_a_disk_error_too(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text("old")

    def fsync(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFullError):
        atomic_write_text(tmp_path / "a.json", "new")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"] and (tmp_path / "a.json").read_text() == "old"


def test_torch_save_unexpected_pos_is_mapped_back_to_the_disk(tmp_path, monkeypatch):
    """Past the 1 MiB buffer the disk fills inside torch.save, which words it "unexpected pos"."""
    atomic_save({"w": torch.zeros(3)}, tmp_path / "last.pt")
    before = _digest(tmp_path)
    _fail_writes(monkeypatch, after=100)
    with pytest.raises(DiskFullError, match="no space left on"):
        atomic_save({"w": torch.rand(600_000)}, tmp_path / "last.pt")
    monkeypatch.undo()
    assert _digest(tmp_path) == before


def test_keyboard_interrupt_leaves_no_temporary_file(tmp_path):
    (tmp_path / "a.yaml").write_text("old")

    def write(f):
        f.write(b"half")
        f.flush()
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        files.write_atomic(tmp_path / "a.yaml", write)
    assert [p.name for p in tmp_path.iterdir()] == ["a.yaml"] and (tmp_path / "a.yaml").read_text() == "old"


def test_a_writer_that_loses_bytes_is_caught(tmp_path):
    def write(f):
        f.write(b"12345678")
        f.flush()
        os.ftruncate(f.raw.fd, 3)  # (our file object has no fileno: libraries must write through it)
    with pytest.raises(WriteError, match="wrote 8 bytes but the file holds 3"):
        files.write_atomic(tmp_path / "a.bin", write)
    assert list(tmp_path.iterdir()) == []


def test_new_files_follow_the_umask_and_overwritten_files_keep_their_mode(tmp_path):
    old = os.umask(0o027)
    try:
        assert files.new_file_mode() == 0o640
        atomic_save({"w": torch.ones(1)}, tmp_path / "new.pt")
        assert stat.S_IMODE(os.stat(tmp_path / "new.pt").st_mode) == 0o640  # mkstemp alone would give 0600
        (tmp_path / "kept.md").write_text("old")
        os.chmod(tmp_path / "kept.md", 0o604)
        atomic_write_text(tmp_path / "kept.md", "new")
        assert stat.S_IMODE(os.stat(tmp_path / "kept.md").st_mode) == 0o604
    finally:
        os.umask(old)


def test_a_symlink_is_written_through(tmp_path):
    (tmp_path / "real.json").write_text("old")
    os.symlink(tmp_path / "real.json", tmp_path / "link.json")
    atomic_write_text(tmp_path / "link.json", "new")
    assert os.path.islink(tmp_path / "link.json") and (tmp_path / "real.json").read_text() == "new"


def test_devices_pipes_and_read_only_files_are_never_replaced(tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    with pytest.raises(WriteError, match="not a regular file"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    ro = tmp_path / "ro.md"
    ro.write_text("protected")
    os.chmod(ro, 0o444)
    with pytest.raises(WriteError, match=r"read-only \(mode 444\)"):
        atomic_write_text(ro, "x")
    assert ro.read_text() == "protected" and sorted(p.name for p in tmp_path.iterdir()) == ["pipe.json", "ro.md"]


def test_a_long_file_name_fits(tmp_path):
    path = tmp_path / ("n" * 240 + ".json")
    atomic_write_text(path, "{}")
    assert path.read_text() == "{}"


def test_refuse_existing_names_every_file_and_spares_fresh_ones(tmp_path):
    (tmp_path / "r.md").write_text("a")
    (tmp_path / "r.png").write_text("b")
    files.refuse_existing([tmp_path / "new.json"], False, "--json")
    with pytest.raises(OutputExistsError) as info:
        files.refuse_existing([tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"], False, "--json")
    assert str(info.value) == (f"{tmp_path / 'r.md'} and {tmp_path / 'r.png'} already exist; nothing was "
                               "overwritten: choose another --json or pass --force to overwrite")
    files.refuse_existing([tmp_path / "r.md"], True, "--json")
    with pytest.raises(OutputExistsError, match="even with --force"):
        files.refuse_existing([tmp_path / "r.md"], True, "-o", inputs=[tmp_path / "r.md"])
    with pytest.raises(OutputExistsError, match="the same file twice"):
        files.refuse_existing([tmp_path / "x.md", tmp_path / "x.md"], True, "--json")


def test_graph_exports_are_written_by_us(tmp_path, monkeypatch, capsys):
    """.pt / .pt2 serialize in memory, so a full disk hits our os.write, never the library's own
    writer (which aborts the process); the previous export stays."""
    from anysr_plugin.cli import main

    tiny = ["--model-arg", "n_resblocks=1", "--model-arg", "n_feats=8", "--width", "0.5", "--lr-size", "8x8"]
    for ext in (".pt", ".pt2"):
        (tmp_path / f"sub{ext}").write_bytes(b"previous export")
    for ext in (".pt", ".pt2"):
        out = tmp_path / f"sub{ext}"
        _fail_writes(monkeypatch)
        rc = main(["export", *tiny, "--scale", "2", "-o", str(out), "--force"])
        monkeypatch.undo()
        err = capsys.readouterr().err.strip()
        assert rc == 2 and err.startswith(f"anysr export: error: cannot write {out}: no space left on "), err
        assert "\n" not in err and out.read_bytes() == b"previous export"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.pt", "sub.pt2"]


# ------------------------------------------------------------------------------------------- run-folder lock
def test_a_second_run_into_a_locked_folder_is_refused(tmp_path):
    with run_folder_lock(tmp_path / "run", "first") as lock:
        owner = json.loads(lock.read_text())
        assert owner["pid"] == os.getpid() and owner["host"] == socket.gethostname()
        with pytest.raises(RunLockedError) as info:
            with run_folder_lock(tmp_path / "run", "second"):
                pass
        assert str(info.value).startswith(f"{tmp_path / 'run'} is in use by process {os.getpid()} on "
                                          f"{socket.gethostname()} (first, started ")
    assert not (tmp_path / "run").exists()  # created here, empty again: removed


def test_a_stale_lock_is_taken_over_with_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"x")
    (run / LOCK_NAME).write_text(json.dumps({"pid": 999999, "host": "gone", "command": "anysr finetune",
                                             "started": "2020-01-01T00:00:00"}))  # its process died: no flock
    said = []
    with run_folder_lock(run, "anysr finetune", say=said.append):
        assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert said == [f"anysr finetune: {run} was locked by process 999999 on gone (anysr finetune, started "
                    "2020-01-01T00:00:00), which is no longer running: taking the lock over"]
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]


def test_a_lock_held_by_another_process_is_honoured(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "run"
    code = ("import sys, time; from anysr_plugin.runlock import run_folder_lock\n"
            f"with run_folder_lock({str(run)!r}, 'other run'):\n    print('held', flush=True); time.sleep(60)\n")
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by process {child.pid} on"):
            with run_folder_lock(run, "me"):
                pass
    finally:
        child.kill()
        child.wait()
    said = []
    with run_folder_lock(run, "me", say=said.append):  # killed: its lock file stays, its flock went
        pass
    assert len(said) == 1 and f"locked by process {child.pid}" in said[0] and "taking the lock over" in said[0]


def test_two_finetune_runs_into_one_folder(tmp_path, monkeypatch, capsys):
    from anysr_plugin.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "hr").mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3)).astype(np.uint8)).save(
            tmp_path / "hr" / f"{i}.png")
    argv = ["finetune", "--data", "hr", "--out", "run", "--model-arg", "n_resblocks=1", "--model-arg", "n_feats=8",
            "--model-arg", "hidden_list=[8]", "--patch", "8", "--batch-size", "2", "--sample-q", "16",
            "--repeat", "1", "--no-progress", "--steps", "1"]
    with run_folder_lock(tmp_path / "run", "anysr finetune"):  # the first run, still training
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("anysr finetune: error: run is in use by process ") and "\n" not in err
        assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [LOCK_NAME]
    assert main(argv) == 0  # the first run is done: the folder is free
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["anysr.yaml", "final.pt", "last.pt"]
    assert capsys.readouterr().out.strip().endswith("(step 1)")
