"""The speed machinery behind ``Tokenizer.encode``: same ids as the plain loop, many times faster.

``bpe.py`` encodes a text the plain way: cut it into chunks, merge each chunk by itself
(``Tokenizer.encode_chunk``). This file does the same work faster, and the tests check that
both give the same ids on real text. Four tricks, each explained where it is done:

- **A chunk cache** (:class:`ChunkCache`). Real text repeats the same chunks (``" the"``,
  ``","``) over and over, so each distinct chunk is encoded once and remembered; a chunk that is
  itself a token needs one dictionary lookup. Encoding a whole text is then one C-level pass of
  cache lookups (:meth:`FastEncoder.encode`), with no Python loop per chunk.
- **Batched merging.** The new chunks that need merging are collected during that pass
  (*placeholders*) and then merged all together with numpy (``merge.BatchMerger``).
- **A garbage-collector pause** during long passes (:meth:`FastEncoder.encode`).
- **A process pool** for large batches of texts (:func:`encode_batch`).

The cache is shared by every thread that uses one tokenizer, so a lock guards each pass; after a
``fork`` the child gets a fresh lock and drops any half-done pass it inherited.
"""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from buildlm.tokenizer.merge import LARGE_CHUNK, BatchMerger, merge_large

# Chunks longer than this many characters are encoded but not remembered (a 1 MB run of spaces
# would otherwise sit in the cache).
CACHE_MAX_CHUNK = 256
# Passes over at least this many chunks pause the garbage collector (see `FastEncoder.encode`).
GC_PAUSE_MIN_CHUNKS = 4096
# Batches shorter than this in total are encoded in this process; starting workers costs more.
PARALLEL_MIN_CHARS = 1_000_000


class _NeedsMerging(Exception):
    """A pass met a new chunk that needs merging (see :meth:`FastEncoder.encode`)."""

    def __init__(self, chunk: str) -> None:
        super().__init__(chunk)
        self.chunk = chunk


class ChunkCache(dict):
    """``chunk -> ids``, filling itself on a miss (``__missing__``) and clearing when full.

    Being a ``dict`` subclass, lookups through ``cache.__getitem__`` stay in C; only a miss runs
    Python code. Clearing everything when full is cruder than LRU but costs nothing per lookup.

    A miss is answered at once when the chunk is a token by itself (the common case) or long.
    Any other chunk needs merging, and merging many chunks together is far faster than one by
    one (``merge.BatchMerger``). So a miss on such a chunk either stops the pass
    (:class:`_NeedsMerging`), or, while ``collecting`` is on, stores an empty list, a
    *placeholder*, and notes the chunk. After the pass, :meth:`fill` merges all noted chunks
    and fills their placeholders in place, which completes the pass's results and the cache.
    """

    def __init__(self, ranks: dict[bytes, int], max_entries: int, merger: BatchMerger) -> None:
        super().__init__()
        self.ranks = ranks
        self.max_entries = max_entries
        self.merger = merger
        self.collecting = False
        # The chunks waiting for fill(), their bytes and their placeholders.
        self.pending: list[str] = []
        self.pending_pieces: list[bytes] = []
        self.placeholders: list[list[int]] = []

    def __missing__(self, chunk: str) -> Sequence[int]:
        piece = chunk.encode("utf-8")
        token = self.ranks.get(piece)
        if token is not None:
            ids: Sequence[int] = (token,)
        elif len(piece) > LARGE_CHUNK:
            ids = merge_large(piece, self.ranks)
        elif not self.collecting:
            raise _NeedsMerging(chunk)
        else:
            ids = []  # filled by fill() once the pass has met every new chunk
            self.pending.append(chunk)
            self.pending_pieces.append(piece)
            self.placeholders.append(ids)
        if len(chunk) <= CACHE_MAX_CHUNK:
            if len(self) >= self.max_entries:
                self.clear()
            self[chunk] = ids
        return ids

    def fill(self) -> None:
        """Merge the chunks noted since the last call and fill their placeholders."""
        self.merger.merge_into(self.pending_pieces, self.placeholders)
        self._forget_pending()

    def discard_pending(self) -> None:
        """Forget the placeholders of a pass that failed, so no empty entry stays cached."""
        for chunk, ids in zip(self.pending, self.placeholders, strict=True):
            if self.get(chunk) is ids:
                del self[chunk]
        self._forget_pending()

    def _forget_pending(self) -> None:
        self.pending.clear()
        self.pending_pieces.clear()
        self.placeholders.clear()


class FastEncoder:
    """Chunks -> ids through a :class:`ChunkCache`, merging new chunks in batches.

    Args:
        ranks: token bytes -> id (the lowest id where two ids hold the same bytes).
        cache_size: how many distinct chunks to remember before the cache is cleared.
        merger: merges the new chunks of a pass together; ``BatchMerger(ranks)`` by default.

    One encoder may serve many threads: a lock makes each pass see only whole cache entries.
    """

    def __init__(
        self, ranks: dict[bytes, int], cache_size: int, merger: BatchMerger | None = None
    ) -> None:
        self.cache = ChunkCache(ranks, cache_size, merger or BatchMerger(ranks))
        self._lock = threading.Lock()
        _LIVE.add(self)

    def encode(self, chunks: list[str]) -> list[int]:
        """The ids of the chunks, in order: the same as merging each chunk by itself."""
        if len(chunks) < GC_PAUSE_MIN_CHUNKS or not gc.isenabled():
            return self._lookup(chunks)
        # Python's cyclic garbage collector runs after every 700 new container objects. A cold
        # pass creates tens of thousands (the cache's new entries), and the first runs walk
        # the young objects, which include the million-item lists of chunks and of results;
        # now and then a run walks every object of the process. That cost 5-10% of a cold
        # encode of Shakespeare. Nothing made here can form a reference cycle, so the collector
        # pauses for a long pass and resumes when it ends. (It is one switch for the whole
        # process: other threads' garbage waits, and a thread that turned the collector off
        # meanwhile would find it back on.)
        gc.disable()
        try:
            return self._lookup(chunks)
        finally:
            gc.enable()

    def _lookup(self, chunks: list[str]) -> list[int]:
        # The hot loop, kept in C: `map` looks every chunk up in the cache (a miss runs
        # `ChunkCache.__missing__`), `map(ids.extend, ...)` appends each chunk's ids, and `any`
        # just drives the iteration (extend returns None, so `any` never stops early). It is
        # the same as `for chunk in chunks: ids.extend(cache[chunk])`, without a Python-level loop.
        # It stops at the first new chunk that needs merging (a warm cache meets none). The
        # chunks from there on are looked up while the cache is `collecting`: each new chunk
        # that needs merging gets a placeholder, and `fill` merges them all together and fills
        # the placeholders, which completes `results`. The lock keeps other threads from
        # reading placeholders before `fill`.
        cache = self.cache
        ids: list[int] = []
        rest = iter(chunks)
        with self._lock:
            try:
                any(map(ids.extend, map(cache.__getitem__, rest)))
                return ids
            except _NeedsMerging as stop:
                first = stop.chunk  # taken from `rest`, not looked up yet
            cache.collecting = True
            try:
                results = [cache[first]]
                results += map(cache.__getitem__, rest)
                cache.fill()
            except BaseException:
                cache.discard_pending()
                raise
            finally:
                cache.collecting = False
        any(map(ids.extend, results))
        return ids

    def _after_fork(self) -> None:
        # A forked child gets a copy of this process's memory, which another thread may have
        # been encoding into (its lock held, placeholders pending): start clean.
        self._lock = threading.Lock()
        self.cache.discard_pending()
        self.cache.collecting = False


_LIVE: weakref.WeakSet[FastEncoder] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for encoder in list(_LIVE):
        encoder._after_fork()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_reset_after_fork)


def encode_batch(
    encode: Callable[[str], list[int]], texts: Sequence[str], num_workers: int | None
) -> list[list[int]]:
    """``encode`` each text; large batches are split over a pool of worker processes.

    ``encode`` is picklable (a tokenizer's ``encode`` with its settings bound) and is sent to
    the workers. ``num_workers`` defaults to the number of CPUs. Batches under
    ``PARALLEL_MIN_CHARS`` stay in this process, where starting workers would cost more than
    it saves.
    """
    texts = list(texts)
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    workers = min(num_workers, len(texts))
    if workers <= 1 or sum(map(len, texts)) < PARALLEL_MIN_CHARS:
        return [encode(t) for t in texts]
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(encode,)) as pool:
        return list(
            pool.map(_encode_in_worker, texts, chunksize=max(1, len(texts) // (4 * workers)))
        )


_WORKER_ENCODE: Callable[[str], list[int]] | None = None


def _init_worker(encode: Callable[[str], list[int]]) -> None:
    global _WORKER_ENCODE
    _WORKER_ENCODE = encode


def _encode_in_worker(text: str) -> list[int]:
    assert _WORKER_ENCODE is not None
    return _WORKER_ENCODE(text)
