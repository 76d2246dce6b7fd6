"""Writing folders so that a crash never leaves half of one behind.

A model or checkpoint folder is several files (config, weights, tokenizer, optimizer state).
Writing them in place, a crash or a full disk half-way leaves a folder that looks complete and
is not. Instead everything goes into a temporary folder beside the final one, which is renamed
into place only when complete: a rename within one file system is atomic, so the final name
always points at a whole folder (the old one, or the new one).
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
        if final.exists():  # swap the old folder out, then drop it
            old = final.with_name(f".old-{final.name}-{tag}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
