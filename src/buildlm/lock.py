"""One writer per folder: an advisory lock beside each folder a command writes.

Two ``buildlm train`` runs with the same name would write the same ``metrics.csv`` and the same
``step-N`` checkpoints, each overwriting the other's, and both would report success. So every
command that writes a run or output folder (``train``, ``finetune``, ``prepare``, ``convert``)
first takes that folder's lock, a small file *beside* the folder (``runs/.NAME.buildlm-lock``
for ``runs/NAME``): beside, because some writers swap the whole folder for a new one.

The file records who holds it (process id, host, command, start time) so a refusal can say
which process to wait for. Holding it is an ``flock`` on the open file, which the operating
system drops the moment the process dies, however it dies: a lock left by a killed run is
never mistaken for a live one. A lock file whose holder is gone is taken over, with a note.
Where ``flock`` does not exist (Windows) the file is created exclusively instead, and a holder
whose process id no longer runs on this host is stale.

The lock is advisory: it stops buildlm processes, not other programs.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from buildlm.errors import FolderInUseError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_SUFFIX = ".buildlm-lock"


def lock_path(folder: str | os.PathLike) -> Path:
    """Where the lock of ``folder`` lives: ``<parent>/.<name>.buildlm-lock``."""
    folder = Path(folder).absolute()
    return folder.with_name(f".{folder.name}{LOCK_SUFFIX}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as running)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except OSError:  # Windows: no such process
        return False
    return True


class FolderLock:
    """The lock of one folder, held from :meth:`acquire` until :meth:`release`.

    Use it as a context manager, or call ``acquire``/``release`` when the folder is held
    across several steps; the lock is also dropped when the object is garbage-collected and,
    in any case, when the process ends.
    """

    def __init__(self, folder: str | os.PathLike, hint: str = "", log=None) -> None:
        self.folder = Path(folder)
        self.path = lock_path(folder)
        self.hint = hint  # how to avoid the clash, e.g. "pick another --train.name"
        self.log = log if log is not None else _note
        self._fd: int | None = None
        self._finalizer: weakref.finalize | None = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> FolderLock:
        """Take the lock, or raise `FolderInUseError` naming the process that holds it."""
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = self._flock() if fcntl is not None else self._exclusive_create()
        previous = _read(fd)
        if previous and previous.get("pid") != os.getpid():
            self.log(
                f"note: took over the lock of {str(self.folder)!r} left by process "
                f"{previous.get('pid')} ({previous.get('command', '?')}), which no longer runs"
            )
        _write(fd, {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": _command(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        })
        self._fd = fd
        self._finalizer = weakref.finalize(self, _drop, fd, str(self.path))
        return self

    def acquire_waiting(self, log=None, poll_s: float = 1.0) -> FolderLock:
        """Take the lock, waiting (with one note) while another process holds it."""
        said = False
        while True:
            try:
                return self.acquire()
            except FolderInUseError as err:
                if not said:
                    (log or self.log)(f"waiting: {err}")
                    said = True
                time.sleep(poll_s)

    def release(self) -> None:
        """Drop the lock and delete its file (a no-op when not held)."""
        if self._finalizer is not None:
            self._finalizer()  # runs _drop once
        self._fd = None
        self._finalizer = None

    # --- the two ways to hold it ---------------------------------------------------------

    def _flock(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise self._in_use(holder) from None
            # The holder may have deleted the file between our open and our flock: then we
            # hold a lock on a name nobody else sees. Start again on the file now there.
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _exclusive_create(self) -> int:
        for _ in range(3):
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    holder = {}
                same_host = holder.get("host") == socket.gethostname()
                if not same_host or pid_alive(int(holder.get("pid", 0))):
                    raise self._in_use(holder) from None
                self.log(
                    f"note: took over the stale lock of {str(self.folder)!r} left by process "
                    f"{holder.get('pid')}, which no longer runs"
                )
                self.path.unlink(missing_ok=True)
        raise self._in_use({})

    def _in_use(self, holder: dict[str, Any]) -> FolderInUseError:
        pid = holder.get("pid", "?")
        who = f"process {pid}"
        if holder.get("host") and holder["host"] != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("command"):
            who += f" ({holder['command']}, since {holder.get('started', '?')})"
        fix = f"wait for it to finish or stop it (kill {pid})"
        if self.hint:
            fix += f", or {self.hint}"
        return FolderInUseError(f"{str(self.folder)!r} is being written by {who}; {fix}")


def _command() -> str:
    """``buildlm train`` for the CLI; the program name and first argument otherwise."""
    argv = [Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "python", *sys.argv[1:2]]
    if argv[0] in ("__main__.py", "-m", "-c"):
        argv[0] = "buildlm"
    return " ".join(argv)


def _note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _read(fd: int) -> dict[str, Any]:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        raw = os.read(fd, 4096)
        return json.loads(raw) if raw.strip() else {}
    except (OSError, ValueError):
        return {}


def _write(fd: int, info: dict[str, Any]) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(info) + "\n").encode("utf-8"))


def _drop(fd: int, path: str) -> None:
    """Delete the lock file, then close it (closing drops the flock).

    Deleting first, while still held, means nobody can take a lock on the name in between.
    (Windows deletes no open file: there it is closed first.)
    """
    steps = (lambda: os.unlink(path), lambda: os.close(fd))
    for step in steps if fcntl is not None else steps[::-1]:
        with contextlib.suppress(OSError):
            step()


def folder_lock(folder: str | os.PathLike, hint: str = "", log=None) -> FolderLock:
    """A `FolderLock` for ``folder``, taken: ``with folder_lock(out, "choose another --out"):``."""
    return FolderLock(folder, hint, log).acquire()
