"""Read fine-tuning examples from JSONL, JSON, CSV or TSV files, remembering where each came from.

Every example is a dict (one JSON object, or one CSV/TSV row keyed by the header) together with
``where``: ``"path:line"``. A bad example anywhere downstream (a missing field, a label outside
the label set) then raises an error that names the exact line to fix.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildlm.atomic import atomic_write_text

FORMATS = (".jsonl", ".json", ".csv", ".tsv")


@dataclass
class Record:
    """One example as read from a file, and its location (``"file:line"``)."""

    data: dict[str, Any]
    where: str

    def get_str(self, key: str, required: bool = True, default: str = "") -> str:
        """The field ``key`` as a string; a missing or non-string field is a clear error."""
        if key not in self.data or self.data[key] is None:
            if required:
                raise ValueError(
                    f"{self.where}: the example has no {key!r} field (its fields: "
                    f"{sorted(self.data)})"
                )
            return default
        value = self.data[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ValueError(f"{self.where}: field {key!r} must be a string, got {type(value).__name__}")
        return value


def read_records(path: str | os.PathLike) -> list[Record]:
    """Every example of a ``.jsonl``, ``.json`` (a list of objects), ``.csv`` or ``.tsv`` file.

    Blank JSONL lines are skipped. A malformed line raises ``ValueError`` naming the file and
    line number; an empty file raises too (fine-tuning on nothing is always a mistake).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} not found")
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(
            f"{str(path)!r}: unknown data format {suffix or '(no suffix)'!r}; use one of {', '.join(FORMATS)}"
        )
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        records = _read_jsonl(path, text)
    elif suffix == ".json":
        records = _read_json(path, text)
    else:
        records = _read_table(path, text, "\t" if suffix == ".tsv" else ",")
    if not records:
        raise ValueError(f"{str(path)!r} holds no examples; the dataset is empty")
    return records


def _read_jsonl(path: Path, text: str) -> list[Record]:
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{n}: malformed JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}:{n}: each line must be a JSON object, got {type(obj).__name__}")
        out.append(Record(obj, f"{path}:{n}"))
    return out


def _read_json(path: Path, text: str) -> list[Record]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg} at column {err.colno})") from None
    if isinstance(obj, dict):  # {"data": [...]} or similar: the one list inside
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ValueError(f"{path}: expected a JSON list of examples (or JSONL, one per line)")
        obj = lists[0]
    if not isinstance(obj, list):
        raise ValueError(f"{path}: expected a JSON list of examples, got {type(obj).__name__}")
    out = []
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise ValueError(f"{path}: example {i} must be a JSON object, got {type(item).__name__}")
        out.append(Record(item, f"{path}:example {i}"))
    return out


def _read_table(path: Path, text: str, delimiter: str) -> list[Record]:
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return []
    header = [h.strip() for h in header]
    out = []
    for row in reader:
        n = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(
                f"{path}:{n}: {len(row)} columns, the header has {len(header)} ({header}); "
                "quote fields that contain the delimiter"
            )
        out.append(Record(dict(zip(header, row, strict=True)), f"{path}:{n}"))
    return out


def records_from_dicts(items: list[dict[str, Any]], source: str) -> list[Record]:
    """In-memory examples (the bundled datasets) as records, numbered from 1."""
    return [Record(item, f"{source}:{i}") for i, item in enumerate(items, start=1)]


def write_jsonl(items: list[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write dicts as JSONL, atomically (temporary file, then rename)."""
    text = "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
    return atomic_write_text(path, text)
