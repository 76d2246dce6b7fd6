"""Documents from tables: CSV / TSV (a header row, then one record per row) and Parquet.

The text column is ``ReadOptions.field`` (``text`` unless ``--data.field NAME``); a table without
it is refused at once, naming its columns. Both are streamed: CSV row by row, Parquet in batches
of rows of that one column (``pyarrow``; other columns are never read), so memory does not grow
with the file. (Parquet is decoded one row group at a time: memory holds one group's column, a
size the file's writer chose, typically a few to a hundred MB.) A compressed Parquet file (``.parquet.gz``, unusual: Parquet compresses
itself) is first decompressed into a temporary file, because Parquet is read by seeking.
"""

from __future__ import annotations

import csv
import io
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from buildlm.data.compressed import decompress_to, open_binary, split_suffix
from buildlm.data.documents import BadRecords, Document, ReadOptions, record_text

_ROWS_PER_BATCH = 256


def read_csv(path: Path, options: ReadOptions, bad: BadRecords, delimiter: str = ",") -> Iterator[Document]:
    """One document per row of a CSV (``delimiter=","``) or TSV (``"\\t"``) file with a header."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # documents are longer than csv's 128 KB default
    with open_binary(path) as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            return
        except UnicodeDecodeError:
            raise ValueError(f"{path} is not UTF-8 text; convert it to UTF-8") from None
        if options.field not in header:
            raise ValueError(
                f"{path}:1: no {options.field!r} column (its columns: {header}); pass "
                f"{options.flag('field')} NAME to read another column"
            )
        column = header.index(options.field)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except UnicodeDecodeError:
                raise ValueError(f"{path} is not UTF-8 text (after line {reader.line_num}); convert it to UTF-8") from None
            except csv.Error as err:
                raise ValueError(f"{path}:{reader.line_num}: malformed CSV ({err}); fix the quoting") from None
            where = f"{path}:{reader.line_num}"
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                bad.bad(where, f"{len(row)} columns, the header has {len(header)}",
                        "quote fields that contain the delimiter")  # fmt: skip
                continue
            yield Document(row[column], where)


def read_parquet(path: Path, options: ReadOptions, bad: BadRecords) -> Iterator[Document]:
    """One document per row of a Parquet file, reading only the text column, in batches."""
    if split_suffix(path)[1] is not None:
        with tempfile.TemporaryDirectory(prefix="buildlm-parquet-") as tmp:
            yield from _read_parquet(decompress_to(path, Path(tmp) / "data.parquet"), str(path), options, bad)
    else:
        yield from _read_parquet(path, str(path), options, bad)


def _read_parquet(path: Path, name: str, options: ReadOptions, bad: BadRecords) -> Iterator[Document]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"reading {name!r} needs pyarrow: pip install pyarrow") from None
    try:
        # no read-ahead: pyarrow's batch iterator with its defaults holds more and more of a large
        # file (measured: 307 MB peak on a 256 MB file); one row group at a time stays flat
        parquet = pq.ParquetFile(path, pre_buffer=False)
    except Exception as err:  # pyarrow's ArrowInvalid and friends
        raise ValueError(f"{name!r} is not a readable Parquet file ({err})") from None
    columns = parquet.schema_arrow.names
    column = options.field
    if column not in columns:
        if "messages" not in columns:
            raise ValueError(
                f"{name}: no {options.field!r} column (its columns: {columns}); pass "
                f"{options.flag('field')} NAME to read another column"
            )
        column = "messages"
    n = 0
    with parquet:
        for group in range(parquet.num_row_groups):
            table = parquet.read_row_group(group, columns=[column], use_threads=False)
            for batch in table.to_batches(_ROWS_PER_BATCH):
                for value in batch.column(0).to_pylist():
                    n += 1
                    where = f"{name}:row {n}"
                    text = record_text({column: value}, where, options, bad)
                    if text is not None:
                        yield Document(text, where)
            del table
