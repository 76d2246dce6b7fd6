"""Damaged checkpoints: telling them apart, setting them aside, resuming from the newest good one.

Checkpoints are written atomically (`buildlm.atomic`), so a crash mid-save cannot damage one.
A disk error, a copy cut short, or a hand-edited file can. Without care, one damaged folder
stops a run twice: ``--resume RUN`` picks the newest checkpoint and fails on it, and when the
run resumes from an earlier one and comes back to that step, the damaged folder blocks the save.

So, before resuming, each checkpoint is checked, newest first, cheaply and without loading it:

- ``config.json`` parses and holds the model config;
- ``model.safetensors`` has a whole header and is as long as the header says;
- ``trainer_state.pt`` (what resuming needs) is a whole zip archive (``torch.save``'s format
  keeps its directory at the end, so a cut-short file is caught).

A damaged one is **moved aside, never deleted**: ``step-0000100`` becomes
``step-0000100.damaged`` (a name no loader picks up), the run says which one and why, and
resumes from the newest good checkpoint. The files stay for you to inspect or delete.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

from buildlm.checkpoint_format import (
    CONFIG,
    TRAINER_STATE,
    WEIGHTS,
    list_checkpoints,
    read_config,
    resolve_checkpoint,
)

DAMAGED = ".damaged"


def checkpoint_problem(folder: str | os.PathLike, resumable: bool = True) -> str | None:
    """Why checkpoint ``folder`` cannot be used (to resume, when ``resumable``), or ``None``."""
    folder = Path(folder)
    if not (folder / CONFIG).is_file():
        return f"it has no {CONFIG}"
    try:
        read_config(folder)
    except ValueError as err:
        return str(err)
    problem = safetensors_problem(folder / WEIGHTS)
    if problem is None and resumable:
        problem = zip_problem(folder / TRAINER_STATE)
    return problem


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file, or ``None`` (reads only the header)."""
    if not path.is_file():
        return f"{path.name} is missing"
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if 8 + header_len > size:
                return f"{path.name} is cut short (its header runs past the end)"
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error) as err:
        return f"{path.name} is not a safetensors file ({type(err).__name__})"
    if 8 + header_len + end > size:
        return f"{path.name} is cut short ({size:,} bytes of {8 + header_len + end:,})"
    return None


def zip_problem(path: Path) -> str | None:
    """Why ``path`` (a ``torch.save`` file) is not a whole archive, or ``None``."""
    if not path.is_file():
        return f"{path.name} is missing (the checkpoint holds weights only)"
    try:
        with zipfile.ZipFile(path) as archive:
            size = path.stat().st_size
            if any(info.header_offset + info.compress_size > size for info in archive.infolist()):
                return f"{path.name} is cut short"
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        return f"{path.name} is truncated or damaged ({err})"
    return None


def set_aside(folder: str | os.PathLike, why: str, log=None) -> Path:
    """Rename damaged ``folder`` to ``<folder>.damaged`` (``.damaged-2``, ... if taken)."""
    folder = Path(folder)
    target = folder.with_name(folder.name + DAMAGED)
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}{DAMAGED}-{n}")
    os.replace(folder, target)
    if log is not None:
        log(f"skipped damaged checkpoint {folder} ({why}); moved it aside to {target.name}")
    return target


def resolve_resumable(path: str | os.PathLike, log=print, set_aside_damaged: bool = True) -> Path:
    """The checkpoint to resume: ``path`` itself, or a run folder's newest *good* checkpoint.

    Damaged checkpoints of the run, newer than the good one, are set aside (see the module
    docstring) with a note through ``log``; with ``set_aside_damaged=False`` they are only
    passed over (for a look before the run folder's lock is held). A checkpoint folder given by
    name is returned as is: resuming from it then fails with what is wrong with it.
    """
    path = Path(path)
    if (path / CONFIG).is_file() or not path.is_dir():
        return resolve_checkpoint(path)
    found = list_checkpoints(path)
    skipped = []
    for folder in reversed(found):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        if set_aside_damaged:
            set_aside(folder, problem, log)
        skipped.append(f"{folder.name}: {problem}")
    if not found:
        return resolve_checkpoint(path)  # raises: no checkpoint at all
    raise ValueError(
        f"run folder {str(path)!r} holds no checkpoint that can be resumed ({'; '.join(skipped)}); "
        "start a new run"
    )
