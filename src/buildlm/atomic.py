"""Writing folders so that a crash never leaves half of one behind.

A model or checkpoint folder is several files (config, weights, tokenizer, optimizer state).
Writing them in place, a crash or a full disk half-way leaves a folder that looks complete and
is not. Instead everything goes into a temporary folder beside the final one, which is renamed
into place only when complete: a rename within one file system is atomic, so the final name
always points at a whole folder (the old one, or the new one). The files are flushed to disk
(``fsync``) before the rename, so even a power cut cannot leave a renamed folder of empty files.

A process killed mid-write leaves its temporary folder behind (``.tmp-<name>-<pid>-...``);
:func:`remove_stale_temporaries` clears those of processes that no longer run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` when the block succeeds.

    On an exception the temporary folder is deleted and ``path`` is untouched. An existing
    ``path`` is replaced only if it is empty or a model folder (has a config.json): a folder of
    other files is never deleted. An existing folder is swapped out, then dropped.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(f"{str(final)!r} exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not (final / "config.json").is_file():
        raise ValueError(
            f"{str(final)!r} already holds files that are not a model; choose another folder"
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = final.with_name(f".tmp-{final.name}-{tag}")
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        if final.exists():  # swap the old folder out, then drop it
            old = final.with_name(f".old-{final.name}-{tag}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` when the block succeeds.

    The same idea as `atomic_folder` for one file: readers see the old file or the whole new
    one, never a half-written one. The file is flushed to disk before the rename; on an
    exception it is deleted and ``path`` is untouched.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    """Make a folder's entries (a rename into it) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(parent: str | os.PathLike) -> list[Path]:
    """Delete the ``.tmp-*`` / ``.old-*`` folders in ``parent`` left by processes that died.

    Returns what was removed. Folders of a process that still runs (another writer) are kept.
    """
    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        if not (path.name.startswith((".tmp-", ".old-")) and path.is_dir()):
            continue
        try:
            pid = int(path.name.rsplit("-", 2)[-2])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def remove_folder(path: str | os.PathLike) -> None:
    """Delete a folder so that it vanishes at once: renamed away first, then deleted.

    A crash during the deletion leaves a ``.old-*`` folder, never a half-deleted one under the
    original name (which, for a checkpoint, would look like a checkpoint).
    """
    path = Path(path)
    doomed = path.with_name(f".old-{path.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
