"""Files compressed with gzip (``.gz``) or Zstandard (``.zst``), read as if they were not.

Every reader of `buildlm.data.documents` opens its file through :func:`open_binary`, so each
format also works compressed: ``books.txt.gz``, ``chats.jsonl.zst``, ``table.csv.gz``. The
format is the suffix under the compression suffix (:func:`split_suffix`). Decompression streams:
only a small window of the file is in memory at a time, whatever its size.

Zstandard needs the ``zstandard`` package (``pip install zstandard``, part of ``buildlm[data]``);
gzip is in Python's standard library.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
from pathlib import Path

COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}


def split_suffix(path: str | os.PathLike) -> tuple[str, str | None]:
    """(format suffix, compression) of a file name: ``a.jsonl.gz`` -> ``(".jsonl", "gzip")``."""
    path = Path(path)
    suffixes = [s.lower() for s in path.suffixes]
    compression = COMPRESSIONS.get(suffixes[-1]) if suffixes else None
    if compression is not None:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), compression


def open_binary(path: str | os.PathLike) -> io.BufferedIOBase:
    """The file's bytes, decompressed on the fly when its name ends in ``.gz`` or ``.zst``."""
    _, compression = split_suffix(path)
    if compression == "gzip":
        return gzip.open(path, "rb")
    if compression == "zstd":
        try:
            import zstandard
        except ImportError:
            raise ValueError(
                f"{str(path)!r} is Zstandard-compressed; install the zstandard package "
                "(pip install zstandard) or decompress it first (zstd -d)"
            ) from None
        raw = open(path, "rb")  # noqa: SIM115 - closed by the reader (closefd)
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True, closefd=True)
        return io.BufferedReader(reader, buffer_size=1 << 20)
    return open(path, "rb")


def decompress_to(path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Write the decompressed bytes of ``path`` to ``dest`` (streamed); return ``dest``."""
    try:
        with open_binary(path) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except (OSError, EOFError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"{str(path)!r} could not be decompressed ({err}); is the file complete?") from None
    return Path(dest)
