"""The work of `buildlm prepare`, in order: blocks of text for the tokenizer workers.

Two kinds of work item, both cut at the same safe places (`buildlm.data.cuts.safe_cut`) so
either gives the ids of tokenizing each document whole:

- a `buildlm.data.cuts.Piece`: a byte range of a plain text file on disk (or of a bundled
  corpus). The worker reads it from the file itself, so the main process never touches the text:
  the fast road for big ``.txt`` files. A compressed text file (``.txt.gz``, ``.txt.zst``) is
  first decompressed into a scratch folder and then read the same way;
- a `Batch`: the text of one or more documents from a reader (JSONL, JSON, CSV, Parquet, a
  Hugging Face dataset). Documents are gathered until the batch holds about ``block_bytes``;
  a long document is cut into several segments, each split into its train and val part exactly
  as a text file would be. The batch carries its text to the worker.

:func:`work_items` yields them lazily, one input after another, so the readers run only as far
ahead of the writer as the pool's in-flight limit lets them: memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from buildlm.data.cuts import Piece, Source, plan_pieces
from buildlm.data.documents import BadRecords, ReadOptions
from buildlm.data.inputs import Input, iter_documents


@dataclass(frozen=True)
class Segment:
    """Text of one document for one split; ``last``: its last in that split (append
    ``<|endoftext|>``); ``doc_end``: the document's last segment of all."""

    split: str
    data: bytes
    last: bool
    doc_end: bool


@dataclass(frozen=True)
class Batch:
    """Segments of consecutive documents, tokenized together by one worker."""

    segments: tuple[Segment, ...]

    @property
    def size(self) -> int:
        return sum(len(s.data) for s in self.segments)


def document_segments(source: Source, val_fraction: float, block_bytes: int) -> list[Segment]:
    """A document in memory cut like a file: train blocks, then val blocks."""
    pieces = plan_pieces([source], val_fraction, block_bytes)
    data = source.data or b""
    return [
        Segment(p.split, data[p.start : p.end], p.last, i == len(pieces) - 1)
        for i, p in enumerate(pieces)
    ]


def work_items(
    items: Sequence[Input],
    options: ReadOptions,
    bad: BadRecords,
    val_fraction: float,
    block_bytes: int,
    scratch: Path,
    sources: list[dict],
) -> Iterator[Piece | Batch]:
    """Pieces and batches of every input, in order; ``sources`` gets one entry per input read."""
    for n, item in enumerate(items):
        if item.kind in ("text", "corpus") or (item.kind == "records" and item.fmt == ".txt"):
            for source in _text_sources(item, scratch / f"{n}.txt"):
                sources.append({"name": source.name, "bytes": source.size()})
                yield from plan_pieces([source], val_fraction, block_bytes)
            continue
        entry = {"name": item.name, "bytes": 0, "documents": 0}
        sources.append(entry)
        pending: list[Segment] = []
        size = 0
        for doc in iter_documents(item, options, bad):
            data = _utf8(doc.text)
            entry["bytes"] += len(data)
            entry["documents"] += 1
            for segment in document_segments(Source(doc.where, data=data), val_fraction, block_bytes):
                pending.append(segment)
                size += len(segment.data)
                if size >= block_bytes:
                    yield Batch(tuple(pending))
                    pending, size = [], 0
        if pending:
            yield Batch(tuple(pending))


def _text_sources(item: Input, scratch: Path) -> list[Source]:
    if item.kind == "corpus":
        from buildlm.data.corpora import corpus_documents

        return [Source(f"{item.name}/{name}", data=text.encode("utf-8")) for name, text in corpus_documents(item.name).items()]
    if item.kind == "records":  # compressed text: decompressed to disk, then read like a file
        from buildlm.data.compressed import decompress_to

        return [Source(item.name, path=str(decompress_to(item.name, scratch)))]
    return [Source(item.name, path=item.name)]


def _utf8(text: str) -> bytes:
    """UTF-8 bytes of ``text``; lone surrogates (from JSON such as "\\ud800") become U+FFFD,
    as the tokenizer itself would encode them."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode("utf-8")
