"""BPE by *pair* rank: the merge loop of a Hugging Face ``BPE`` model (SentencePiece style).

``merge.py`` merges bytes by *token* rank, tiktoken's rule: merge the adjacent pair whose
concatenation has the lowest id. A Hugging Face ``tokenizer.json`` ranks *pairs* instead: its
``merges`` list says that merge number ``r`` turns the adjacent symbols ``(a, b)`` into the token
``a + b``. Encoding a word starts from one symbol per character (or the byte tokens of a
character the vocabulary lacks) and applies, again and again, the adjacent pair with the lowest
merge number, leftmost on ties, until no adjacent pair is in the list. The rank belongs to the
pair, not to the token: ``("ab", "c")`` and ``("a", "bc")`` may both make ``"abc"``, at
different ranks.

Symbols are token ids, and the table is ``(left id, right id) -> (rank, merged id)``. Two
implementations, one result (the tests check it):

- :func:`merge_pairs_small` keeps the ids and a parallel list of pair ranks, and after each
  merge recomputes only the two pairs next to it. Quadratic, and the fastest for words.
- :func:`merge_pairs_large` keeps a linked list and a heap of ``(rank, position)`` candidates:
  O(n log n), for long runs such as a paragraph of Chinese, which has no spaces to split at.
  A popped candidate whose pair has changed since it was pushed is skipped.

This is the order ``tokenizers``' own ``Word.merge_all`` follows, so the ids are its ids.
"""

from __future__ import annotations

import sys
from heapq import heapify, heappop, heappush

Merges = dict[tuple[int, int], tuple[int, int]]  # (left id, right id) -> (rank, merged id)

# Words with more symbols than this go to the heap version.
LARGE_WORD = 64

_NO_MERGE = (sys.maxsize, -1)


def merge_pairs(ids: list[int], merges: Merges) -> list[int]:
    """The ids of one word after every merge that applies (lowest rank first, leftmost on ties)."""
    if len(ids) > LARGE_WORD:
        return merge_pairs_large(ids, merges)
    return merge_pairs_small(ids, merges)


def merge_pairs_small(ids: list[int], merges: Merges) -> list[int]:
    """:func:`merge_pairs` by a scan for the lowest rank after each merge (quadratic)."""
    ids = list(ids)
    get = merges.get
    # pairs[i] is (rank, merged id) of ids[i], ids[i + 1], or _NO_MERGE
    pairs = [get(pair, _NO_MERGE) for pair in zip(ids, ids[1:], strict=False)]
    while pairs:
        best = min(pairs)
        if best[0] == _NO_MERGE[0]:
            break
        i = pairs.index(best)  # equal entries are the same pair: take the leftmost
        ids[i] = best[1]
        del ids[i + 1]
        del pairs[i]
        if i > 0:
            pairs[i - 1] = get((ids[i - 1], ids[i]), _NO_MERGE)
        if i < len(pairs):
            pairs[i] = get((ids[i], ids[i + 1]), _NO_MERGE)
    return ids


def merge_pairs_large(ids: list[int], merges: Merges) -> list[int]:
    """:func:`merge_pairs` with a heap of candidate pairs over a linked list (O(n log n)).

    Symbol ``i`` keeps its position for good; ``nxt[i]`` / ``prv[i]`` link the living ones and
    ``sym[i]`` is ``None`` once it was merged into its left neighbour. A heap entry
    ``(rank, i)`` proposes merging symbol ``i`` with its right neighbour; ranks are unique per
    pair, so the entry is current exactly when that pair still has that rank.
    """
    n = len(ids)
    sym: list[int | None] = list(ids)
    nxt = list(range(1, n + 1))
    prv = list(range(-1, n - 1))
    heap = []
    for i in range(n - 1):
        rank = merges.get((ids[i], ids[i + 1]), _NO_MERGE)[0]
        if rank != _NO_MERGE[0]:
            heap.append((rank, i))
    heapify(heap)

    def push(i: int) -> None:  # propose the pair (symbol i, its right neighbour)
        j = nxt[i]
        if j < n:
            found = merges.get((sym[i], sym[j]))
            if found is not None:
                heappush(heap, (found[0], i))

    while heap:
        rank, i = heappop(heap)
        j = nxt[i]
        if sym[i] is None or j >= n:
            continue
        found = merges.get((sym[i], sym[j]))
        if found is None or found[0] != rank:
            continue  # stale: one of the two symbols changed since this entry was pushed
        sym[i], sym[j] = found[1], None
        nxt[i] = nxt[j]
        if nxt[j] < n:
            prv[nxt[j]] = i
        if prv[i] >= 0:
            push(prv[i])
        push(i)
    return [s for s in sym if s is not None]
