"""What ``--input`` / ``--data.inputs`` may name, and which reader reads each: the dispatcher.

An input is one of:

- a bundled corpus name (``shakespeare``, ``the-verdict``);
- a file, chosen by its suffix after any ``.gz`` / ``.zst``: ``.jsonl``, ``.json``, ``.csv``,
  ``.tsv``, ``.parquet``; anything else (``.txt``, ``.md``, no suffix) is plain text, the whole
  file one document;
- a folder: every file in it (recursively, sorted by path) with one of those suffixes
  (``.txt`` for text), or, when it holds a dataset saved by ``datasets``, that dataset;
- a glob pattern (``"data/*.jsonl.gz"``, ``"books/**/*.txt"``), its matches sorted;
- ``hf:NAME``: a Hugging Face dataset (`buildlm.data.read_hf`).

:func:`expand_inputs` resolves them into `Input` items (checking that each exists, before any
work); :func:`iter_documents` reads one as `Document` s. Plain text files on disk take a faster
road in `buildlm.data.shards`: workers read their own blocks of the file, nothing passes through
the main process.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildlm.data.compressed import split_suffix
from buildlm.data.corpora import corpus_documents, is_corpus_name, list_corpora
from buildlm.data.documents import BadRecords, Document, ReadOptions
from buildlm.data.read_hf import PREFIX, is_hf_spec, is_saved_dataset

RECORD_FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
FOLDER_FORMATS = (".txt", *RECORD_FORMATS)


@dataclass(frozen=True)
class Input:
    """One input: ``kind`` is "text" (a plain file), "corpus", "records" (a structured or
    compressed file) or "hf"; ``fmt`` the format suffix; ``compression`` gzip, zstd or None."""

    name: str
    kind: str
    fmt: str = ""
    compression: str | None = None


def classify_file(path: Path) -> Input:
    fmt, compression = split_suffix(path)
    if fmt in RECORD_FORMATS or compression is not None:
        return Input(str(path), "records", fmt if fmt in RECORD_FORMATS else ".txt", compression)
    return Input(str(path), "text", fmt)


def expand_inputs(inputs: Sequence[str | os.PathLike] | str | os.PathLike) -> list[Input]:
    """The inputs as `Input` items, in order; a clear error for one that names nothing."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    out: list[Input] = []
    for item in inputs:
        if is_hf_spec(item):
            out.append(Input(str(item), "hf"))
            continue
        if is_corpus_name(item):
            out.append(Input(str(item), "corpus"))
            continue
        path = Path(item)
        if path.is_dir():
            if is_saved_dataset(path):
                out.append(Input(PREFIX + str(path), "hf"))
                continue
            files = sorted(p for p in path.rglob("*") if p.is_file() and split_suffix(p)[0] in FOLDER_FORMATS)
            if not files:
                raise FileNotFoundError(
                    f"folder {str(path)!r} holds no files to read ({', '.join(f'*{s}' for s in FOLDER_FORMATS)}, "
                    "also .gz / .zst)"
                )
            out += [classify_file(p) for p in files]
        elif path.is_file():
            out.append(classify_file(path))
        elif any(c in str(item) for c in "*?["):
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            files = [p for p in matches if p.is_file()]
            if not files:
                raise FileNotFoundError(f"the pattern {str(item)!r} matches no files")
            out += [classify_file(p) for p in files]
        else:
            raise FileNotFoundError(
                f"input {str(item)!r} is neither a file, a folder, a glob pattern, hf:NAME, nor a "
                f"bundled corpus ({', '.join(list_corpora())})"
            )
    if not out:
        raise ValueError("no inputs given; pass files, folders, globs, hf:NAME or a bundled corpus name")
    return out


def iter_documents(item: Input, options: ReadOptions, bad: BadRecords) -> Iterator[Document]:
    """The documents of one input, read lazily."""
    if item.kind == "corpus":
        for name, text in corpus_documents(item.name).items():
            yield Document(text, f"{item.name}/{name}")
        return
    if item.kind == "hf":
        from buildlm.data.read_hf import read_hf

        yield from read_hf(item.name, options, bad)
        return
    path = Path(item.name)
    if item.kind == "text" or item.fmt == ".txt":
        yield Document(_read_text(path), str(path))
    elif item.fmt == ".jsonl":
        from buildlm.data.read_json import read_jsonl

        yield from read_jsonl(path, options, bad)
    elif item.fmt == ".json":
        from buildlm.data.read_json import read_json

        yield from read_json(path, options, bad)
    elif item.fmt in (".csv", ".tsv"):
        from buildlm.data.read_table import read_csv

        yield from read_csv(path, options, bad, "\t" if item.fmt == ".tsv" else ",")
    else:
        from buildlm.data.read_table import read_parquet

        yield from read_parquet(path, options, bad)


def _read_text(path: Path) -> str:
    from buildlm.data.compressed import open_binary

    with open_binary(path) as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {err.start}); convert it to UTF-8 first") from None


def training_texts(items: Sequence[Input], options: ReadOptions, max_documents: int | None = None) -> Iterator[str | Path]:
    """What a BPE tokenizer learns from: plain files as paths (streamed by the trainer), the
    documents of every other input as strings, lazily; at most ``max_documents`` in all."""
    count = 0
    bad = BadRecords(dataclasses.replace(options, on_error="skip"))  # prepare reports them
    for item in items:
        if item.kind == "text":
            docs: Iterator[str | Path] = iter([Path(item.name)])
        elif item.kind == "corpus":  # one text, as the tokenizers of earlier runs learned it
            from buildlm.data.corpora import load_corpus

            docs = iter([load_corpus(item.name)])
        else:
            docs = (d.text for d in iter_documents(item, options, bad))
        for doc in docs:
            if max_documents is not None and count >= max_documents:
                return
            count += 1
            yield doc


def fingerprint(items: Sequence[Input]) -> list[list]:
    """What the prepared shards depend on, for a cache key: each file's path, size and time."""
    out: list[list] = []
    for item in items:
        if item.kind == "corpus":
            out.append(["corpus", item.name])
            continue
        path = Path(item.name[len(PREFIX):] if item.kind == "hf" else item.name)
        if item.kind == "hf" and not path.exists():
            out.append(["hf", item.name])  # a Hub dataset: its name (it is not re-checked)
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            st = f.stat()
            out.append([str(f.resolve()), st.st_size, st.st_mtime_ns])
    return out
