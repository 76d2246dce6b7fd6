"""Writing folders so that a crash never leaves half of one behind, and nothing of yours is lost.

A model or checkpoint folder is several files (config, weights, tokenizer, optimizer state).
Writing them in place, a crash or a full disk half-way leaves a folder that looks complete and
is not. Instead everything goes into a temporary folder beside the final one, which is renamed
into place only when complete: a rename within one file system is atomic, so the final name
always points at a whole folder (the old one, or the new one). The files are flushed to disk
(``fsync``) before the rename, so even a power cut cannot leave a renamed folder of empty files.

**Writers never delete what they did not write.** How buildlm tells its own files from yours:
every folder `atomic_folder` writes holds a small list of what buildlm put there,
``.buildlm-outputs.json`` (``{"written_by": "buildlm", "files": [...]}``). Only the entries
listed there are buildlm's; everything else in the folder is yours. Writing into an existing
folder then follows three rules:

- a file of yours is never replaced or deleted: if the new output has a file of the same name
  (your own ``config.json``), the write is refused with one line naming it, before anything
  is written; your other files are simply left beside the new ones;
- an earlier buildlm output is replaced only when asked (``force=True``, ``--force`` on the
  command line), and then only the entries its list names;
- a folder holding nothing of yours is swapped whole (atomic); one that also holds your files
  is updated entry by entry, each entry atomically: the list first grows to name the old and
  the new entries (so a crash part-way leaves nothing unaccounted for), the file that marks the
  folder complete (``config.json``, ``manifest.json``) is moved out first and in last.

A folder written before this list existed holds no list, so all its files count as yours:
write to a new folder, or delete the old one yourself.

A process killed mid-write leaves its temporaries behind (``.tmp-<name>-<pid>-<tag>`` folders,
``.tmp-<name>-<pid>`` files, ``.old-<name>-<pid>-<tag>`` folders being deleted, and the
``.<name>.tmp-<pid>`` folders of older ``prepare`` versions). :func:`remove_stale_temporaries`
clears those of processes that no longer run, and only names of these patterns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

OUTPUTS = ".buildlm-outputs.json"
"""The list of entries buildlm wrote into a folder (see the module docstring)."""

_COMPLETES = ("config.json", "manifest.json")  # a folder holding these looks complete
_SHOWN = 5  # file names listed in an error message


def owned_entries(folder: str | os.PathLike) -> set[str]:
    """The entries of ``folder`` that buildlm wrote (listed in its ``.buildlm-outputs.json``)."""
    path = Path(folder) / OUTPUTS
    try:
        listed = json.loads(path.read_text(encoding="utf-8")).get("files", [])
    except (OSError, ValueError, AttributeError):
        return set()
    return {name for name in listed if isinstance(name, str) and (Path(folder) / name).exists()}


def adopt_files(folder: str | os.PathLike, names: Iterable[str]) -> None:
    """Record ``names`` in ``folder`` as buildlm's own: for folders buildlm wrote before it kept
    the list, which a caller recognises by place and names (a run's ``checkpoints/step-N``)."""
    names = set(names) | owned_entries(folder)
    atomic_write_text(Path(folder) / OUTPUTS, _list_text(names))


def foreign_entries(folder: str | os.PathLike) -> set[str]:
    """The entries of ``folder`` that buildlm did not write: the user's."""
    folder = Path(folder)
    if not folder.is_dir():
        return set()
    owned = owned_entries(folder)
    return {p.name for p in folder.iterdir() if p.name not in owned and p.name != OUTPUTS}


def _names(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(n for n in names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _refuse_clash(final: Path, clash: set[str]) -> ValueError:
    return ValueError(
        f"{str(final)!r} already holds {_names(clash)}, which buildlm did not write; buildlm "
        "never replaces files it did not write: choose another folder, or move them away"
    )


@contextmanager
def atomic_folder(
    path: str | os.PathLike, force: bool = False, will_write: Iterable[str] = ()
) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``path`` when the block succeeds.

    On an exception the temporary folder is deleted and ``path`` is untouched. An existing
    ``path`` is handled as the module docstring says: the user's files are kept and never
    overwritten (``ValueError`` naming them), buildlm's earlier output is replaced only with
    ``force``. ``will_write`` names the entries the block will write, so a clash is refused
    before the work starts (it is checked again after). An ``OSError`` without a file name
    (a full disk) gets ``path`` as its file name, so the message says where.
    """
    final = Path(path)
    if final.exists() and not final.is_dir():
        raise NotADirectoryError(f"{str(final)!r} exists and is not a folder")
    owned = owned_entries(final) if final.is_dir() else set()
    foreign = foreign_entries(final)
    if owned and not force:
        kept = f" (your files there, {_names(foreign)}, are kept)" if foreign else ""
        raise ValueError(
            f"{str(final)!r} holds an earlier buildlm output ({_names(owned)}); pass --force "
            f"(force=True) to replace it{kept}, or choose another folder"
        )
    if clash := foreign & set(will_write):
        raise _refuse_clash(final, clash)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = final.with_name(f".tmp-{final.name}-{tag}")
    tmp.mkdir()
    try:
        yield tmp
        written = {p.name for p in tmp.iterdir()} - {OUTPUTS}
        if clash := foreign & written:
            raise _refuse_clash(final, clash)
        _write_list(tmp / OUTPUTS, written)
        _fsync_tree(tmp)
        if not final.exists():
            os.replace(tmp, final)
        elif not foreign:  # nothing of the user's: swap the old folder out, then drop it
            old = final.with_name(f".old-{final.name}-{tag}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            _replace_entries(tmp, final, owned, written)
        _fsync_dir(final.parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        named = _final_name(err.filename, tmp, final)
        if named != err.filename and err.errno is not None:  # the user's name, not our temporary
            raise OSError(err.errno, err.strerror, named) from err
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _final_name(filename: object, tmp: Path, final: Path) -> object:
    """The path the user knows for an error's ``filename``: ``final`` for none or ``tmp``, and
    ``final/x`` for ``tmp/x``; any other name is returned as it is."""
    if filename is None:
        return str(final)
    try:
        return str(final / Path(os.fsdecode(filename)).relative_to(tmp))
    except (TypeError, ValueError):
        return filename


def _list_text(names: Iterable[str]) -> str:
    return json.dumps({"written_by": "buildlm", "files": sorted(names)}, indent=2) + "\n"


def _write_list(path: Path, names: Iterable[str]) -> None:
    path.write_text(_list_text(names), encoding="utf-8")


def _remove_entry(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        remove_folder(path)
    else:
        path.unlink(missing_ok=True)


def _replace_entries(tmp: Path, final: Path, owned: set[str], written: set[str]) -> None:
    """Move ``tmp``'s entries into ``final`` one by one, keeping the user's files there."""
    atomic_write_text(final / OUTPUTS, _list_text(owned | written))
    for name in _COMPLETES:  # the folder stops looking complete first
        if name in owned:
            _remove_entry(final / name)
    for name in sorted(written, key=lambda n: (n in _COMPLETES, n)):  # and looks complete last
        if (final / name).is_dir() and not (final / name).is_symlink():
            remove_folder(final / name)
        os.replace(tmp / name, final / name)
    for name in owned - written:
        _remove_entry(final / name)
    os.replace(tmp / OUTPUTS, final / OUTPUTS)
    tmp.rmdir()


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; it replaces ``path`` when the block succeeds.

    The same idea as `atomic_folder` for one file: readers see the old file or the whole new
    one, never a half-written one. The file is flushed to disk before the rename; on an
    exception it is deleted and ``path`` is untouched; an ``OSError`` that names no file (a
    full disk) gets ``path`` as its file name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)  # the rename itself survives a power cut
    except OSError as err:
        named = _final_name(err.filename, tmp, final)
        if named != err.filename and err.errno is not None:  # the user's name, not our temporary
            raise OSError(err.errno, err.strerror, named) from err
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically (`atomic_file`): the one text writer.

    A temporary file beside ``path`` is written, flushed and ``fsync``-ed, renamed over
    ``path``, and the folder is ``fsync``-ed. A failure part-way (an unencodable character,
    a full disk) leaves the old file as it was. A missing folder is created.
    """
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def json_text(obj: object) -> str:
    """``obj`` as the JSON buildlm writes: indented by two spaces with a final newline, and
    non-ASCII text written as itself (UTF-8), so a person can read config.json and manifest.json."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def atomic_write_json(path: str | os.PathLike, obj: object) -> Path:
    """Write ``obj`` as JSON (`json_text`) to ``path`` atomically (`atomic_write_text`).

    Inside an `atomic_folder` a plain write is enough: the folder is flushed and renamed whole.
    """
    return atomic_write_text(path, json_text(obj))


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


# buildlm's own temporary names (see the module docstring); group "pid" is the writer's process
_TEMPORARIES = (
    re.compile(r"^\.(?:tmp|old)-.+-(?P<pid>\d+)-[0-9a-f]{8}$"),
    re.compile(r"^\.tmp-.+-(?P<pid>\d+)$"),
    re.compile(r"^\..+\.tmp-(?P<pid>\d+)$"),
)


def _temporary_pid(name: str) -> int | None:
    for pattern in _TEMPORARIES:
        if m := pattern.match(name):
            return int(m.group("pid"))
    return None


def remove_stale_temporaries(parent: str | os.PathLike) -> list[Path]:
    """Delete the temporaries in ``parent`` left by buildlm processes that died.

    Returns what was removed. Only names of buildlm's temporary patterns are touched, and only
    those of a process that no longer runs on this machine (another writer's are kept).
    """
    from buildlm.lock import pid_alive

    removed = []
    parent = Path(parent)
    if not parent.is_dir():
        return removed
    for path in parent.iterdir():
        pid = _temporary_pid(path.name)
        if pid is None or pid == os.getpid() or pid_alive(pid):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
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
