"""Documents from JSON Lines (``.jsonl``: one object per line) and JSON (``.json``: a list).

Both are read as streams: a JSONL file line by line, a JSON list one item at a time (the list is
never held whole), so memory stays small whatever the file's size. Each object's text is taken
by `buildlm.data.documents.record_text` (a ``text`` field, another one, or chat ``messages``),
and every document remembers its line, so a bad one is named exactly: ``data.jsonl:17``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from buildlm.data.compressed import open_binary
from buildlm.data.documents import BadRecords, Document, ReadOptions, record_text

_CHUNK = 1 << 20  # characters of a JSON list read at a time


def read_jsonl(path: Path, options: ReadOptions, bad: BadRecords) -> Iterator[Document]:
    """One document per non-blank line of a (possibly compressed) JSONL file."""
    with open_binary(path) as f:
        for n, raw in enumerate(f, start=1):
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.bad(where, "the line is not UTF-8 text", "convert the file to UTF-8")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                bad.bad(where, f"malformed JSON ({err.msg} at column {err.colno})",
                        "fix the line: each line must be one complete JSON object")  # fmt: skip
                continue
            text = record_text(obj, where, options, bad)
            if text is not None:
                yield Document(text, where)


def read_json(path: Path, options: ReadOptions, bad: BadRecords) -> Iterator[Document]:
    """One document per item of a JSON list (or of the one list inside a top-level object)."""
    for n, (line, item) in enumerate(iter_json_list(path), start=0):
        where = f"{path}:{line} (item {n})"
        text = record_text(item, where, options, bad)
        if text is not None:
            yield Document(text, where)


def iter_json_list(path: Path) -> Iterator[tuple[int, Any]]:
    """``(line, item)`` for each item of the file's top-level JSON list, parsed incrementally.

    The text is read in 1 MB chunks; ``json.JSONDecoder.raw_decode`` parses one item at a time
    from a buffer, which is refilled when an item runs past its end. A file holding an object
    instead (``{"data": [...]}``) is read whole and its one list used.
    """
    decoder = json.JSONDecoder()
    with open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
        buf, pos, line, eof = "", 0, 1, False

        def more() -> bool:  # read another chunk; False at the end of the file
            nonlocal buf, pos, eof
            chunk = f.read(_CHUNK)
            if not chunk:
                eof = True
                return False
            buf, pos = buf[pos:] + chunk, 0  # drop what was parsed
            return True

        def skip_space() -> str:  # the next non-space character ("" at the end)
            nonlocal pos, line
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n":
                    line += buf[pos] == "\n"
                    pos += 1
                if pos < len(buf) or not more():
                    return buf[pos] if pos < len(buf) else ""

        def fail(what: str) -> ValueError:
            return ValueError(f"{path}:{line}: malformed JSON ({what}); fix the file, or write one object per line as JSONL")

        try:
            first = skip_space()
            if first == "{":  # an object: the one list inside it
                while more():
                    pass
                try:
                    obj = json.loads(buf)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno}); fix the file") from None
                lists = [v for v in obj.values() if isinstance(v, list)]
                if len(lists) != 1:
                    raise ValueError(f"{path}: expected a JSON list of records (or JSONL, one per line)")
                yield from ((1, item) for item in lists[0])
                return
            if first != "[":
                raise fail(f"expected a list '[' of records, found {first or 'nothing'!r}")
            pos += 1
            if skip_space() == "]":
                return
            while True:
                skip_space()
                while True:
                    try:
                        item, end = decoder.raw_decode(buf, pos)
                        # a number cut by the chunk's end ("2.5" of "2.5e10") may go on: keep
                        # some text after every item in the buffer before trusting its end
                        if len(buf) - end < 64 and not eof and more():
                            continue
                        break
                    except json.JSONDecodeError as err:
                        if not eof and more():
                            continue
                        raise fail(f"{err.msg}") from None
                start_line = line
                line += buf.count("\n", pos, end)
                pos = end
                yield start_line, item
                sep = skip_space()
                if sep == "]":
                    return
                if sep != ",":
                    raise fail(f"expected ',' or ']' after an item, found {sep or 'the end of the file'!r}")
                pos += 1
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text; convert it to UTF-8") from None
