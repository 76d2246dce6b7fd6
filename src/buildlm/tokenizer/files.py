"""Reading a file the user named: gzip, UTF-8 and JSON, each problem one line naming the file.

Every tokenizer format reads its files through these two functions, so a missing, truncated or
non-UTF-8 file is reported the same way whatever the format. (Writing goes through
`buildlm.atomic.atomic_write_text`: a reader sees the old file or the whole new one.)
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path


def read_text(path: str | os.PathLike) -> str:
    """The UTF-8 text of a file, decompressing it first when its name ends in ``.gz``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {str(path)!r}")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: not a valid gzip file ({err})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def read_json(path: str | os.PathLike) -> object:
    """Parsed JSON; invalid JSON raises ``ValueError`` naming the file."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path}: not valid JSON ({err}); the file is corrupted or truncated"
        ) from None
