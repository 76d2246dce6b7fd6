"""The exceptions a user can cause, so the CLI can tell them from bugs.

Library code raises the ordinary built-ins a Python user expects (``ValueError``,
``FileNotFoundError``); their message always names the bad value and how to fix it. The CLI
turns these into one line on stderr and a non-zero exit; anything else is a bug and keeps its
traceback.

A full disk, a read-only folder or a file-size limit is not a bug either, but Python reports it
as a bare ``OSError`` (``[Errno 28] No space left on device``) that names neither the file nor
what to do. :func:`storage_error_message` turns those into one line that does.
"""

from __future__ import annotations

import errno
import os


class FolderInUseError(RuntimeError):
    """Another running buildlm process holds the folder's lock (`buildlm.lock`)."""


USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
    UnicodeDecodeError,
    KeyError,
    FloatingPointError,  # a run whose loss diverged (buildlm.train.trainer.NonFiniteLossError)
    FolderInUseError,
)

# errno -> (what happened, what to do about it)
_STORAGE_ERRORS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on the device", "free some space, or write to another disk"),
    errno.EDQUOT: ("the disk quota is used up", "free some space, or write to another disk"),
    errno.EFBIG: (
        "the file grew past the size limit (ulimit -f, or the file system's largest file)",
        "raise the limit (ulimit -f unlimited), or write to another disk",
    ),
    errno.EROFS: ("the file system is read-only", "write to a folder on a writable disk"),
    errno.EACCES: ("permission denied", "use a file or folder you own, or fix its permissions"),
    errno.EPERM: ("operation not permitted", "use a file or folder you own, or fix its permissions"),
}


def storage_error_message(err: BaseException) -> str | None:
    """One line for a disk-full / read-only / permission ``OSError``, else ``None`` (a bug).

    The line names the file or folder (``err.filename``; writers in `buildlm.atomic` attach the
    folder they were writing when the OS does not say) and the fix.
    """
    if not isinstance(err, OSError) or err.errno not in _STORAGE_ERRORS:
        return None
    what, fix = _STORAGE_ERRORS[err.errno]
    where = f"{str(err.filename)!r}: " if err.filename else ""
    return f"{where}{what}; {fix}"


def undecodable_file(path: str | os.PathLike, err: UnicodeDecodeError) -> ValueError:
    """The one-line error for a file that is not UTF-8 text, naming the file, the first bad
    byte and the fix (Python's own message names neither the file nor what to do)."""
    bad = err.object[err.start : err.start + 1].hex() if isinstance(err.object, bytes) else "?"
    return ValueError(
        f"{str(path)!r} is not UTF-8 text (it holds the byte 0x{bad}); save it as "
        "UTF-8, e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`"
    )
