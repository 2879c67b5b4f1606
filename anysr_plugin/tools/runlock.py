"""One run per output folder: a lock file naming its owner.

Why: two ``anysr finetune`` runs into one ``--out`` both wrote ``last.pt`` and both said
``done``; only one run survived.  A run now holds ``OUT/.anysr.lock`` (JSON: pid, host,
command, start time) for as long as it writes there; a second run is refused with the
owner named.  The lock is an ``flock`` on that file, which the OS releases when its
process dies, so a lock file left by a killed run is recognised as stale and taken over
with one line saying so.  (Where ``fcntl`` is missing, a lock whose pid no longer runs on
this host counts as stale.)
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from pathlib import Path

from ..runtime.errors import RunLockedError, WriteError
from ..runtime.files import as_write_error

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK_NAME = ".anysr.lock"

__all__ = ["run_folder_lock", "LOCK_NAME"]


@contextlib.contextmanager
def run_folder_lock(folder, command: str, say=None):
    """Hold `folder`'s lock while the block runs (the folder is created if missing, and removed
    again on the way out when it was created here and is still empty).  ``RunLockedError``
    when another live process holds it; `say` (default: stderr) gets the one line about a
    stale lock taken over."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WriteError(f"{folder} exists and is not a folder; give a folder for the run's files", None, folder)
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise as_write_error(exc, str(folder), folder.parent) from None
    path = folder / LOCK_NAME
    fd = None
    try:
        fd, stale = _acquire(path, folder, command)
        if stale:
            (say or _stderr)(f"{command}: {folder} was locked by {_owner(stale)}, which is no longer running: "
                             "taking the lock over")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, json.dumps(me).encode())
        except OSError as exc:
            raise as_write_error(exc, str(path), folder) from None
        yield path
    finally:
        if fd is not None:
            _release(fd, path)
        if created:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: a refused or failed first run leaves no trace


def _acquire(path: Path, folder: Path, command: str) -> tuple:
    """``(fd, previous owner or None)`` with the lock held."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:  # a read-only folder, a full disk
            raise as_write_error(exc, str(path), folder) from None
        previous = _read(fd)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise RunLockedError(_busy(folder, command, previous)) from None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if not same:  # the owner removed the file between our open and flock: try again
                os.close(fd)
                continue
            return fd, (_read(fd) or None)
        if previous and previous.get("host") == socket.gethostname() and _alive(previous.get("pid")):
            os.close(fd)
            raise RunLockedError(_busy(folder, command, previous))
        return fd, previous or None


def _release(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            os.unlink(path)
    os.close(fd)  # closing drops the flock


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}  # a damaged lock file still belongs to someone
    return data if isinstance(data, dict) else {"pid": "?", "host": "?"}


def _owner(info: dict) -> str:
    return (f"process {info.get('pid', '?')} on {info.get('host', '?')} ({info.get('command', 'anysr')}, "
            f"started {info.get('started', '?')})")


def _busy(folder: Path, command: str, owner: dict) -> str:
    return (f"{folder} is in use by {_owner(owner)}; two runs writing one folder would overwrite each other's "
            f"files: wait for it to finish or give another output folder (the lock is {folder / LOCK_NAME})")


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError, TypeError):
        return False
    except PermissionError:
        return True
    return True


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
