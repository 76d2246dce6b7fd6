"""Where a document may be cut into blocks that tokenize separately to the same ids.

How the text is cut, and why it is safe:

- every source (a file, or one work of a bundled corpus) is a *document*; each document ends
  with ``<|endoftext|>`` so the model learns where texts stop;
- the last ``val_fraction`` of each document's bytes goes to the validation split, so every
  source is represented in both splits and the val text is never seen in training;
- documents are read in blocks of about 1 MB, each tokenized by a worker process. A block only
  ever ends at a *safe cut*: just after a newline that has a printable non-space ASCII
  character on both sides (``"good.\nEMILIA"``), or, in a stretch of text (64 KB) that holds
  no such newline, just before a single space between two ASCII letters (``"of| the"``). The
  GPT-2, cl100k and o200k pre-tokenization regexes never build a chunk across such a spot, and
  BPE never merges across chunks, so tokenizing the blocks separately gives exactly the ids of
  tokenizing the whole document at once. (A newline after whitespace is *not* safe: GPT-2's
  regex reads ``"\n\nX"`` as ``"\n"``, ``"\n"``, ``"X"`` but a block ending in ``"\n\n"``
  as one ``"\n\n"`` chunk, a different token. Nor is ``"\r\n"``, for the same reason; the
  space rule keeps files with Windows line ends, and text with no line breaks, cut into blocks.)
  The validation split starts at a safe cut too.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

# Safe places to cut the text (see the module docstring): after a newline with a printable
# non-space ASCII character on both sides; else before a single space between two ASCII letters.
_LINE_CUT = re.compile(rb"[\x21-\x7e]\n[\x21-\x7e]")  # cut at match start + 2
_WORD_CUT = re.compile(rb"[A-Za-z] [A-Za-z]")  # cut at match start + 1
_CUT_WINDOW = 1 << 16  # bytes read at a time while looking for a cut


@dataclass(frozen=True)
class Source:
    """One document: a file on disk, or a text held in memory (a work of a bundled corpus)."""

    name: str
    path: str | None = None
    data: bytes | None = None

    def open(self) -> io.BufferedIOBase:
        return open(self.path, "rb") if self.path is not None else io.BytesIO(self.data)

    def size(self) -> int:
        return os.path.getsize(self.path) if self.path is not None else len(self.data)


@dataclass(frozen=True)
class Piece:
    """A block of one document's bytes, ``[start, end)``, to tokenize for one split."""

    source: Source
    split: str
    start: int
    end: int
    last: bool  # the last block of this document in this split: append <|endoftext|>
    doc_end: bool = False  # the last block of this document of all


def safe_cut(f: io.BufferedIOBase, pos: int, size: int) -> int:
    """The first safe cut at or after byte ``pos`` (see the module docstring), or ``size``.

    The file is read in 64 KB windows (overlapping by 2 bytes, so no cut is missed at their
    seams); a line cut anywhere in a window is preferred to a word cut in it.
    """
    if pos <= 0:
        return 0
    start = max(pos - 2, 0)
    while start < size:
        f.seek(start)
        window = f.read(_CUT_WINDOW)
        line = _LINE_CUT.search(window, max(pos - 2 - start, 0))
        if line is not None:
            return min(start + line.start() + 2, size)
        word = _WORD_CUT.search(window, max(pos - 1 - start, 0))
        if word is not None:
            return min(start + word.start() + 1, size)
        if len(window) < _CUT_WINDOW:
            break
        start += len(window) - 2
    return size


def plan_pieces(sources: Sequence[Source], val_fraction: float, block_bytes: int) -> list[Piece]:
    """Cut every document into train and val blocks at safe places."""
    pieces: list[Piece] = []
    for source in sources:
        size = source.size()
        with source.open() as f:
            split_at = safe_cut(f, round(size * (1.0 - val_fraction)), size) if val_fraction else size
            for split, lo, hi in (("train", 0, split_at), ("val", split_at, size)):
                if hi <= lo:
                    continue
                cuts = [lo]
                while cuts[-1] < hi:
                    nxt = safe_cut(f, cuts[-1] + block_bytes, hi) if cuts[-1] + block_bytes < hi else hi
                    cuts.append(nxt)
                for i, (a, b) in enumerate(pairwise(cuts)):
                    pieces.append(Piece(source, split, a, b, last=i == len(cuts) - 2))
        if pieces and pieces[-1].source is source:
            pieces[-1] = dataclasses.replace(pieces[-1], doc_end=True)
    return pieces
