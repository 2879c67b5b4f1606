"""Atomic, kind file writes: the one way anysr_plugin writes a file.

Why one place: a checkpoint, an export or a results file must never be left half-written,
and the library writers cannot be trusted on a full disk (``torch.save`` to a path says
"unexpected pos", ``torch.jit.save`` and ``torch.export.save`` to a path abort the whole
process with SIGABRT).  So every writer here

* writes into a temporary file in the target's own folder through a file object of ours
  (``os.write``), never a path handed to a library; serializers known to abort on a failed
  write (TorchScript, ``torch.export``, ONNX) serialize into memory first, then we write;
* checks the written size, syncs it to the disk, gives it the mode a new file gets under the
  user's umask (an overwritten file keeps its own mode), renames it over the target and syncs
  the folder;
* on any failure (``KeyboardInterrupt`` included) removes the temporary file, so the
  previous file at the path is intact; an OS error becomes a typed one-line
  :class:`~anysr_plugin.errors.WriteError` naming the path, and a full disk or quota a
  :class:`~anysr_plugin.errors.DiskFullError` that also names the disk (mount point, file
  system, free space).

A symlinked target is written through: the file it points to is replaced, the link stays.
A device, pipe or socket at the path is never replaced, nor a read-only file; as root the
replaced file keeps its owner.
"""
from __future__ import annotations

import errno as errno_codes
import io
import os
import stat
import tempfile
from pathlib import Path
from typing import Callable, Iterable

from .errors import DiskFullError, OutputExistsError, WriteError

__all__ = ["write_atomic", "write_bytes", "write_text", "refuse_existing", "describe_disk", "new_file_mode",
           "as_write_error"]

#: errno values that mean "the disk (or the user's share of it) is full"
DISK_FULL = {errno_codes.ENOSPC, errno_codes.EFBIG, getattr(errno_codes, "EDQUOT", errno_codes.ENOSPC)}
_BUFFER = 1 << 20


class _Sink(io.RawIOBase):
    """A temporary file written with ``os.write``; remembers the first OS error, because a
    library may turn it into its own message ("unexpected pos") on the way up."""

    def __init__(self, fd: int):
        self.fd, self.error, self.end = fd, None, 0

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return os.lseek(self.fd, 0, os.SEEK_CUR)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self.fd, offset, whence)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self.fd, view[done:])
        except OSError as exc:
            self.error = self.error or exc
            raise
        self.end = max(self.end, self.tell())
        return done


def write_atomic(path, write: Callable) -> Path:
    """Write `path` atomically: ``write(f)`` fills `f`, a binary file object of a temporary file
    in the target's folder (created if missing).  Returns the path written (a symlink's target)."""
    shown = str(path)
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        old = os.stat(target) if target.exists() else None
        _refuse_to_replace(old, shown)
        # a short prefix: the temporary name must fit where a 250-byte target name fits
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:40]}.", suffix=".anysr-tmp", dir=target.parent)
    except WriteError:
        raise
    except OSError as exc:
        raise as_write_error(exc, shown, target.parent) from None
    sink = _Sink(fd)
    try:
        try:
            with io.BufferedWriter(sink, buffer_size=_BUFFER) as f:
                write(f)
                f.flush()
                os.fsync(fd)
                size = os.fstat(fd).st_size
                if size != sink.end:  # a writer that lost bytes without an error
                    raise OSError(errno_codes.EIO, f"wrote {sink.end} bytes but the file holds {size}")
        finally:
            sink.close()  # closed once: by the BufferedWriter on a normal exit, here otherwise
        os.chmod(tmp, new_file_mode() if old is None else stat.S_IMODE(old.st_mode))
        if old is not None and hasattr(os, "geteuid") and os.geteuid() == 0:  # root keeps the file's owner
            os.chown(tmp, old.st_uid, old.st_gid)
        os.replace(tmp, target)
    except BaseException as exc:
        _unlink_quietly(tmp)
        cause = exc if isinstance(exc, OSError) else sink.error
        if cause is not None and not isinstance(exc, (KeyboardInterrupt, SystemExit)):
            raise as_write_error(cause, shown, target.parent) from None
        raise
    _fsync_folder(target.parent)
    return target


def _refuse_to_replace(old, shown: str) -> None:
    """A device, pipe or socket is never replaced by a file (as root, ``-o /dev/null`` would
    delete the device), nor is a file nobody may write (the user protected it)."""
    if old is None:
        return
    if stat.S_ISDIR(old.st_mode):
        raise WriteError(f"cannot write {shown}: it is a folder; give a file path", errno_codes.EISDIR, shown)
    if not stat.S_ISREG(old.st_mode):
        raise WriteError(f"cannot write {shown}: it is not a regular file (a device, pipe or socket); give a file "
                         "path", errno_codes.EINVAL, shown)
    if not old.st_mode & 0o222:
        raise WriteError(f"cannot write {shown}: the file is read-only (mode {stat.S_IMODE(old.st_mode):o}); "
                         "make it writable first if it may be replaced", errno_codes.EACCES, shown)


def write_bytes(path, data: bytes) -> Path:
    """`data` to `path` atomically (see :func:`write_atomic`)."""
    return write_atomic(path, lambda f: f.write(data))


def write_text(path, text: str) -> Path:
    """`text` (UTF-8) to `path` atomically (see :func:`write_atomic`)."""
    return write_bytes(path, text.encode("utf-8"))


def refuse_existing(paths: Iterable, force: bool, option: str, inputs: Iterable = ()) -> None:
    """Refuse, before any work, to write over what a command's outputs (and the companion files
    it writes beside them) would replace: a folder, a device, pipe or read-only file, one of the
    command's `inputs` or the same file twice always; an existing file unless `force`
    (:class:`OutputExistsError` naming every one)."""
    paths = [Path(p) for p in paths if p is not None]
    for out in paths:
        for given in (Path(i) for i in inputs if i is not None):
            if out.exists() and given.exists() and os.path.samefile(out, given):
                raise OutputExistsError(f"{out} is the input file {given}; writing it would destroy the input (even "
                                        f"with --force): choose another {option}")
    folders = [str(p) for p in paths if p.is_dir()]
    if folders:
        raise OutputExistsError(f"{' and '.join(folders)} is a folder where {option} would write a file; "
                                f"give another {option}")
    same = {os.path.abspath(p) for p in paths}
    if len(same) < len(paths):
        raise OutputExistsError(f"{option} would write {', '.join(map(str, paths))}: the same file twice; "
                                f"give another {option}")
    for p in paths:  # a device, pipe or read-only file is never replaced, --force or not: say so before any work
        _refuse_to_replace(os.stat(p) if p.exists() else None, str(p))
    existing = [str(p) for p in paths if p.exists() or p.is_symlink()]
    if existing and not force:
        raise OutputExistsError(f"{' and '.join(existing)} already exist{'s' if len(existing) == 1 else ''}; "
                                f"nothing was overwritten: choose another {option} or pass --force to overwrite")


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file: 0o666 less the process umask."""
    umask = None
    try:
        with open("/proc/self/status") as f:  # Linux: read without changing it (os.umask would, for all threads)
            umask = next((int(ln.split()[1], 8) for ln in f if ln.startswith("Umask:")), None)
    except (OSError, ValueError):
        pass
    if umask is None:
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def describe_disk(folder) -> str:
    """``"the ext4 file system /dev/vda mounted at /, 0 B free"``: which disk holds `folder`."""
    folder = os.path.realpath(folder)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    mount, fstype, source = _mount_of(folder)
    try:
        st = os.statvfs(folder)
        free = f", {_size(st.f_bavail * st.f_frsize)} free of {_size(st.f_blocks * st.f_frsize)}"
    except (OSError, AttributeError):
        free = ""
    if mount is None:
        return f"the disk holding {folder}{free}"
    return f"the {fstype} file system {source} mounted at {mount}{free}"


def _mount_of(folder: str) -> tuple:
    """(mount point, file system type, source) of the longest mount point above `folder` (Linux)."""
    best = (None, None, None)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields, tail = left.split(), right.split()
                if len(fields) < 5 or len(tail) < 2:
                    continue
                mount = fields[4].encode().decode("unicode_escape")  # \040 for a space
                inside = folder == mount or folder.startswith(mount.rstrip("/") + "/")
                if inside and (best[0] is None or len(mount) >= len(best[0])):
                    best = (mount, tail[0], tail[1])
    except OSError:
        pass
    return best


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def as_write_error(exc: OSError, shown: str, folder) -> WriteError:
    """`exc`, raised while writing `shown` in `folder`, as a typed one-line error; a full disk or
    quota names the disk."""
    kept = f"{shown} is unchanged and no partial file was left"
    code = exc.errno
    if code in DISK_FULL:
        why = {errno_codes.EFBIG: "the file is too large for"}.get(code, "no space left on")
        if code == getattr(errno_codes, "EDQUOT", None):
            why = "your disk quota is exceeded on"
        return DiskFullError(f"cannot write {shown}: {why} {describe_disk(folder)}; {kept}: free some space "
                             "or write elsewhere", code, shown)
    return WriteError(f"cannot write {shown}: {exc.strerror or exc}; {kept}", code, shown)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_folder(folder) -> None:
    """Make the rename durable; some file systems cannot fsync a folder, which is not an error."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
