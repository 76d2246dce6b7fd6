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

Both return ids; :func:`split_parts` exposes the merged byte strings for deriving merge lists.
"""

from __future__ import annotations

import sys
from heapq import heapify, heappop, heappush

# Chunks longer than this (in bytes) go to the O(n log n) heap version.
LARGE_CHUNK = 128

_INF = sys.maxsize
_SINGLE_BYTES = [bytes([b]) for b in range(256)]


def split_parts(piece: bytes, ranks: dict[bytes, int], max_rank: int = _INF) -> list[bytes]:
    """Merge ``piece`` with the lowest-rank-first rule, using only tokens of rank < ``max_rank``.

    Returns the final parts (byte strings). With ``max_rank`` set to a token's own rank this
    recovers the pair that created the token (see ``formats.merges_from_ranks``).
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
