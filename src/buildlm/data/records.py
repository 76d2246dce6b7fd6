"""Read fine-tuning examples from JSONL, JSON, CSV, TSV or Parquet files, remembering where each came from.

Every example is a dict (one JSON object, or one CSV/TSV/Parquet row keyed by its column names)
together with ``where``: ``"path:line"`` (``"path:row 3"`` for Parquet). A bad example anywhere
downstream (a missing field, a label outside the label set) then raises an error that names the
exact line to fix. Each format may also be gzip- or zstd-compressed (``train.jsonl.gz``,
`buildlm.data.compressed`).

Datasets name their fields differently (``question`` / ``answer`` where a task reads
``instruction`` / ``output``); ``fields`` maps the names a task reads to the file's
(``{"instruction": "question", "output": "answer"}``, the ``--fields`` flag of ``buildlm
finetune``), so every task reads every dataset without rewriting it.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildlm.atomic import atomic_write_text
from buildlm.data.compressed import open_binary, split_suffix

FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


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
                    f"{sorted(self.data)}); {field_hint(key)}"
                )
            return default
        value = self.data[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise ValueError(f"{self.where}: field {key!r} must be a string, got {type(value).__name__}")
        return value


def field_hint(key: str) -> str:
    """The fix for a missing field: map one of the file's fields to it."""
    return f"to read another field as {key!r}, pass --fields '{{\"{key}\": \"NAME\"}}'"


def read_records(path: str | os.PathLike, fields: Mapping[str, str] | None = None) -> list[Record]:
    """Every example of a ``.jsonl``, ``.json`` (a list of objects), ``.csv``, ``.tsv`` or
    ``.parquet`` file, each possibly ``.gz`` / ``.zst`` compressed, or of the train split of a
    Hugging Face dataset (``hf:NAME``, or ``hf:/local/folder``; `buildlm.data.read_hf`).

    ``fields`` maps the field names a task reads to the file's (see the module docstring).
    Blank JSONL lines are skipped. A malformed line raises ``ValueError`` naming the file and
    line number; an empty file raises too (fine-tuning on nothing is always a mistake).
    """
    if str(path).startswith("hf:"):  # a Hugging Face dataset (its train split), or a local one
        from buildlm.data.documents import ReadOptions
        from buildlm.data.read_hf import open_hf

        rows = open_hf(str(path), ReadOptions())
        records = [Record(dict(row), f"{path}[train]:row {n}") for n, row in enumerate(rows, start=1)]
        if not records:
            raise ValueError(f"{str(path)!r} holds no examples; the dataset is empty")
        return [rename_fields(r, fields) for r in records] if fields else records
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} not found")
    suffix, _ = split_suffix(path)
    if suffix not in FORMATS:
        raise ValueError(
            f"{str(path)!r}: unknown data format {suffix or '(no suffix)'!r}; use one of "
            f"{', '.join(FORMATS)} (also .gz or .zst compressed)"
        )
    if suffix == ".parquet":
        records = _read_parquet(path)
    else:
        with open_binary(path) as f:
            try:
                text = f.read().decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {err.start}); convert it to UTF-8") from None
        if suffix == ".jsonl":
            records = _read_jsonl(path, text)
        elif suffix == ".json":
            records = _read_json(path, text)
        else:
            records = _read_table(path, text, "\t" if suffix == ".tsv" else ",")
    if not records:
        raise ValueError(f"{str(path)!r} holds no examples; the dataset is empty")
    if fields:
        records = [rename_fields(r, fields) for r in records]
    return records


def rename_fields(record: Record, fields: Mapping[str, str]) -> Record:
    """``record`` with each field ``fields[name]`` of the file also readable as ``name``."""
    data = dict(record.data)
    for wanted, actual in fields.items():
        if actual in record.data:
            data[wanted] = record.data[actual]
    return Record(data, record.where)


def _read_parquet(path: Path) -> list[Record]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"reading {str(path)!r} needs pyarrow: pip install pyarrow") from None
    if split_suffix(path)[1] is not None:  # compressed: Parquet needs to seek, so read it whole
        with open_binary(path) as f:
            table = pq.read_table(io.BytesIO(f.read()))
    else:
        table = pq.read_table(path)
    return [Record(row, f"{path}:row {n}") for n, row in enumerate(table.to_pylist(), start=1)]


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
    # a file object, not text.splitlines(): a quoted field may hold line breaks of its own
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
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
