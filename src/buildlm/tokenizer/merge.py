"""Applying learned merges to one pre-tokenized chunk: the heart of BPE *encoding*.

A byte-level BPE vocabulary maps byte strings to ids ("ranks"). Ids 0..255 (in some order) are
the 256 single bytes, so any text can be written down; every later id is a longer byte string
that training created by merging two earlier tokens. The lower the rank, the earlier the merge
was learned, i.e. the more frequent the pair was in the training corpus.

To encode a chunk we replay training on it: start from single bytes and, again and again, merge
the adjacent pair whose concatenation has the *lowest* rank, until no adjacent pair is in the
vocabulary. Merging in rank order (not left to right, not "longest token first") matters: it is
the order training created the tokens in, so it reproduces the segmentations the model saw. Ties
go to the leftmost pair. This is exactly tiktoken's rule, so the ids are identical to tiktoken's.

Two implementations, one result:

- :func:`merge_small` keeps a list of parts and a parallel list of pair ranks, and after each
  merge recomputes only the two pair ranks next to it. Finding the minimum is one C-level
  ``min`` over the list, so for the short chunks of real text (a word, a number) it is the
  fastest. Its cost grows with the square of the chunk length.
- :func:`merge_large` keeps the parts as a linked list (arrays of offsets) and the candidate
  pairs in a heap keyed by (rank, start offset), so each merge costs O(log n): a 1 MB chunk (a
  run of one character, say) takes seconds instead of hours. Heap entries that a merge made
  stale are detected when popped and skipped ("lazy deletion"). It is used for chunks longer
  than ``LARGE_CHUNK`` bytes.

Both return ids; :func:`split_parts` exposes the merged byte strings, from which
:func:`merges_from_ranks` recovers the ordered merges of a rank table (a tiktoken file has none).

An optimisation, same result: :class:`BatchMerger` runs :func:`merge_small`'s loop for *many*
chunks at once with numpy. Encoding a fresh text meets tens of thousands of distinct chunks that
are not tokens by themselves; merging them one by one costs a couple of microseconds of Python
per merge, while one numpy operation handles a merge step of every chunk together. The rule is
unchanged (lowest rank first, leftmost on ties), so the ids are the same; the tests check that.
"""

from __future__ import annotations

import sys
from bisect import bisect_right
from heapq import heapify, heappop, heappush
from itertools import accumulate, repeat
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported on first use, so that importing the tokenizer stays quick
    import numpy as np

# Chunks longer than this (in bytes) go to the O(n log n) heap version.
LARGE_CHUNK = 128

_INF = sys.maxsize
_SINGLE_BYTES = [bytes([b]) for b in range(256)]


def split_parts(piece: bytes, ranks: dict[bytes, int], max_rank: int = _INF) -> list[bytes]:
    """Merge ``piece`` with the lowest-rank-first rule, using only tokens of rank < ``max_rank``.

    Returns the final parts (byte strings). With ``max_rank`` set to a token's own rank this
    recovers the pair that created the token (see :func:`merges_from_ranks`).
    """
    parts = list(map(_SINGLE_BYTES.__getitem__, piece))
    get = ranks.get
    # pair_ranks[i] is the rank of parts[i] + parts[i + 1] (or "infinity" if not a token)
    pair_ranks = [get(a + b, _INF) for a, b in zip(parts, parts[1:], strict=False)]
    while pair_ranks:
        best = min(pair_ranks)
        if best >= max_rank:
            break
        i = pair_ranks.index(best)  # leftmost pair on ties
        parts[i] += parts[i + 1]
        del parts[i + 1]
        del pair_ranks[i]
        if i > 0:
            pair_ranks[i - 1] = get(parts[i - 1] + parts[i], _INF)
        if i < len(pair_ranks):
            pair_ranks[i] = get(parts[i] + parts[i + 1], _INF)
    return parts


def merge_small(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one chunk (quadratic in its length; fastest for short chunks)."""
    return list(map(ranks.__getitem__, split_parts(piece, ranks)))


def merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Recover the ordered merges from a rank table (the standard way, as tiktoken's docs do).

    For every multi-byte token in rank order, run BPE on its bytes allowing only tokens of lower
    rank; BPE stops exactly one merge short of the token, leaving the two parts that made it.
    """
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = split_parts(token, ranks, max_rank=rank)
        if len(parts) != 2:
            raise ValueError(
                f"token {token!r} (rank {rank}) cannot be built by merging two lower-ranked tokens; "
                "this rank table is not a BPE merge list"
            )
        merges.append((parts[0], parts[1]))
    return merges


def merge_large(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one chunk in O(n log n): heap of candidate pairs over a linked list of parts.

    A part is named by its start offset ``s`` and spans ``piece[s:end[s]]``; ``prev[s]`` is the
    start of the part before it. A heap entry proposes merging the part at ``s`` with its right
    neighbour, whose concatenation has rank ``rank``; it is stored as the single integer
    ``rank * (n + 1) + s`` (integers compare much faster than tuples), so the heap pops the
    lowest rank first and, on ties, the leftmost pair, like :func:`merge_small`. Offsets never
    move and parts only grow, so a popped entry is still valid exactly when the part at ``s`` is
    alive and its pair with the right neighbour still has that rank (a different span would be
    different bytes, hence a different rank); stale entries are skipped ("lazy deletion").
    """
    n = len(piece)
    get = ranks.get
    width = n + 1
    end = list(range(1, n + 1))  # end[s]: end of the part starting at s; -1 once merged away
    prev = list(range(-1, n - 1))
    heap = [rank * width + s for s in range(n - 1) if (rank := get(piece[s : s + 2])) is not None]
    heapify(heap)
    while heap:
        rank, s = divmod(heappop(heap), width)
        mid = end[s]
        if mid == -1 or mid >= n:
            continue  # stale: s was merged into its left neighbour, or has no right neighbour
        e = end[mid]
        if get(piece[s:e]) != rank:
            continue  # stale: one of the two parts has grown since this entry was pushed
        end[s] = e  # the part at s absorbs its right neighbour
        end[mid] = -1
        if e < n:
            prev[e] = s
            right = get(piece[s : end[e]])
            if right is not None:
                heappush(heap, right * width + s)
        p = prev[s]
        if p >= 0:
            left = get(piece[p:e])
            if left is not None:
                heappush(heap, left * width + p)
    ids = []
    s = 0
    while s < n:
        e = end[s]
        ids.append(ranks[piece[s:e]])
        s = e
    return ids


def merge(piece: bytes, ranks: dict[bytes, int]) -> list[int]:
    """Token ids of one chunk, picking the implementation by length."""
    if len(piece) > LARGE_CHUNK:
        return merge_large(piece, ranks)
    return merge_small(piece, ranks)


# --- The same loop for many chunks at once (an optimisation) -----------------------------------

# Below this many chunks, merge_small's loop beats the fixed cost of the numpy operations.
BATCH_MIN = 100
# Chunk bytes per numpy batch: bounds the temporary arrays (about 60 bytes per chunk byte).
BATCH_BYTES = 1 << 18


class BatchMerger:
    """:func:`merge_small` for many chunks at once: one numpy operation per step, for all of them.

    The byte strings of all chunks are laid end to end in one buffer; a chunk's stretch of it is
    its *segment*. Four arrays describe the current parts of every segment, in order: ``start``
    and ``end`` (the part's bytes are ``buf[start:end]``), ``token`` (its id) and ``pair`` (the
    rank of the part joined with the next part of its segment, or ``none`` when that is not a
    token or there is no next part). This is :func:`split_parts`'s ``parts`` and ``pair_ranks``
    for every chunk side by side. One round then does, for every segment at once:

    1. find the lowest pair rank, leftmost on ties (``min`` and ``index`` in ``split_parts``):
       one ``np.minimum.reduceat`` over ``pair * width + position``, whose minimum per segment
       is the lowest rank and, among equal ranks, the lowest position;
    2. segments whose lowest rank is ``none`` are finished: their tokens are the answer;
    3. every other segment merges its best pair: part ``j`` absorbs part ``j + 1``, takes the
       pair's rank as its id, and the ranks of the two pairs around it are looked up in
       ``ranks`` (by bytes, as in ``split_parts``); part ``j + 1`` is dropped.

    There is one round more than the most merges any one chunk needs (61 rounds for the 23,636
    chunks of Shakespeare that need merging; most of them are done within 10). The first pair
    ranks, of two single bytes each, come from a 65,536-entry table built on first use (a few
    milliseconds).

    ``min_batch`` and ``batch_bytes`` are :data:`BATCH_MIN` and :data:`BATCH_BYTES` unless
    given (the tests shrink them to exercise every path).
    """

    def __init__(
        self,
        ranks: dict[bytes, int],
        min_batch: int = BATCH_MIN,
        batch_bytes: int = BATCH_BYTES,
    ) -> None:
        self.ranks = ranks
        self.min_batch = min_batch
        self.batch_bytes = batch_bytes
        # Built on first use: the rank that means "not a token" (above every rank), the id of
        # each byte, and the rank of each pair of bytes.
        self.none = 0
        self._byte_ids: np.ndarray | None = None
        self._pair_ids: np.ndarray | None = None

    def _build_tables(self) -> None:
        import numpy as np

        ranks = self.ranks
        self.none = max(ranks.values()) + 1
        self._byte_ids = np.array([ranks[bytes([b])] for b in range(256)], dtype=np.int64)
        two = [token for token in ranks if len(token) == 2]
        codes = np.frombuffer(b"".join(two), dtype=np.uint8).reshape(-1, 2).astype(np.int64)
        self._pair_ids = np.full(65536, self.none, dtype=np.int64)  # rank of bytes (a, b)
        self._pair_ids[codes[:, 0] * 256 + codes[:, 1]] = list(map(ranks.__getitem__, two))

    def merge(self, pieces: list[bytes]) -> list[list[int]]:
        """Token ids of each piece: ``[merge_small(p, ranks) for p in pieces]``, faster."""
        out: list[list[int]] = [[] for _ in pieces]
        self.merge_into(pieces, out)
        return out

    def merge_into(self, pieces: list[bytes], targets: list[list[int]]) -> None:
        """Append each piece's ids to the list at the same index in ``targets``."""
        if len(pieces) < self.min_batch:
            for piece, target in zip(pieces, targets, strict=True):
                target += merge_small(piece, self.ranks)
            return
        if not all(pieces):  # an empty piece has no ids: leave it out
            kept = [i for i, piece in enumerate(pieces) if piece]
            pieces = [pieces[i] for i in kept]
            targets = [targets[i] for i in kept]
        if self._pair_ids is None:
            self._build_tables()
        # Batches of about batch_bytes bytes, at least one piece each.
        ends = list(accumulate(map(len, pieces)))
        lo = 0
        while lo < len(pieces):
            limit = (ends[lo - 1] if lo else 0) + self.batch_bytes
            hi = bisect_right(ends, limit, lo + 1)
            self._merge_batch(pieces[lo:hi], targets[lo:hi])
            lo = hi

    def _merge_batch(self, pieces: list[bytes], targets: list[list[int]]) -> None:
        import numpy as np

        get, none = self.ranks.get, self.none
        buf = b"".join(pieces)
        data = np.frombuffer(buf, dtype=np.uint8)
        n = len(data)
        width = n + 1  # position < width, so pair * width + position sorts by rank, then position
        if none * width >= 1 << 62:  # ids too large for int64 keys (no real vocabulary)
            for piece, target in zip(pieces, targets, strict=True):
                target += merge_small(piece, self.ranks)
            return
        sizes = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))  # all > 0
        # The parts of every segment: single bytes to begin with.
        start = np.arange(n)
        end = start + 1
        token = self._byte_ids[data]
        pair = np.empty(n, dtype=np.int64)
        pair[:-1] = self._pair_ids[data[:-1].astype(np.int64) * 256 + data[1:]]
        pair[np.cumsum(sizes) - 1] = none  # the last part of a segment has no right neighbour
        count = sizes  # parts per live segment
        segment = np.arange(len(pieces))  # which piece each live segment is
        finished_segment, finished_count, finished_token = [], [], []
        while len(segment):
            first = np.cumsum(count) - count  # index of each segment's first part
            best = np.minimum.reduceat(pair * width + np.arange(len(pair)), first)
            rank, j = np.divmod(best, width)
            live = rank < none
            keep = np.repeat(live, count)  # parts to keep: those of live segments
            if not live.all():
                done = ~live
                finished_segment.append(segment[done])
                finished_count.append(count[done])
                finished_token.append(token[~keep])
                segment, count, first = segment[live], count[live], first[live]
                rank, j = rank[live], j[live]
                if not len(segment):
                    break
            # Part j absorbs part j + 1 in every live segment.
            token[j] = rank
            end[j] = end[j + 1]
            keep[j + 1] = False
            # Look up the new pair ranks on each side: (j - 1, j) and (j, j + 2).
            left = j[j > first]
            right = j[j + 2 < first + count]
            lo = np.concatenate((start[left - 1], start[right])).tolist()
            hi = np.concatenate((end[left], end[right + 2])).tolist()
            spans = map(buf.__getitem__, map(slice, lo, hi))
            found = np.fromiter(map(get, spans, repeat(none)), dtype=np.int64, count=len(lo))
            pair[j] = none
            pair[left - 1] = found[: len(left)]
            pair[right] = found[len(left) :]
            start, end, token, pair = start[keep], end[keep], token[keep], pair[keep]
            count = count - 1
        # Put the finished segments back in piece order and hand each its ids.
        segments = np.concatenate(finished_segment)
        counts = np.concatenate(finished_count)
        order = np.argsort(np.repeat(segments, counts), kind="stable")  # parts by segment
        ids = np.concatenate(finished_token)[order].tolist()
        per_piece = np.empty(len(pieces), dtype=np.int64)
        per_piece[segments] = counts
        ends = np.cumsum(per_piece).tolist()
        for target, a, b in zip(targets, [0, *ends[:-1]], ends, strict=True):
            target += ids[a:b]
