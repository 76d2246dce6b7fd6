"""The numpy batch merge (``merge.BatchMerger``) against the simple loop (``merge_small``).

``BatchMerger`` is an optimisation of ``merge_small``: it must give the same ids for every list
of chunks, whatever their bytes, their number or their order. Also checked here: the chunk
cache's placeholders (``bpe._ChunkCache``) never leak into results or stay behind after errors.
"""

from __future__ import annotations

import gc
import threading

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
def vocabularies(gpt2, cl100k, o200k):
    """name -> ranks for the three OpenAI vocabularies."""
    return {"gpt2": gpt2._ranks, "cl100k": cl100k._ranks, "o200k": o200k._ranks}


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


def test_merge_into_appends_to_the_targets(gpt2):
    pieces = [b" tokenization", b"", b"xyzzy"] * 50
    targets = [[7] for _ in pieces]
    BatchMerger(gpt2._ranks, min_batch=0).merge_into(pieces, targets)
    assert targets == [[7, *merge_small(p, gpt2._ranks)] for p in pieces]


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


@settings(max_examples=100)
@given(st.lists(st.text(alphabet="abc a\n", max_size=30).map(str.encode), max_size=120))
def test_batch_merge_with_an_odd_vocabulary(pieces):
    tok = Tokenizer.from_merges(ODD_MERGES, "gpt2", (), byte_tokens=ODD_BYTES)
    ranks = tok._ranks
    assert ranks[b"abc"] == 257
    assert BatchMerger(ranks, min_batch=0).merge(pieces) == _simple(pieces, ranks)


def test_huge_ids_fall_back_to_the_simple_loop():
    ranks = {bytes([b]): b for b in range(256)} | {b"ab": 1 << 61, b"abc": 1 << 40}
    pieces = [b"abc", b"xabcab", b"ab"] * 50
    assert BatchMerger(ranks, min_batch=0).merge(pieces) == _simple(pieces, ranks)


def test_custom_pattern_with_empty_chunks():
    # r"\w*" matches the empty string between words: findall yields empty chunks.
    tok = Tokenizer.from_merges(ODD_MERGES, r"\w*|\W", (), byte_tokens=ODD_BYTES)
    text = " ".join(["abcab", "aaaaa", "cab", "b"] * 100)
    chunks = tok._splitter.findall(text)
    assert "" in chunks and len(set(chunks)) >= 4
    expected = [i for chunk in chunks for i in merge_small(chunk.encode(), tok._ranks)]
    tok._cache.merger.min_batch = 0
    assert tok.encode_ordinary(text) == expected


def _fresh(tok: Tokenizer, **kwargs) -> Tokenizer:
    """A copy of ``tok`` with an empty chunk cache."""
    return Tokenizer(tok._vocab, tok.pattern, tok.special_tokens, **kwargs)


def _no_placeholders_left(tok: Tokenizer) -> bool:
    cache = tok._cache
    return not cache.pending and all(cache.values())  # no chunk of these texts has no ids


def test_cold_encode_equals_chunk_by_chunk(gpt2, shakespeare):
    text = shakespeare[:400_000]
    tok = _fresh(gpt2)
    ids = tok.encode_ordinary(text)  # cold: new chunks are merged together
    expected = []
    for chunk in tok._splitter.findall(text):
        piece = chunk.encode()
        expected += [gpt2._ranks[piece]] if piece in gpt2._ranks else merge_small(piece, gpt2._ranks)
    assert ids == expected
    assert tok.encode_ordinary(text) == ids  # warm: from the cache
    assert _no_placeholders_left(tok)


def test_small_cache_with_batches(gpt2, ref_gpt2, shakespeare):
    # The cache clears itself many times during one pass; placeholders must survive that.
    tok = _fresh(gpt2, cache_size=500)
    text = shakespeare[:200_000]
    assert tok.encode_ordinary(text) == ref_gpt2.encode_ordinary(text)
    assert tok.encode_ordinary(text) == ref_gpt2.encode_ordinary(text)


def test_failed_pass_leaves_no_placeholder(gpt2, ref_gpt2, shakespeare):
    tok = _fresh(gpt2)
    # A lone surrogate fails to encode part-way through the pass; encode_ordinary then retries
    # with U+FFFD, as tiktoken does. The first attempt's placeholders must not stay cached.
    text = shakespeare[:20_000] + " \ud83d " + shakespeare[20_000:40_000]
    assert tok.encode_ordinary(text) == ref_gpt2.encode_ordinary(text)
    assert _no_placeholders_left(tok)

    def broken(pieces, targets):
        raise RuntimeError("merge failed")

    tok = _fresh(gpt2)
    tok._cache.merger.merge_into = broken
    with pytest.raises(RuntimeError, match="merge failed"):
        tok.encode_ordinary(shakespeare[:20_000])
    assert _no_placeholders_left(tok)
    del tok._cache.merger.merge_into  # back to the real method
    assert tok.encode_ordinary(shakespeare[:20_000]) == ref_gpt2.encode_ordinary(
        shakespeare[:20_000]
    )


def test_threads_share_one_tokenizer(gpt2, ref_gpt2, shakespeare):
    tok = _fresh(gpt2)
    texts = [shakespeare[i : i + 60_000] for i in range(0, 480_000, 60_000)]
    results: dict[int, list[int]] = {}

    def work(i: int) -> None:
        for _ in range(2):  # cold, then (partly) warm
            results[i] = tok.encode_ordinary(texts[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(texts))] == [ref_gpt2.encode_ordinary(t) for t in texts]
    assert _no_placeholders_left(tok)


def test_garbage_collector_is_left_as_found(gpt2, shakespeare):
    text = shakespeare[:100_000]  # long enough for the pause (see bpe._GC_PAUSE_MIN_CHUNKS)
    tok = _fresh(gpt2)
    assert gc.isenabled()
    tok.encode_ordinary(text)
    assert gc.isenabled()
    gc.disable()
    try:
        _fresh(gpt2).encode_ordinary(text)
        assert not gc.isenabled()
    finally:
        gc.enable()
    tok = _fresh(gpt2)
    tok._cache.merger.merge_into = None  # calling it fails: TypeError
    with pytest.raises(TypeError):
        tok.encode_ordinary(text)
    assert gc.isenabled()
