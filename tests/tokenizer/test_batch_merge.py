"""The numpy batch merge (``merge.BatchMerger``) against the simple loop (``merge_small``).

``BatchMerger`` is an optimisation of ``merge_small``: it must give the same ids for every list
of chunks, whatever their bytes, their number or their order.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from buildlm.tokenizer import Tokenizer
from buildlm.tokenizer.merge import LARGE_CHUNK, BatchMerger, merge_small
from buildlm.tokenizer.patterns import PATTERNS, Splitter

# Pieces (pre-tokenized chunks as bytes) that need many merges, tie between equal pairs, or are
# not UTF-8 at all, plus empty ones.
PIECES = st.lists(
    st.binary(max_size=24)
    | st.text(alphabet="ab e\nthsnio", max_size=40).map(str.encode)  # many merges and ties
    | st.text(alphabet="🤗中é a1", max_size=16).map(str.encode)
    | st.sampled_from([b"", b"a", b" the", b"aaaaaaaaaaaaaaaaaaaa", b"      ", b"1234567890"]),
    max_size=150,
)


BATCH_BYTES = [1, 7, 64, 1 << 18]


@pytest.fixture(scope="session")
def vocabularies(ranks):
    """name -> ranks for the three OpenAI vocabularies."""
    return ranks


@pytest.fixture(scope="session")
def mergers(vocabularies):
    """(name, batch_bytes) -> a merger that uses numpy even for a handful of pieces."""
    return {
        (name, size): BatchMerger(ranks, min_batch=0, batch_bytes=size)
        for name, ranks in vocabularies.items()
        for size in BATCH_BYTES
    }


def _simple(pieces: list[bytes], ranks: dict[bytes, int]) -> list[list[int]]:
    return [merge_small(piece, ranks) for piece in pieces]


@settings(max_examples=150)
@given(PIECES, st.sampled_from(BATCH_BYTES))
def test_batch_merge_equals_simple_merge(vocabularies, mergers, pieces, batch_bytes):
    # Small batch_bytes cut the pieces into many batches (down to one piece each).
    for name, ranks in vocabularies.items():
        assert mergers[name, batch_bytes].merge(pieces) == _simple(pieces, ranks), name


@settings(max_examples=50)
@given(PIECES)
def test_batch_merge_default_thresholds_equal_simple_merge(vocabularies, pieces):
    ranks = vocabularies["gpt2"]
    assert BatchMerger(ranks).merge(pieces) == _simple(pieces, ranks)


def test_merge_into_appends_to_the_targets(vocabularies):
    ranks = vocabularies["gpt2"]
    pieces = [b" tokenization", b"", b"xyzzy"] * 50
    targets = [[7] for _ in pieces]
    BatchMerger(ranks, min_batch=0).merge_into(pieces, targets)
    assert targets == [[7, *merge_small(p, ranks)] for p in pieces]


@pytest.mark.parametrize("corpus", ["shakespeare", "the-verdict"])
def test_batch_merge_on_the_corpora(vocabularies, corpus):
    from buildlm.data.corpora import load_corpus

    text = load_corpus(corpus)
    for name, ranks in vocabularies.items():
        chunks = dict.fromkeys(Splitter(PATTERNS[name]).findall(text))
        pieces = [c.encode() for c in chunks if len(c.encode()) <= LARGE_CHUNK]
        assert BatchMerger(ranks).merge(pieces) == _simple(pieces, ranks), name


# A made-up vocabulary: single bytes in reverse order, and "abc" created twice (ids 257 and
# 259), so encoding must use the lower id; ties between equal pairs abound in "aaaa...".
ODD_MERGES = [(b"a", b"b"), (b"ab", b"c"), (b"b", b"c"), (b"a", b"bc"), (b"a", b"a"), (b"aa", b"aa")]
ODD_BYTES = [bytes([b]) for b in reversed(range(256))]


def odd_ranks() -> dict[bytes, int]:
    """Token bytes -> the lowest id that holds them (the id encoding uses), read from the
    ``Tokenizer`` built with the odd vocabulary."""
    tok = Tokenizer.from_merges(ODD_MERGES, "gpt2", (), byte_tokens=ODD_BYTES)
    return {tok.token_bytes(i): i for i in reversed(range(tok.vocab_size))}


@settings(max_examples=100)
@given(st.lists(st.text(alphabet="abc a\n", max_size=30).map(str.encode), max_size=120))
def test_batch_merge_with_an_odd_vocabulary(pieces):
    ranks = odd_ranks()
    assert ranks[b"abc"] == 257
    assert BatchMerger(ranks, min_batch=0).merge(pieces) == _simple(pieces, ranks)


def test_huge_ids_fall_back_to_the_simple_loop():
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 1 << 61, b"abc": 1 << 40}
    pieces = [b"abc", b"xabcab", b"ab"] * 50
    assert BatchMerger(ranks, min_batch=0).merge(pieces) == _simple(pieces, ranks)
