"""Inputs -> token shards on disk, streamed, in parallel, for corpora larger than memory.

Training reads token ids millions of times, so we tokenize once and store the ids as a flat
binary array (``train.bin``, ``val.bin``) that ``numpy.memmap`` maps straight from disk: a batch
touches only its own windows, never the whole file. Ids are stored as ``uint16`` when the vocabulary
fits (<= 65,536 ids; half the disk and page cache of ``uint32``), else ``uint32``.

How the text is cut into blocks that tokenize separately to the ids of the whole document, and
why that is safe, is told in ``cuts.py``. Every source (a file, one work of a bundled corpus, one
record of a JSONL file, ...) is a *document*; each document ends with ``<|endoftext|>``, and the
last ``val_fraction`` of each document's bytes goes to the validation split.

Memory stays bounded whatever the size of the corpus: cuts are found by reading 64 KB windows,
a worker reads only its own block from disk, and at most ``2 * num_workers`` blocks are in
flight (submitted or waiting to be written) at a time; blocks are written in order.

Outputs are written into a temporary folder and renamed into place, ``manifest.json`` last:
a folder with a manifest is always complete. Files of yours in the output folder are kept and
never overwritten; an earlier output is replaced only with ``force`` (`buildlm.atomic`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from buildlm.atomic import atomic_folder, atomic_write_json
from buildlm.data.cuts import Piece, Source, plan_pieces, safe_cut  # noqa: F401 - re-exported
from buildlm.data.documents import BadRecords, ReadOptions

MANIFEST = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
EOT = "<|endoftext|>"


# --- the worker side: each process holds one tokenizer --------------------------------------

_WORKER_TOKENIZER: Any = None


def _init_worker(tokenizer: Any) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _read_piece(piece: Piece) -> str:
    with piece.source.open() as f:
        f.seek(piece.start)
        raw = f.read(piece.end - piece.start)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{piece.source.name} is not UTF-8 text (bad byte at offset {piece.start + err.start}); "
            "convert it to UTF-8 first"
        ) from None


def _encode_piece(piece: Any, tokenizer: Any = None) -> tuple[Any, int]:
    """``(ids, bytes)`` of a `Piece`; ``([ids per segment], bytes)`` of a `buildlm.data.work.Batch`."""
    tokenizer = tokenizer if tokenizer is not None else _WORKER_TOKENIZER
    if not isinstance(piece, Piece):  # a Batch: its segments' text came with it
        ids = [np.asarray(tokenizer.encode_ordinary(s.data.decode("utf-8")), dtype=np.uint32) for s in piece.segments]
        return ids, piece.size
    text = _read_piece(piece)
    ids = np.asarray(tokenizer.encode_ordinary(text), dtype=np.uint32)
    return ids, piece.end - piece.start


# --- the main side -------------------------------------------------------------------------


def load_tokenizer(spec: Any) -> Any:
    """A Tokenizer from ``"gpt2"``, a ``tokenizer.json`` path, or a Tokenizer (returned as is)."""
    if not isinstance(spec, (str, os.PathLike)):
        return spec
    from buildlm.tokenizer import Tokenizer

    if str(spec) == "gpt2":
        return Tokenizer.pretrained("gpt2")
    path = Path(spec)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"tokenizer {str(spec)!r} not found; pass 'gpt2' or a tokenizer.json written by "
            "`buildlm tokenizer train`"
        )
    return Tokenizer.load(path)


def eot_id(tokenizer: Any) -> int:
    """The id of ``<|endoftext|>``; a tokenizer without it cannot separate documents."""
    special = getattr(tokenizer, "special_tokens", None)
    if isinstance(special, dict) and EOT in special:
        return int(special[EOT])
    try:
        ids = tokenizer.encode(EOT, allowed_special="all")
    except (ValueError, KeyError):
        ids = []
    if len(ids) != 1:
        raise ValueError(
            f"the tokenizer has no {EOT} special token to separate documents; train it with "
            f"special_tokens=('{EOT}',)"
        )
    return int(ids[0])


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits in 16 bits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def _encoded(
    pieces: Iterable[Piece], tokenizer: Any, num_workers: int
) -> Iterator[tuple[Piece, np.ndarray, int]]:
    """``(piece, ids, n_bytes)`` for each piece, in order, tokenized by ``num_workers`` processes.

    At most ``2 * num_workers`` pieces are in flight: the next piece is submitted only when the
    oldest result is taken, so a slow writer makes the workers wait instead of letting results
    pile up in memory (``Executor.map`` would submit every piece at once). Pieces are drawn from
    ``pieces`` lazily, as they are submitted.
    """
    pieces = iter(pieces)
    if num_workers <= 1:
        for piece in pieces:
            yield piece, *_encode_piece(piece, tokenizer)
        return
    pool = ProcessPoolExecutor(num_workers, initializer=_init_worker, initargs=(tokenizer,))
    in_flight: deque[tuple[Piece, Future]] = deque()
    try:
        for piece in pieces:
            in_flight.append((piece, pool.submit(_encode_piece, piece)))
            if len(in_flight) < 2 * num_workers:
                continue
            piece, future = in_flight.popleft()
            yield piece, *future.result()
        while in_flight:
            piece, future = in_flight.popleft()
            yield piece, *future.result()
    finally:  # also when the consumer stops early or a piece fails: drop the queued work
        pool.shutdown(wait=True, cancel_futures=True)


def prepare_shards(
    inputs: Sequence[str | os.PathLike] | str,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    val_fraction: float = 0.1,
    num_workers: int | None = None,
    block_bytes: int = 1 << 20,
    progress: bool = True,
    force: bool = False,
    read: ReadOptions | None = None,
    max_documents: int | None = None,
    max_tokens: int | None = None,
    log=print,
) -> dict:
    """Tokenize ``inputs`` into ``out_dir/{train,val}.bin`` + ``manifest.json`` + ``tokenizer.json``.

    Returns the manifest. ``inputs`` are files of any format `buildlm.data.inputs` reads, folders,
    globs, ``hf:NAME`` or bundled corpus names; ``read`` says how records become documents.
    ``tokenizer`` is ``"gpt2"``, a ``tokenizer.json`` path or a Tokenizer. Reading stops after
    the document that reaches ``max_documents`` documents or ``max_tokens`` tokens in all.
    Other files in ``out_dir`` are kept, and never overwritten; an earlier ``prepare`` output
    there is replaced only with ``force`` (`buildlm.atomic.atomic_folder`).
    """
    from buildlm.data.inputs import expand_inputs
    from buildlm.data.work import work_items

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if block_bytes < 1:
        raise ValueError(f"block_bytes must be positive, got {block_bytes}")
    for name, limit in (("max_documents", max_documents), ("max_tokens", max_tokens)):
        if limit is not None and limit < 1:
            raise ValueError(f"{name} must be >= 1 (or None for no limit), got {limit}")
    read = read or ReadOptions()
    tokenizer_spec = str(tokenizer) if isinstance(tokenizer, (str, os.PathLike)) else "object"
    tokenizer = load_tokenizer(tokenizer)
    items = expand_inputs(inputs)
    eot = eot_id(tokenizer)
    dtype = token_dtype(tokenizer.vocab_size)
    bad = BadRecords(read)
    num_workers = min(num_workers or os.cpu_count() or 1, _most_pieces(items, val_fraction, block_bytes))

    splits = ("train", "val")
    outputs = (*(f"{s}.bin" for s in splits), TOKENIZER_FILE, MANIFEST)
    sources: list[dict] = []
    with atomic_folder(out_dir, force=force, will_write=outputs) as tmp:
        stats = {s: {"file": f"{s}.bin", "tokens": 0, "bytes": 0, "documents": 0} for s in splits}
        with ExitStack() as stack:
            files = {s: stack.enter_context(open(tmp / f"{s}.bin", "wb")) for s in splits}
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="buildlm-prepare-")))
            bar = stack.enter_context(_progress_bar(_known_bytes(items), progress))
            work = work_items(items, read, bad, val_fraction, block_bytes, scratch, sources)
            documents = tokens = 0
            for item, ids, _ in _encoded(work, tokenizer, num_workers):
                for split, seg_ids, n_bytes, last, doc_end in _segments(item, ids):
                    if last:
                        seg_ids = np.append(seg_ids, np.uint32(eot))
                        stats[split]["documents"] += 1
                    files[split].write(seg_ids.astype(dtype).tobytes())
                    stats[split]["tokens"] += int(seg_ids.size)
                    stats[split]["bytes"] += n_bytes
                    tokens += int(seg_ids.size)
                    documents += doc_end
                    bar.update(n_bytes)
                    if doc_end and _reached(documents, tokens, max_documents, max_tokens):
                        break
                else:
                    bar.set_postfix_str(_rates(bar, documents, tokens), refresh=False)
                    continue
                break  # a limit was reached: the rest is not read
        if stats["train"]["tokens"] == 0:
            raise ValueError("the inputs hold no text to train on")
        if val_fraction > 0 and stats["val"]["tokens"] == 0:
            total = stats["train"]["bytes"]
            raise ValueError(
                f"the inputs ({total:,} bytes) are too short to hold out val_fraction="
                f"{val_fraction} for validation: the last {val_fraction:.0%} of a document must "
                "start at a line break or a space between words; use longer inputs, a larger "
                "--val-fraction, or --val-fraction 0 for none"
            )
        tokenizer.save(tmp / TOKENIZER_FILE)
        manifest = {
            "format": "buildlm-shards",
            "version": 1,
            "dtype": dtype.name,
            "vocab_size": int(tokenizer.vocab_size),
            "eot_id": eot,
            "tokenizer": TOKENIZER_FILE,
            "tokenizer_source": tokenizer_spec,
            "val_fraction": val_fraction,
            "splits": stats,
            "sources": sources,
        }
        if bad.count:
            manifest["skipped_records"] = bad.count
        atomic_write_json(tmp / MANIFEST, manifest)
    if bad.count:
        log(bad.summary())
    return manifest


def _segments(item: Any, ids: Any) -> Iterator[tuple[str, np.ndarray, int, bool, bool]]:
    """``(split, ids, bytes, last in split, end of document)`` of a tokenized Piece or Batch."""
    if isinstance(item, Piece):
        yield item.split, ids, item.end - item.start, item.last, item.doc_end
        return
    for segment, seg_ids in zip(item.segments, ids, strict=True):
        yield segment.split, seg_ids, len(segment.data), segment.last, segment.doc_end


def _reached(documents: int, tokens: int, max_documents: int | None, max_tokens: int | None) -> bool:
    return bool((max_documents and documents >= max_documents) or (max_tokens and tokens >= max_tokens))


def _most_pieces(items: Sequence[Any], val_fraction: float, block_bytes: int) -> int:
    """An upper bound on the work items of ``items`` (workers beyond it would idle)."""
    if any(i.kind not in ("text", "corpus") for i in items):
        return 1 << 30
    per_file = 2 if val_fraction else 1
    return sum(per_file + os.path.getsize(i.name) // block_bytes if i.kind == "text" else 64 for i in items)


def _known_bytes(items: Sequence[Any]) -> int | None:
    """The total text size when every input is a plain file (the progress bar's end), else None."""
    if any(i.kind != "text" for i in items):
        return None
    return sum(os.path.getsize(i.name) for i in items)


def _progress_bar(total: int | None, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="tokenizing", disable=not enabled)


def _rates(bar: Any, documents: int, tokens: int) -> str:
    """Documents and tokens so far, and tokens per second, for the progress bar."""
    elapsed = max(bar.format_dict.get("elapsed", 0.0), 1e-9)
    return f"{documents:,} docs, {tokens:,} tokens, {tokens / elapsed:,.0f} tok/s"


def load_manifest(data_dir: str | os.PathLike) -> dict:
    """The manifest of a prepared data folder; a clear error when the folder is not one."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} not found: {str(data_dir)!r} is not a prepared data folder; run "
            "`buildlm prepare --input ... --out DIR` first"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["splits"], manifest["dtype"]  # noqa: B018 - check the keys exist
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{str(path)!r} is not a valid shard manifest ({err}); run prepare again") from None
    return manifest


def load_split(data_dir: str | os.PathLike, split: str = "train") -> np.ndarray:
    """The token ids of one split as a read-only memmap (no data is read until used)."""
    manifest = load_manifest(data_dir)
    if split not in manifest["splits"]:
        raise ValueError(f"split {split!r} not in {str(data_dir)!r}; have {sorted(manifest['splits'])}")
    info = manifest["splits"][split]
    path = Path(data_dir) / info["file"]
    dtype = np.dtype(manifest["dtype"])
    expected = info["tokens"] * dtype.itemsize
    if not path.is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is missing though {str(Path(data_dir) / MANIFEST)!r} lists it; "
            "run `buildlm prepare` again"
        )
    actual = path.stat().st_size
    if actual != expected:
        raise ValueError(
            f"{str(path)!r} holds {actual} bytes but the manifest says {expected}; the shard is "
            "truncated or was replaced; run `buildlm prepare` again"
        )
    if info["tokens"] == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def iter_documents(tokens: Iterable[int], eot: int) -> Iterator[list[int]]:
    """Split a token stream back into documents at ``<|endoftext|>`` (for inspection and tests)."""
    doc: list[int] = []
    for t in tokens:
        if int(t) == eot:
            yield doc
            doc = []
        else:
            doc.append(int(t))
    if doc:
        yield doc
